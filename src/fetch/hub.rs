//! `moa pull hf:OWNER/REPO/FILE.gguf[@REVISION]`: one GGUF file from the Hugging Face hub, or from
//! a mirror at `HF_ENDPOINT` (as huggingface_hub reads it), into the models folder, where the local
//! provider finds it as `local/<FILE without .gguf>`.
//!
//! The hub's own API says what to expect: `/api/models/OWNER/REPO/revision/REV?blobs=true` lists
//! the files with their size and, for LFS files (every GGUF), their sha256. The file comes from
//! `/OWNER/REPO/resolve/COMMIT/FILE` (the commit the listing named, so the file and its checksum
//! belong together), is written as a hidden `.partial` file beside its place, resumed with a Range
//! request after a cut connection (here, or by a later `moa pull`), verified, and only then
//! renamed into place. `HF_TOKEN` goes to the endpoint for gated and private repositories; reqwest
//! drops it when the hub redirects to its CDN on another host.
//!
//! Our own code rather than the hf-hub crate: hf-hub keeps files in its own cache layout, checks
//! no sha256, and (0.4) does not resume; what is needed here is two requests on the reqwest client
//! the providers already use.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;

use super::{FetchError, Progress, io, sha256_file};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// A cut connection is resumed this many times within one `moa pull`.
const ATTEMPTS: u32 = 4;

/// What `hf:OWNER/REPO/FILE.gguf[@REVISION]` names.
#[derive(Clone, Debug, PartialEq)]
pub struct HubFile {
    pub repo: String,
    /// The path in the repository (it may have folders).
    pub file: String,
    pub revision: String,
}

impl HubFile {
    pub fn parse(spec: &str) -> Result<HubFile, FetchError> {
        let bad = |why: &str| {
            FetchError::Io(format!(
                "{spec:?}: {why}; give hf:OWNER/REPO/FILE.gguf (optionally @REVISION), e.g. hf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf"
            ))
        };
        let rest = spec
            .strip_prefix("hf:")
            .ok_or_else(|| bad("not a hub file"))?;
        let (path, revision) = match rest.rsplit_once('@') {
            Some((p, r)) if !r.is_empty() && !r.contains('/') => (p, r.to_string()),
            Some(_) => return Err(bad("an empty or odd revision after @")),
            None => (rest, "main".to_string()),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(bad("it needs an owner, a repository and a file"));
        }
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !parts.iter().all(|p| ok(p)) || !ok(&revision) {
            return Err(bad("names take letters, digits, '-', '_' and '.'"));
        }
        if !path.ends_with(".gguf") {
            return Err(bad("the local provider runs .gguf files"));
        }
        Ok(HubFile {
            repo: parts[..2].join("/"),
            file: parts[2..].join("/"),
            revision,
        })
    }

    /// The file's name in the models folder.
    pub fn local_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
        .trim_end_matches('/')
        .to_string()
}

fn client() -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("moa-workbench/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| io("cannot start an HTTP client", e))
}

fn authed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Fetch `f` into `models_dir`; its path. Already there and verified: nothing is downloaded.
pub fn pull(
    f: &HubFile,
    models_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io("cannot start the async runtime", e))?;
    rt.block_on(pull_async(f, models_dir, progress))
}

async fn pull_async(
    f: &HubFile,
    models_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    let base = endpoint();
    let http = client()?;
    let title = format!("{}/{}", f.repo, f.file);
    let url = format!(
        "{base}/api/models/{}/revision/{}?blobs=true",
        f.repo, f.revision
    );
    let resp = authed(http.get(&url))
        .send()
        .await
        .map_err(|e| io(&format!("cannot reach {base}"), e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Io(match status.as_u16() {
            401 | 403 => format!(
                "{base} refused {} ({status}): a gated or private repository needs HF_TOKEN (a read token from your hub settings; accept the model's terms on its page first)",
                f.repo
            ),
            404 => format!(
                "{base} has no repository {} at revision {} (check the name and the revision)",
                f.repo, f.revision
            ),
            _ => format!("{base} answered {status} for {}", f.repo),
        }));
    }
    let info: RepoInfo = resp
        .json()
        .await
        .map_err(|e| io(&format!("{base} sent an unreadable file list"), e))?;
    let Some(sib) = info.siblings.iter().find(|s| s.rfilename == f.file) else {
        let ggufs: Vec<&str> = info
            .siblings
            .iter()
            .map(|s| s.rfilename.as_str())
            .filter(|n| n.ends_with(".gguf"))
            .take(12)
            .collect();
        return Err(FetchError::Io(format!(
            "{} has no file {:?}{}",
            f.repo,
            f.file,
            if ggufs.is_empty() {
                " (and no .gguf file at all)".to_string()
            } else {
                format!("; its GGUF files: {}", ggufs.join(", "))
            }
        )));
    };
    let Some(lfs) = sib.lfs.as_ref() else {
        return Err(FetchError::Io(format!(
            "the hub gives no sha256 for {title} (not an LFS file): moa does not install a model it cannot verify"
        )));
    };
    let expected = lfs.sha256.to_ascii_lowercase();
    let size = sib.size.unwrap_or(lfs.size);
    // The commit the listing describes: the checksum belongs to the file at that commit.
    let rev = info.sha.clone().unwrap_or_else(|| f.revision.clone());

    std::fs::create_dir_all(models_dir)
        .map_err(|e| io(&format!("cannot create {}", models_dir.display()), e))?;
    let target = models_dir.join(f.local_name());
    if target.exists() {
        progress(Progress::Verifying {
            title: title.clone(),
        });
        if sha256_file(&target).is_ok_and(|h| h == expected) {
            progress(Progress::AlreadyThere {
                title,
                path: target.clone(),
            });
            return Ok(target);
        }
        return Err(FetchError::Io(format!(
            "{} exists and is not {title} at {rev}: move it away, then pull again",
            target.display()
        )));
    }
    let partial = models_dir.join(format!(".{}.partial", f.local_name()));
    let url = format!("{base}/{}/resolve/{rev}/{}", f.repo, f.file);
    let mut last_err = String::new();
    for _ in 0..ATTEMPTS {
        match download(&http, &url, &partial, size, &title, progress).await {
            Ok(()) => {
                last_err.clear();
                break;
            }
            // A cut connection: the next request resumes where this one stopped.
            Err(Cut(e)) => last_err = e,
            Err(Fatal(e)) => return Err(e),
        }
    }
    if !last_err.is_empty() {
        return Err(FetchError::Io(format!(
            "the download of {title} kept failing ({last_err}); what arrived is kept in {}: run the same `moa pull` to resume",
            partial.display()
        )));
    }
    progress(Progress::Verifying {
        title: title.clone(),
    });
    let got = sha256_file(&partial).map_err(|e| io("cannot read the download", e))?;
    if got != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::Checksum {
            title,
            expected,
            got,
        });
    }
    std::fs::rename(&partial, &target).map_err(|e| {
        io(
            &format!("cannot move the download to {}", target.display()),
            e,
        )
    })?;
    progress(Progress::Installed {
        title,
        path: target.clone(),
    });
    Ok(target)
}

enum Failure {
    /// The transfer stopped: worth resuming.
    Cut(String),
    Fatal(FetchError),
}
use Failure::{Cut, Fatal};

/// Append what is missing of the file to `partial` (all of it when the server ignores the
/// Range header).
async fn download(
    http: &reqwest::Client,
    url: &str,
    partial: &Path,
    size: u64,
    title: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), Failure> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have == size {
        return Ok(());
    }
    let mut req = authed(http.get(url));
    if have > 0 && have < size {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| Cut(e.to_string()))?;
    let status = resp.status();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .map_err(|e| Fatal(io(&format!("cannot write {}", partial.display()), e)))?;
    let mut done = match status.as_u16() {
        206 => have,
        200 => {
            // The whole file again: start over.
            file.set_len(0)
                .and_then(|_| file.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
                .map_err(|e| Fatal(io("cannot restart the download", e)))?;
            0
        }
        416 => {
            // What we have is longer than the file: it is not this file.
            let _ = std::fs::remove_file(partial);
            return Err(Cut(
                "the partial download did not match; starting over".into()
            ));
        }
        401 | 403 => {
            return Err(Fatal(FetchError::Io(format!(
                "the hub refused {title} ({status}): a gated or private repository needs HF_TOKEN"
            ))));
        }
        s if s >= 500 || s == 429 => return Err(Cut(format!("the hub answered {status}"))),
        _ => {
            return Err(Fatal(FetchError::Io(format!(
                "the hub answered {status} for {title}"
            ))));
        }
    };
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Cut(e.to_string()))?;
        if done + chunk.len() as u64 > size {
            let _ = std::fs::remove_file(partial);
            return Err(Fatal(FetchError::Io(format!(
                "the hub sent more than the {size} bytes it listed for {title}; nothing was installed"
            ))));
        }
        file.write_all(&chunk)
            .map_err(|e| Fatal(io(&format!("cannot write {}", partial.display()), e)))?;
        done += chunk.len() as u64;
        progress(Progress::Downloading {
            package: title.to_string(),
            done,
            total: size,
        });
    }
    file.flush()
        .and_then(|_| file.sync_all())
        .map_err(|e| Fatal(io(&format!("cannot write {}", partial.display()), e)))?;
    if done < size {
        return Err(Cut(format!(
            "the connection closed at {done} of {size} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_parsed_and_odd_ones_refused() {
        let f =
            HubFile::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf")
                .unwrap();
        assert_eq!(f.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
        assert_eq!(f.file, "qwen2.5-0.5b-instruct-q4_k_m.gguf");
        assert_eq!(f.revision, "main");
        let f = HubFile::parse("hf:o/r/sub/m.gguf@v1.0").unwrap();
        assert_eq!(
            (f.file.as_str(), f.revision.as_str()),
            ("sub/m.gguf", "v1.0")
        );
        assert_eq!(f.local_name(), "m.gguf");
        for bad in [
            "o/r/m.gguf",
            "hf:o/m.gguf",
            "hf:o/r/m.bin",
            "hf:o/../m.gguf",
            "hf:o/r/x y.gguf",
            "hf:o/r/m.gguf@",
            "hf:o//m.gguf",
        ] {
            assert!(HubFile::parse(bad).is_err(), "{bad}");
        }
    }
}
