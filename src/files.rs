//! Private, atomic files: what moa writes holds prompts and answers, so folders it creates are 0700
//! and files 0600, replaced through a temporary file with a random name created exclusively, then
//! renamed (readers see the old or the new content, never a mix). Sessions, evaluation and tuning
//! results and the call cache all write through here.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Temporary files of ours older than this are left over from a killed process.
const STALE_TEMP: Duration = Duration::from_secs(3600);

pub(crate) fn private_options() -> fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Create `dir` and its missing parents as 0700 (folders moa creates hold private prompts);
/// folders that exist are left as they are.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Open a file for appending, created 0600 if missing (results moa appends to hold prompts).
pub fn open_private_append(path: &Path) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    private_options().create(true).append(true).open(path)
}

/// Whether a file name is one of our temporary files (`.NAME.PID.RANDOM.tmp`).
fn is_our_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5
}

/// Remove temporary files of ours in `dir` older than an hour: what a `kill -9` between creating
/// one and renaming it left. Returns how many went. Younger ones may belong to a live writer.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_our_temp(name) {
            continue;
        }
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if meta.is_file() && old && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Write `bytes` to `path` so that readers see the old or the new content, never a mix: a temporary
/// file in the same folder, fsync, rename over the target, fsync of the folder (so the rename itself
/// survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

/// `write_atomic`, with the fsyncs only when `durable`. Without them a process crash or `kill -9`
/// still leaves the old or the new file (the rename is atomic and the page cache survives the
/// process); only a power cut could lose the write. Snapshots taken while a run streams use this:
/// two fsyncs per snapshot were most of the cost of saving (`benches/overhead -- --save 1`).
///
/// The file is 0600 (what moa writes holds prompts), or narrower when the file it replaces was:
/// replacing never widens who can read it. The temporary name is random and created exclusively,
/// so nobody can prepare it (a symbolic link there would otherwise be written through).
pub fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    // A bare file name's parent is "", which no call takes: it means the current folder.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        match private_options().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(old) = fs::symlink_metadata(path) {
                let mode = old.permissions().mode() & 0o600;
                if mode != 0o600 {
                    f.set_permissions(fs::Permissions::from_mode(mode))?;
                }
            }
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if durable {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A file appended one line at a time (results moa writes as it goes) must end in a newline before
/// anything is appended: one that does not ends in a line a crash cut off, and the next line would
/// be joined onto it (both then unreadable). Drops that line and returns how many bytes it had;
/// None when there was nothing to drop (or no file).
pub fn drop_cut_last_line(path: &Path) -> std::io::Result<Option<u64>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    f.sync_all()?;
    Ok(Some((bytes.len() - keep) as u64))
}
