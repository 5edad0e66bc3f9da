//! The session folder: one JSON file per session, written atomically (temporary file, fsync, rename,
//! fsync of the folder), so that a crash or `kill -9` at any moment leaves either the old file or the
//! new one, never half of one. Damaged or newer files are reported and skipped, never fatal.
//!
//! Session files are shared and copied between machines, so nothing in one is trusted as a path:
//! an id is checked when the file is read, and a loaded session is written back to (or deleted
//! from) the file it came from. Two processes may hold one session at once (the workbench open on
//! it for hours while `moa sessions rename` or `moa run --session` runs): a save merges with what
//! is on disk (runs and verdicts by id, the newest rename) under a lock held only for that moment.
//! What is written holds private prompts: folders are 0700 and files 0600.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{SESSION_SCHEMA, SESSION_VERSION, Session};
use crate::files::private_options;
pub use crate::files::{
    create_private_dir, open_private_append, remove_stale_temps, write_atomic, write_replacing,
};

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
    #[error("{path}: not a regular file ({what}); it is skipped")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("{0}")]
    NotFound(String),
}

/// Held while a session is read, merged and replaced; never while a run goes on.
const LOCK_FILE: &str = ".lock";

/// Whether `id` can name a file in the session folder: letters, digits, `-`, `_` and `.`, not
/// starting with a dot, no `..`, at most 128 characters. Anything else in a file's `id` marks it
/// damaged (a shared file with `../../x` as its id must not make `rm` delete `x`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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

    /// Where a new session with this (valid) id is written. A session read from disk is written
    /// back where it came from: use `path_of`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The file `s` was read from, else the one its id names in this store.
    pub fn path_of(&self, s: &Session) -> PathBuf {
        s.file.clone().unwrap_or_else(|| self.path(&s.id))
    }

    /// Write `s` durably, merged with what another process may have written to its file since it
    /// was read.
    pub fn save(&self, s: &Session) -> Result<(), StoreError> {
        let path = self.path_of(s);
        save_merging(&path, s, true)
    }

    pub fn load_path(path: &Path) -> Result<Session, StoreError> {
        let bytes = read_regular(path)?;
        let mut s = parse(path, &bytes)?;
        s.file = Some(path.to_path_buf());
        Ok(s)
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
        remove_stale_temps(&self.dir);
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            // The entry's own type (a symbolic link is not followed): a FIFO would block the
            // read forever, a link could point anywhere.
            match entry.file_type() {
                Ok(t) if t.is_file() => {}
                Ok(t) => {
                    bad.push(StoreError::NotAFile {
                        path,
                        what: kind_of(&t),
                    });
                    continue;
                }
                Err(_) => continue,
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
        if valid_id(key) {
            let exact = self.path(key);
            if fs::symlink_metadata(&exact).is_ok_and(|m| m.is_file()) {
                return Store::load_path(&exact);
            }
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

    /// Delete the file `s` was read from (a copy's own file, never the original its id names).
    pub fn remove(&self, s: &Session) -> Result<(), StoreError> {
        let p = self.path_of(s);
        fs::remove_file(&p).map_err(|e| StoreError::Io {
            path: p,
            message: format!("cannot delete: {e}"),
        })
    }
}

fn kind_of(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a file"
    }
}

/// Read a file only if it is a regular one: opened without blocking (a FIFO would wait for a
/// writer forever) and without following a final symbolic link, then checked.
fn read_regular(path: &Path) -> Result<Vec<u8>, StoreError> {
    let io = |e: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    };
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::NotAFile {
                path: path.to_path_buf(),
                what: "a symbolic link",
            });
        }
        Err(e) => return Err(io(e)),
    };
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(StoreError::NotAFile {
            path: path.to_path_buf(),
            what: kind_of(&meta.file_type()),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
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
    let s: Session =
        serde_json::from_value(value).map_err(|e| damaged(format!("unexpected content: {e}")))?;
    if !valid_id(&s.id) {
        return Err(damaged(format!(
            "its id {:?} is not a valid session id (letters, digits, '-', '_', '.'; no '..')",
            s.id.chars().take(80).collect::<String>()
        )));
    }
    Ok(s)
}

/// Write a session's serialized bytes to `path` as `save_merging` does: the drop-in for a writer
/// that serializes on one thread and writes on another (the recorder's).
pub fn write_session(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let s: Session = serde_json::from_slice(bytes).map_err(std::io::Error::other)?;
    save_merging(path, &s, durable).map_err(std::io::Error::other)
}

/// Write `s` to `path`, keeping what another process wrote there since `s` was read: under the
/// folder's lock, the file is read again and merged (`merge`), then replaced.
///
/// Why merge rather than hold a lock for as long as a session is open: the workbench keeps one
/// open for hours, and a `moa sessions rename` meanwhile must neither wait nor be lost. The lock
/// is held only while reading, merging and renaming (milliseconds), so two merges never miss
/// each other.
pub fn save_merging(path: &Path, s: &Session, durable: bool) -> Result<(), StoreError> {
    let io = |message: String| StoreError::Io {
        path: path.to_path_buf(),
        message,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| io(format!("cannot create the folder: {e}")))?;
    let _lock = DirLock::acquire(dir).map_err(|e| io(format!("cannot lock the folder: {e}")))?;
    let merged = match read_regular(path).and_then(|b| parse(path, &b)) {
        Ok(disk) if disk.id == s.id => Some(merge(disk, s)),
        // Overwriting what a newer moa wrote would lose what this one cannot read.
        Err(e @ StoreError::Newer { .. }) => return Err(e),
        _ => None,
    };
    let bytes = serde_json::to_vec_pretty(merged.as_ref().unwrap_or(s))
        .map_err(|e| io(format!("cannot serialize the session: {e}")))?;
    write_replacing(path, &bytes, durable).map_err(|e| io(format!("cannot save the session: {e}")))
}

/// `disk` (written by someone else since `mine` was read) and `mine`, together: every run of
/// either (by run id; `mine`'s copy of a run both have, with the verdicts of both), the name of the
/// latest rename, the longer conversation when one continues the other (else `mine`'s), and a run
/// under way in either.
pub fn merge(disk: Session, mine: &Session) -> Session {
    let mut out = mine.clone();
    let mut runs = disk.runs;
    for r in &mine.runs {
        match runs.iter_mut().find(|d| d.record.id == r.record.id) {
            Some(d) => {
                // Verdicts are added by whoever judged (`moa sessions judge`, the workbench):
                // both sides' are kept.
                let theirs = std::mem::take(&mut d.judgements);
                let their_pairs = std::mem::take(&mut d.pair_judgements);
                *d = r.clone();
                for j in theirs {
                    if !d.judgements.contains(&j) {
                        d.judgements.push(j);
                    }
                }
                for j in their_pairs {
                    if !d.pair_judgements.contains(&j) {
                        d.pair_judgements.push(j);
                    }
                }
            }
            None => runs.push(r.clone()),
        }
    }
    out.runs = runs;
    if disk.renamed > mine.renamed {
        out.name = disk.name;
        out.renamed = disk.renamed;
    }
    if disk.messages.len() > mine.messages.len() && disk.messages.starts_with(&mine.messages) {
        out.messages = disk.messages;
    }
    if out.in_progress.is_none()
        && let Some(p) = disk.in_progress
        && !p.record.id.is_empty()
        && !out.runs.iter().any(|r| r.record.id == p.record.id)
    {
        out.in_progress = Some(p);
    }
    out.updated = out.updated.max(disk.updated);
    out.created = disk.created;
    out
}

/// An advisory lock (flock) on the folder's lock file, released when dropped.
struct DirLock {
    _file: fs::File,
}

impl DirLock {
    fn acquire(dir: &Path) -> std::io::Result<DirLock> {
        let file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        #[cfg(unix)]
        crate::sys::flock_exclusive(&file)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;
    use std::time::Duration;

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
        st.remove(&a).unwrap();
        assert_eq!(st.list().0.len(), 1);
        // No temporary files are left behind (the lock file stays: it is empty and reused).
        let names: Vec<_> = fs::read_dir(&st.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != LOCK_FILE)
            .collect();
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

    fn session(prompt: &str) -> Session {
        Session::new(&[Message::user(prompt)])
    }

    fn run(id: &str) -> super::super::SessionRun {
        use crate::engine::preset::{AgentSpec, Preset};
        use crate::engine::record::{RUN_SCHEMA, RunRecord, Usage};
        super::super::SessionRun {
            preset: Preset::single("p", AgentSpec::model("fake/a")),
            record: RunRecord {
                schema: RUN_SCHEMA.into(),
                id: id.into(),
                created: "2026-01-01T00:00:00Z".into(),
                preset: "p".into(),
                messages: vec![Message::user("Q")],
                steps: Vec::new(),
                final_answer: None,
                baseline: None,
                wall_ms: 0,
                usage: Usage::default(),
                cancelled: false,
            },
            kind: super::super::RunKind::Run,
            given_responses: Vec::new(),
            judgements: Vec::new(),
            parent: None,
            attribution: None,
            pair_judgements: Vec::new(),
            leave_one_out: Vec::new(),
            timeline: None,
        }
    }

    #[test]
    fn ids_that_are_paths_mark_a_file_damaged() {
        let (d, st) = store();
        let outside = d.path().join("precious.json");
        fs::write(&outside, b"keep me").unwrap();
        let mut evil = session("shared with me");
        evil.id = "../precious".into();
        fs::create_dir_all(&st.dir).unwrap();
        fs::write(
            st.dir.join("shared.json"),
            serde_json::to_vec(&evil).unwrap(),
        )
        .unwrap();
        let (list, bad) = st.list();
        assert!(list.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].to_string().contains("not a valid session id"),
            "{}",
            bad[0]
        );
        assert!(st.resolve("shared").is_err());
        assert!(st.resolve("../precious").is_err());
        for id in ["", ".", "..", "a/b", "a\\b", "x..y", ".hidden", "a b", "ü"] {
            assert!(!valid_id(id), "{id:?}");
        }
        assert!(valid_id("20260101-000000-alpha-x1y2z3"));
        assert_eq!(fs::read(&outside).unwrap(), b"keep me");
    }

    #[test]
    fn a_copied_session_is_saved_and_removed_as_its_own_file() {
        let (_d, st) = store();
        let mut orig = session("original");
        orig.id = "20260101-000000-original".into();
        st.save(&orig).unwrap();
        let copy_path = st.dir.join("copy.json");
        fs::copy(st.path(&orig.id), &copy_path).unwrap();
        let mut copy = Store::load_path(&copy_path).unwrap();
        copy.rename("the copy");
        st.save(&copy).unwrap();
        assert_eq!(
            Store::load_path(&st.path(&orig.id)).unwrap().name,
            "original"
        );
        assert_eq!(Store::load_path(&copy_path).unwrap().name, "the copy");
        st.remove(&copy).unwrap();
        assert!(!copy_path.exists());
        assert!(st.path(&orig.id).exists(), "the original is still there");
    }

    #[test]
    fn two_writers_of_one_session_keep_each_others_changes() {
        let (_d, st) = store();
        let mut s = session("shared");
        s.runs.push(run("r1"));
        st.save(&s).unwrap();
        let path = st.path_of(&s);
        // The workbench holds the session open; a CLI renames it and judges a run meanwhile.
        let mut workbench = Store::load_path(&path).unwrap();
        let mut cli = Store::load_path(&path).unwrap();
        cli.rename("renamed by the CLI");
        cli.runs[0].judgements.push(super::super::judge::Judgement {
            judge_model: "fake/j".into(),
            created: "2026-01-01T00:00:01Z".into(),
            outcome: super::super::judge::Outcome::Win,
            inconsistent: false,
            orders: Vec::new(),
        });
        cli.runs.push(run("r-cli"));
        st.save(&cli).unwrap();
        workbench.runs.push(run("r-workbench"));
        st.save(&workbench).unwrap();
        // The recorder's path: serialized bytes written on its own thread.
        workbench.runs.push(run("r-snapshot"));
        write_session(&path, &serde_json::to_vec(&workbench).unwrap(), false).unwrap();
        let on_disk = Store::load_path(&path).unwrap();
        assert_eq!(on_disk.name, "renamed by the CLI");
        let ids: Vec<&str> = on_disk.runs.iter().map(|r| r.record.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r-cli", "r-workbench", "r-snapshot"]);
        assert_eq!(on_disk.runs[0].judgements.len(), 1, "the verdict is kept");
    }

    #[test]
    fn concurrent_savers_lose_no_run() {
        let (_d, st) = store();
        let s = session("busy");
        st.save(&s).unwrap();
        let path = st.path_of(&s);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (st, path) = (st.clone(), path.clone());
                std::thread::spawn(move || {
                    for k in 0..5 {
                        let mut mine = Store::load_path(&path).unwrap();
                        mine.runs.push(run(&format!("t{i}-{k}")));
                        st.save(&mine).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(Store::load_path(&path).unwrap().runs.len(), 40);
    }

    #[cfg(unix)]
    #[test]
    fn what_is_written_is_private_and_replacing_never_widens() {
        use std::os::unix::fs::PermissionsExt;
        let (d, st) = store();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let s = session("private prompt");
        st.save(&s).unwrap();
        assert_eq!(mode(&st.dir), 0o700);
        assert_eq!(mode(&st.path_of(&s)), 0o600);
        fs::set_permissions(st.path_of(&s), fs::Permissions::from_mode(0o400)).unwrap();
        st.save(&s).unwrap();
        assert_eq!(
            mode(&st.path_of(&s)),
            0o400,
            "replacing keeps a narrower mode"
        );
        let old = d.path().join("old.json");
        fs::write(&old, b"{}").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&old, b"new").unwrap();
        assert_eq!(mode(&old), 0o600);
        let log = d.path().join("new/results.jsonl");
        open_private_append(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(&d.path().join("new")), 0o700);
    }

    #[test]
    fn stale_temporary_files_are_removed_when_listing() {
        let (_d, st) = store();
        st.save(&session("x")).unwrap();
        let stale = st.dir.join(".x.json.123.tmp");
        let fresh = st.dir.join(".y.json.456.abcd.tmp");
        fs::write(&stale, b"half").unwrap();
        fs::write(&fresh, b"being written").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let (list, bad) = st.list();
        assert_eq!((list.len(), bad.len()), (1, 0));
        assert!(!stale.exists());
        assert!(fresh.exists(), "a young one may be a live writer's");
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_links_are_skipped_without_blocking() {
        let (d, st) = store();
        st.save(&session("real")).unwrap();
        let fifo = st.dir.join("x.json");
        crate::sys::mkfifo(&fifo).unwrap();
        let elsewhere = d.path().join("elsewhere.json");
        fs::copy(st.path_of(&st.resolve("real").unwrap()), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, st.dir.join("link.json")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let st2 = st.clone();
        std::thread::spawn(move || {
            let _ = tx.send(st2.list());
        });
        let (list, bad) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listing does not hang on a FIFO");
        assert_eq!(list.len(), 1);
        let msgs: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("x.json") && m.contains("FIFO")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("link.json") && m.contains("link")),
            "{msgs:?}"
        );
        assert!(matches!(
            Store::load_path(&fifo),
            Err(StoreError::NotAFile { .. })
        ));
        assert!(matches!(
            Store::load_path(&st.dir.join("link.json")),
            Err(StoreError::NotAFile { .. })
        ));
    }
}
