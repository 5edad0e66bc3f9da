//! Keeps a session file up to date while runs happen: the session is written a second into a run,
//! then at most once a second while steps end, calls finish and answers stream, and when it ends.
//! (Writing at every finished call cost 36 ms of CPU in a 19-call run: `benches/overhead`.)
//! If the process dies, the file holds the conversation, every finished run, and the run under way
//! with every finished call and the text the others had streamed.
//!
//! Writes happen on a background thread (a slow disk never stalls the TUI); they are coalesced, so
//! only the newest state is written when they pile up, and `flush` waits for the last one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::store::{Store, write_session};
use super::timeline::TimelineRecorder;
use super::{RunKind, Session, SessionRun};
use crate::engine::events::{RunEvent, Stage};
use crate::engine::preset::Preset;
use crate::engine::record::{CallRecord, CallStatus, RUN_SCHEMA, RunRecord, StepRecord, Usage};
use crate::provider::Message;

/// What the writer did with one write of a session file: the front end says "saved" only on `Ok`,
/// and shows the path and the reason otherwise.
#[derive(Clone, Debug)]
pub struct SaveReport {
    pub session: String,
    pub path: PathBuf,
    pub result: Result<(), SaveError>,
}

/// Why a session was not saved. A failed write is both reported to the front end and kept for
/// `flush`, so the cause is shared (`Arc`: `std::io::Error` does not clone).
#[derive(Clone, Debug, thiserror::Error)]
pub enum SaveError {
    #[error("cannot save the session {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread is gone (it could not start, or it panicked): nothing more is written.
    #[error("the session writer stopped")]
    WriterStopped,
}

impl SaveError {
    pub fn write(path: PathBuf, source: std::io::Error) -> Self {
        SaveError::Write {
            path,
            source: Arc::new(source),
        }
    }

    /// What went wrong, without the path (the workbench shows the path on its own).
    pub fn reason(&self) -> String {
        match self {
            SaveError::Write { source, .. } => source.to_string(),
            SaveError::WriterStopped => self.to_string(),
        }
    }
}

/// Told of every write's outcome, on the writer's thread.
pub type SaveListener = Box<dyn Fn(SaveReport) + Send>;

/// While calls finish and answers stream, the session is written at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);

pub struct Recorder {
    pub store: Store,
    pub session: Session,
    partial: Option<Partial>,
    saver: Saver,
    last_save: Instant,
    /// The last write's error, for the front end to show (writes go on being tried; a later
    /// successful write clears it).
    pub error: Option<SaveError>,
}

struct Partial {
    preset: Preset,
    messages: Vec<Message>,
    kind: RunKind,
    given: Vec<String>,
    parent: Option<String>,
    id: String,
    created: String,
    ops: Vec<&'static str>,
    started: Instant,
    done: BTreeMap<usize, StepRecord>,
    calls: BTreeMap<(usize, usize), CallRecord>,
    baseline: Option<CallRecord>,
    timeline: TimelineRecorder,
    dirty: bool,
}

const BASELINE_KEY: usize = usize::MAX;

fn key(stage: Stage, slot: usize) -> (usize, usize) {
    match stage {
        Stage::Step(i) => (i, slot),
        Stage::Baseline => (BASELINE_KEY, slot),
    }
}

impl Recorder {
    pub fn new(store: Store, session: Session) -> Recorder {
        Recorder::with_listener(store, session, None)
    }

    /// A recorder whose writes are reported to `listener` as they finish (the workbench shows them).
    pub fn with_listener(
        store: Store,
        session: Session,
        listener: Option<SaveListener>,
    ) -> Recorder {
        Recorder {
            store,
            session,
            partial: None,
            saver: Saver::spawn(listener),
            last_save: Instant::now(),
            error: None,
        }
    }

    /// A run starts: it is written (with the turn it answers) a second in, then at most once a
    /// second, and at its end; and when the recorder is dropped, panics included.
    pub fn begin(
        &mut self,
        preset: &Preset,
        messages: &[Message],
        kind: RunKind,
        given: Vec<String>,
    ) {
        self.partial = Some(Partial {
            preset: preset.clone(),
            messages: messages.to_vec(),
            kind,
            given,
            parent: None,
            id: String::new(),
            created: super::rfc3339(time::OffsetDateTime::now_utc()),
            ops: Vec::new(),
            started: Instant::now(),
            done: BTreeMap::new(),
            calls: BTreeMap::new(),
            baseline: None,
            timeline: TimelineRecorder::new(Instant::now()),
            dirty: true,
        });
        // The first snapshot comes a second in: a run shorter than that is written once, at its end.
        self.last_save = Instant::now();
    }

    /// The run under way re-aggregates run `parent`'s answers: it is one of that run's variants.
    pub fn set_parent(&mut self, parent: String) {
        if let Some(p) = self.partial.as_mut() {
            p.parent = Some(parent);
        }
    }

    pub fn event(&mut self, ev: &RunEvent) {
        let Some(p) = self.partial.as_mut() else {
            return;
        };
        p.timeline.event(ev, Instant::now());
        match ev {
            RunEvent::RunStarted { run, ops, .. } => {
                p.id = run.to_string();
                p.ops = ops.clone();
            }
            RunEvent::CallStarted {
                tag, temperature, ..
            } => {
                let mut r =
                    CallRecord::empty(tag.slot, &tag.model, *temperature, CallStatus::Cancelled);
                r.error = Some("interrupted: moa stopped while this call was streaming".into());
                r.start_ms = p.started.elapsed().as_millis() as u64;
                p.calls.insert(key(tag.stage, tag.slot), r);
            }
            RunEvent::Delta { tag, text } => {
                if let Some(r) = p.calls.get_mut(&key(tag.stage, tag.slot)) {
                    r.text.push_str(text);
                    p.dirty = true;
                }
            }
            RunEvent::CallFinished { tag, record } | RunEvent::CallFailed { tag, record } => {
                if tag.stage == Stage::Baseline {
                    p.baseline = Some(record.clone());
                }
                p.calls.insert(key(tag.stage, tag.slot), record.clone());
                p.dirty = true;
            }
            RunEvent::StepDone { step, record, .. } => {
                p.done.insert(*step, record.clone());
                p.dirty = true;
            }
            RunEvent::RunDone { record } => {
                self.finish(record.as_ref().clone());
                return;
            }
            _ => {}
        }
        if p.dirty && self.last_save.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// The run ended: it joins the session's runs and the session is written.
    pub fn finish(&mut self, record: RunRecord) {
        let Some(p) = self.partial.take() else {
            return;
        };
        let timeline = p.timeline.timeline(Instant::now());
        let mut run = SessionRun::new(p.preset, record, p.kind, p.given);
        run.parent = p.parent;
        run.timeline = Some(timeline);
        self.session.push_run(run);
        self.save();
    }

    /// Write the session as it stands (the run under way included) in the background; durably
    /// (fsync) when no run is under way, as a snapshot otherwise.
    pub fn save(&mut self) {
        let durable = self.partial.is_none();
        if let Some(p) = self.partial.as_mut() {
            self.session.in_progress = Some(p.snapshot());
            p.dirty = false;
        }
        self.session.touch();
        let bytes = serde_json::to_vec_pretty(&self.session);
        self.session.in_progress = None;
        let path = self.store.path_of(&self.session);
        match bytes {
            Ok(bytes) => self
                .saver
                .write(self.session.id.clone(), path, bytes, durable),
            Err(e) => self.error = Some(SaveError::write(path, std::io::Error::other(e))),
        }
        self.last_save = Instant::now();
    }

    /// Wait until every write asked for so far is done; the error of the last one, if it failed.
    pub fn flush(&mut self) -> Result<(), SaveError> {
        self.error = self.saver.flush();
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    pub fn running(&self) -> bool {
        self.partial.is_some()
    }
}

impl Partial {
    fn snapshot(&self) -> SessionRun {
        let mut steps = Vec::new();
        let mut usage = Usage::default();
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(s) = self.done.get(&i) {
                s.calls.iter().for_each(|c| usage.add(c));
                steps.push(s.clone());
                continue;
            }
            let calls: Vec<CallRecord> = self
                .calls
                .range((i, 0)..(i, usize::MAX))
                .map(|(_, c)| c.clone())
                .collect();
            if calls.is_empty() {
                break;
            }
            calls.iter().for_each(|c| usage.add(c));
            steps.push(StepRecord {
                op: op.to_string(),
                agreement: None,
                agreement_method: None,
                agreement_matrix: None,
                calls,
                responses: Vec::new(),
                shortened: None,
                notes: vec!["the run was interrupted during this step".into()],
                wall_ms: 0,
            });
        }
        let baseline = self.baseline.clone().or_else(|| {
            self.calls
                .range((BASELINE_KEY, 0)..=(BASELINE_KEY, usize::MAX))
                .map(|(_, c)| c.clone())
                .next()
        });
        let mut run = SessionRun::new(
            self.preset.clone(),
            RunRecord {
                schema: RUN_SCHEMA.into(),
                id: self.id.clone(),
                created: self.created.clone(),
                preset: self.preset.name.clone(),
                messages: self.messages.clone(),
                steps,
                final_answer: None,
                baseline,
                wall_ms: self.started.elapsed().as_millis() as u64,
                usage,
                cancelled: false,
            },
            self.kind,
            self.given.clone(),
        );
        run.parent = self.parent.clone();
        run
    }
}

/// A background writer of whole files; the newest content for a path wins.
struct Saver {
    tx: mpsc::Sender<Job>,
}

enum Job {
    /// Session id, path, content, and whether to fsync (final states) or not (snapshots of a run
    /// under way).
    Write(String, PathBuf, Vec<u8>, bool),
    Flush(mpsc::Sender<Option<SaveError>>),
}

impl Saver {
    fn spawn(listener: Option<SaveListener>) -> Saver {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("moa-session-writer".into())
            .spawn(move || {
                // The outcome of the newest write: a later success clears an earlier failure.
                let mut error: Option<SaveError> = None;
                while let Ok(first) = rx.recv() {
                    // Take everything queued: only the newest content of each file is written.
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    let mut writes: Vec<(String, PathBuf, Vec<u8>, bool)> = Vec::new();
                    let mut flushes = Vec::new();
                    for j in jobs {
                        match j {
                            Job::Write(id, p, b, durable) => {
                                // A coalesced write is durable if any write it replaces was.
                                let was = writes.iter().any(|(_, q, _, d)| *q == p && *d);
                                writes.retain(|(_, q, _, _)| *q != p);
                                writes.push((id, p, b, durable || was));
                            }
                            Job::Flush(reply) => flushes.push(reply),
                        }
                    }
                    for (id, p, b, durable) in writes {
                        let result = write_session(&p, &b, durable)
                            .map_err(|e| SaveError::write(p.clone(), e));
                        error = result.as_ref().err().cloned();
                        if let Some(l) = &listener {
                            l(SaveReport {
                                session: id,
                                path: p,
                                result,
                            });
                        }
                    }
                    for f in flushes {
                        let _ = f.send(error.clone());
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a writer thread every save fails, and says so at flush.
            eprintln!("moa: cannot start the session writer: {e}");
        }
        Saver { tx }
    }

    fn write(&self, id: String, path: PathBuf, bytes: Vec<u8>, durable: bool) {
        let _ = self.tx.send(Job::Write(id, path, bytes, durable));
    }

    fn flush(&self) -> Option<SaveError> {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Job::Flush(tx)).is_err() {
            return Some(SaveError::WriterStopped);
        }
        rx.recv().unwrap_or(Some(SaveError::WriterStopped))
    }
}

/// Dropped on every way out, unwinding from a panic included: what the run under way had since the
/// last snapshot is written, and the writes are on disk before the process goes on ending.
impl Drop for Recorder {
    fn drop(&mut self) {
        if self.partial.as_ref().is_some_and(|p| p.dirty) {
            self.save();
        }
        let _ = self.saver.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::CallTag;
    use crate::engine::preset::{AgentSpec, Preset};

    #[test]
    fn a_failed_save_names_the_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a folder should be: the sessions folder cannot be created.
        let blocker = dir.path().join("data");
        std::fs::write(&blocker, b"").unwrap();
        let store = Store::new(blocker.join("sessions"));
        let session = Session::new(&[Message::user("Q")]);
        let path = store.path_of(&session);
        let mut r = Recorder::new(store, session);
        r.save();
        let e = r.flush().unwrap_err();
        assert!(
            matches!(&e, SaveError::Write { path: p, .. } if *p == path),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("cannot save the session {}: ", path.display())),
            "{e}"
        );
        assert!(e.reason().contains("Not a directory"), "{}", e.reason());
        assert!(e.to_string().ends_with(&e.reason()), "{e}");
        assert!(r.error.is_some());
        assert_eq!(
            SaveError::WriterStopped.to_string(),
            "the session writer stopped"
        );
    }

    #[test]
    fn a_recorder_dropped_mid_run_leaves_everything_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let msgs = vec![Message::user("Q")];
        let session = Session::new(&msgs);
        let path = store.path(&session.id);
        let preset = Preset::single("p", AgentSpec::model("fake/a"));
        let tag = CallTag {
            run: "r".into(),
            stage: Stage::Step(0),
            slot: 0,
            model: "fake/a".into(),
        };
        {
            let mut r = Recorder::new(store.clone(), session);
            r.begin(&preset, &msgs, RunKind::Run, Vec::new());
            r.event(&RunEvent::RunStarted {
                run: "r".into(),
                preset: "p".into(),
                ops: vec!["propose"],
            });
            r.event(&RunEvent::CallStarted {
                tag: tag.clone(),
                temperature: None,
                final_candidate: false,
            });
            r.event(&RunEvent::Delta {
                tag,
                text: "partial words".into(),
            });
            // As when a panic unwinds: no finish, no explicit save.
        }
        let s = Store::load_path(&path).unwrap();
        let run = s.in_progress.expect("the run under way is kept");
        assert_eq!(run.record.steps[0].calls[0].text, "partial words");
        assert_eq!(s.messages[0].content, "Q");
    }
}
