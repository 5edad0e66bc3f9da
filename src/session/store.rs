//! The session folder: one JSON file per session, written atomically (temporary file, fsync, rename,
//! fsync of the folder), so that a crash or `kill -9` at any moment leaves either the old file or the
//! new one, never half of one. Damaged or newer files are reported and skipped, never fatal.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{SESSION_SCHEMA, SESSION_VERSION, Session};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: damaged session file ({message}); it is skipped (move or delete it)")]
    Damaged { path: PathBuf, message: String },
    #[error(
        "{path}: written by a newer moa (schema {schema}; this one reads {SESSION_SCHEMA}); upgrade moa to read it"
    )]
    Newer { path: PathBuf, schema: String },
    #[error("{0}")]
    NotFound(String),
}

/// One line of `moa sessions list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub id: String,
    pub name: String,
    pub created: String,
    pub updated: String,
    pub runs: usize,
    pub turns: usize,
    pub preset: Option<String>,
    /// A run was under way when the file was last written (the process died or is still running).
    pub interrupted: bool,
    pub path: PathBuf,
}

impl Summary {
    fn of(s: &Session, path: PathBuf) -> Summary {
        Summary {
            id: s.id.clone(),
            name: s.name.clone(),
            created: s.created.clone(),
            updated: s.updated.clone(),
            runs: s.runs.len(),
            turns: s
                .messages
                .iter()
                .filter(|m| m.role == crate::provider::Role::User)
                .count(),
            preset: s
                .runs
                .last()
                .or(s.in_progress.as_ref())
                .map(|r| r.preset.name.clone()),
            interrupted: s.in_progress.is_some(),
            path,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, s: &Session) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(s).expect("a session serializes");
        write_atomic(&self.path(&s.id), &bytes).map_err(|e| StoreError::Io {
            path: self.path(&s.id),
            message: format!("cannot save the session: {e}"),
        })
    }

    pub fn load_path(path: &Path) -> Result<Session, StoreError> {
        let bytes = fs::read(path).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        parse(path, &bytes)
    }

    /// Every session, newest first, and the files that could not be read (with why).
    pub fn list(&self) -> (Vec<Summary>, Vec<StoreError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (ok, bad),
            Err(e) => {
                bad.push(StoreError::Io {
                    path: self.dir.clone(),
                    message: format!("cannot list sessions: {e}"),
                });
                return (ok, bad);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match Store::load_path(&path) {
                Ok(s) => ok.push(Summary::of(&s, path)),
                Err(e) => bad.push(e),
            }
        }
        ok.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
        (ok, bad)
    }

    /// Find a session by id, by a unique id prefix, or by a unique (case-insensitive) name part.
    pub fn resolve(&self, key: &str) -> Result<Session, StoreError> {
        let exact = self.path(key);
        if exact.exists() {
            return Store::load_path(&exact);
        }
        let (all, _) = self.list();
        let lower = key.to_lowercase();
        let mut hits: Vec<&Summary> = all.iter().filter(|s| s.id.starts_with(key)).collect();
        if hits.is_empty() {
            hits = all
                .iter()
                .filter(|s| s.name.to_lowercase().contains(&lower))
                .collect();
        }
        match hits.as_slice() {
            [one] => Store::load_path(&one.path),
            [] => Err(StoreError::NotFound(format!(
                "no session matches {key:?} in {} (see `moa sessions list`)",
                self.dir.display()
            ))),
            many => Err(StoreError::NotFound(format!(
                "{key:?} matches {} sessions ({}); give more of the id",
                many.len(),
                many.iter()
                    .take(5)
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let p = self.path(id);
        fs::remove_file(&p).map_err(|e| StoreError::Io {
            path: p,
            message: format!("cannot delete: {e}"),
        })
    }
}

/// Read a session file, telling damaged files from ones a newer moa wrote.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Session, StoreError> {
    let damaged = |message: String| StoreError::Damaged {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        damaged(if e.is_eof() {
            format!("truncated at line {}", e.line())
        } else {
            format!("not JSON: {e}")
        })
    })?;
    let schema = value
        .get("schema")
        .and_then(|s| s.as_str())
        .ok_or_else(|| damaged("no \"schema\" field; not a moa session".into()))?;
    let version = schema
        .strip_prefix("moa.session/")
        .ok_or_else(|| damaged(format!("schema {schema:?} is not a moa session")))?;
    match version.parse::<u32>() {
        Ok(v) if v == SESSION_VERSION => {}
        Ok(v) if v > SESSION_VERSION => {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                schema: schema.to_string(),
            });
        }
        _ => return Err(damaged(format!("unknown schema {schema:?}"))),
    }
    serde_json::from_value(value).map_err(|e| damaged(format!("unexpected content: {e}")))
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
pub fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path().join("sessions"));
        (d, s)
    }

    #[test]
    fn saves_lists_and_resolves() {
        let (_d, st) = store();
        let mut a = Session::new(&[Message::user("Alpha question")]);
        a.id = "20260101-000000-alpha".into();
        let mut b = Session::new(&[Message::user("Beta question")]);
        b.id = "20260102-000000-beta".into();
        b.updated = "2099-01-01T00:00:00Z".into();
        st.save(&a).unwrap();
        st.save(&b).unwrap();
        let (list, bad) = st.list();
        assert!(bad.is_empty());
        assert_eq!(
            list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["20260102-000000-beta", "20260101-000000-alpha"]
        );
        assert_eq!(st.resolve("20260101").unwrap().id, a.id);
        assert_eq!(st.resolve("beta QUEST").unwrap().id, b.id);
        let err = st.resolve("2026").unwrap_err().to_string();
        assert!(err.contains("matches 2 sessions"), "{err}");
        assert!(st.resolve("nothing").is_err());
        st.remove(&a.id).unwrap();
        assert_eq!(st.list().0.len(), 1);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&st.dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn damaged_and_newer_files_are_reported_and_skipped() {
        let (_d, st) = store();
        let good = Session::new(&[Message::user("fine")]);
        st.save(&good).unwrap();
        let full = fs::read(st.path(&good.id)).unwrap();
        fs::write(st.dir.join("truncated.json"), &full[..full.len() / 2]).unwrap();
        fs::write(st.dir.join("junk.json"), b"\x00\x01not json").unwrap();
        fs::write(st.dir.join("other.json"), br#"{"hello": 1}"#).unwrap();
        let newer = String::from_utf8(full.clone())
            .unwrap()
            .replace("moa.session/1", "moa.session/7");
        fs::write(st.dir.join("newer.json"), newer).unwrap();
        fs::write(st.dir.join("notes.txt"), b"ignored").unwrap();
        let (list, bad) = st.list();
        assert_eq!(list.len(), 1);
        let msgs: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.contains("truncated.json") && m.contains("truncated"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("junk.json") && m.contains("not JSON"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("other.json") && m.contains("schema"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("newer.json") && m.contains("newer moa"))
        );
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
