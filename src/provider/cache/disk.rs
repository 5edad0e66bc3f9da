//! The call cache's disk store: one JSON file per answer under `<dir>/<2 hex>/<key>.json`,
//! written privately and atomically (`files`), the folder bounded in size (past its bound the
//! least recently used answers go; a hit touches its file). Semantic indexes sit beside it, one
//! append-only file per family in `<dir>/../semantic/`, each bounded to `semantic::PER_FAMILY`
//! entries.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StoreError;
use super::semantic;

pub struct DiskStore {
    dir: PathBuf,
    index_dir: PathBuf,
    max_bytes: u64,
    /// Bytes in the folder, counted at first write and kept up to date by this process (another
    /// process writing beside it is caught at the next start).
    bytes: Mutex<Option<u64>>,
}

impl DiskStore {
    pub fn new(dir: PathBuf, max_bytes: u64) -> DiskStore {
        let index_dir = dir.with_file_name("semantic");
        DiskStore {
            dir,
            index_dir,
            max_bytes,
            bytes: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(key.get(..2).unwrap_or("__"))
            .join(format!("{key}.json"))
    }

    /// A missing or unreadable file is a miss, not an error: the folder is ours to lose.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)).ok()
    }

    /// Recently used: eviction goes by modification time.
    pub fn touch(&self, key: &str) {
        if let Ok(f) = std::fs::File::options().append(true).open(self.path(key)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    pub fn remove(&self, key: &str) {
        let p = self.path(key);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(&p).is_ok() {
            let mut total = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = total.as_mut() {
                *t = t.saturating_sub(len);
            }
        }
    }

    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let p = self.path(key);
        let old = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        crate::files::write_replacing(&p, bytes, false)
            .map_err(|e| StoreError(format!("cannot write {}: {e}", p.display())))?;
        let mut total = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let now = (total.unwrap_or_else(|| folder_bytes(&self.dir)) + bytes.len() as u64)
            .saturating_sub(old.min(bytes.len() as u64));
        *total = Some(if now > self.max_bytes {
            evict(&self.dir, self.max_bytes * 9 / 10)
        } else {
            now
        });
        Ok(())
    }

    fn index_path(&self, family: &str) -> PathBuf {
        self.index_dir.join(format!("{family}.idx"))
    }

    /// The family's index entries (see `semantic::entry`), oldest first; empty when there is none.
    pub fn index(&self, family: &str) -> Vec<u8> {
        std::fs::read(self.index_path(family)).unwrap_or_default()
    }

    /// Append one entry; past twice the bound, keep the newest `PER_FAMILY`. Appends of one entry
    /// are single writes, so concurrent moa processes do not interleave; a rewrite racing another
    /// process's append may lose that entry, which costs only a semantic hit.
    pub fn index_add(&self, family: &str, entry: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let p = self.index_path(family);
        let failed = |e: std::io::Error| StoreError(format!("cannot write {}: {e}", p.display()));
        let mut f = crate::files::open_private_append(&p).map_err(failed)?;
        f.write_all(entry).map_err(failed)?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 2 * semantic::PER_FAMILY as u64 * entry.len() as u64 {
            let all = self.index(family);
            let kept = semantic::newest(&all, semantic::PER_FAMILY);
            crate::files::write_replacing(&p, kept, false).map_err(failed)?;
        }
        Ok(())
    }
}

fn entries(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in top.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            if let Ok(m) = f.metadata()
                && m.is_file()
            {
                out.push((
                    f.path(),
                    m.len(),
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                ));
            }
        }
    }
    out
}

pub(super) fn folder_bytes(dir: &Path) -> u64 {
    entries(dir).iter().map(|e| e.1).sum()
}

/// Remove the least recently used files until at most `keep` bytes remain; the bytes left.
fn evict(dir: &Path, keep: u64) -> u64 {
    let mut files = entries(dir);
    files.sort_by_key(|e| e.2);
    let mut total: u64 = files.iter().map(|e| e.1).sum();
    for (p, len, _) in files {
        if total <= keep {
            break;
        }
        if std::fs::remove_file(&p).is_ok() {
            total -= len;
        }
    }
    total
}
