//! One served pipeline run: it reads the engine's events, feeds the metrics and (with `--record`)
//! the session recorder, and hands the response what it needs: the final aggregator's tokens as
//! they arrive, progress when asked, and the run record at the end.
//!
//! Dropping a `ServedRun` before its run ended (the client went away, the deadline passed, the
//! response body was dropped for any reason) cancels the run, and a task reads the remaining
//! events so that metrics and the recorded session still see the run end.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::engine::record::RunRecord;
use crate::engine::{RunEvent, RunHandle, Stage};
use crate::session::recorder::Recorder;

/// What the response gets from the run, in order.
#[derive(Debug)]
pub enum Out {
    /// Text of the call that will be the final answer if it succeeds (the last aggregation).
    Content(String),
    /// A proposer or step event, as JSON, for `moa.progress` (only when asked for).
    Progress(Value),
    Done(Box<RunRecord>),
}

/// What reads the run's events (moved to a draining task when the response goes away).
struct Reader {
    events: mpsc::UnboundedReceiver<RunEvent>,
    metrics: Arc<Metrics>,
    preset: String,
    ops: Vec<&'static str>,
    /// (step, slot) of calls whose text is the final answer if they succeed.
    final_calls: Vec<(usize, usize)>,
    recorder: Option<Recorder>,
    progress: bool,
    /// Held until the run ended: a place among `serve.max_concurrent_requests`.
    permit: Option<OwnedSemaphorePermit>,
}

pub struct ServedRun {
    reader: Option<Reader>,
    cancel: CancellationToken,
    pub id: Arc<str>,
    /// The HTTP status this request counts under in `moa_requests_total`: set by the response
    /// when it ends; 499 (the client went away) when it never did.
    pub status: u16,
}

impl ServedRun {
    pub fn new(
        h: RunHandle,
        metrics: Arc<Metrics>,
        preset: String,
        recorder: Option<Recorder>,
        progress: bool,
        permit: OwnedSemaphorePermit,
    ) -> ServedRun {
        // The record also comes as the last event (RunDone); the join handle is not needed.
        drop(h.done);
        metrics.in_flight().inc();
        ServedRun {
            reader: Some(Reader {
                events: h.events,
                metrics,
                preset,
                ops: Vec::new(),
                final_calls: Vec::new(),
                recorder,
                progress,
                permit: Some(permit),
            }),
            cancel: h.cancel,
            id: h.id,
            status: 499,
        }
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The next thing for the response; None once the run has ended and its record was given.
    pub async fn next(&mut self) -> Option<Out> {
        let r = self.reader.as_mut()?;
        loop {
            let ev = r.events.recv().await?;
            if let Some(out) = r.observe(ev) {
                return Some(out);
            }
        }
    }
}

impl Reader {
    /// Metrics and recorder see every event; the response gets what it needs of it.
    fn observe(&mut self, ev: RunEvent) -> Option<Out> {
        if let Some(rec) = self.recorder.as_mut() {
            rec.event(&ev);
        }
        match ev {
            RunEvent::RunStarted { ops, .. } => {
                self.ops = ops;
                None
            }
            RunEvent::CallStarted {
                tag,
                final_candidate,
                ..
            } => {
                if let (true, Stage::Step(i)) = (final_candidate, tag.stage) {
                    self.final_calls.push((i, tag.slot));
                }
                self.progress.then(|| {
                    Out::Progress(json!({
                        "type": "call_started",
                        "step": step_of(tag.stage),
                        "op": self.op(tag.stage),
                        "slot": tag.slot,
                        "model": &*tag.model,
                    }))
                })
            }
            RunEvent::Delta { tag, text } => match tag.stage {
                Stage::Step(i) if self.final_calls.contains(&(i, tag.slot)) => {
                    Some(Out::Content(text))
                }
                _ => None,
            },
            RunEvent::CallFinished { tag, record } | RunEvent::CallFailed { tag, record } => {
                if tag.stage != Stage::Baseline {
                    self.metrics.call(&self.preset, self.op(tag.stage), &record);
                }
                self.progress.then(|| {
                    Out::Progress(json!({
                        "type": "call_done",
                        "step": step_of(tag.stage),
                        "op": self.op(tag.stage),
                        "slot": tag.slot,
                        "model": record.model,
                        "status": record.status,
                        "latency_ms": record.latency_ms,
                        "ttft_ms": record.ttft_ms,
                        "tokens_out": record.tokens_out,
                        "error_kind": record.error_kind,
                    }))
                })
            }
            RunEvent::StepDone { step, record, .. } => self.progress.then(|| {
                Out::Progress(json!({
                    "type": "step_done",
                    "step": step,
                    "op": record.op,
                    "agreement": record.agreement,
                    "agreement_method": record.agreement_method,
                    "wall_ms": record.wall_ms,
                }))
            }),
            RunEvent::RunDone { record } => {
                self.metrics.run_done(&record);
                self.end();
                Some(Out::Done(record))
            }
            _ => None,
        }
    }

    fn op(&self, stage: Stage) -> &'static str {
        match stage {
            Stage::Step(i) => self.ops.get(i).copied().unwrap_or("step"),
            Stage::Baseline => "baseline",
        }
    }

    /// The run ended: its place is free, and the recorder's last write (an fsync) happens on a
    /// blocking thread, away from the threads that stream other responses.
    fn end(&mut self) {
        self.permit = None;
        if let Some(rec) = self.recorder.take() {
            tokio::task::spawn_blocking(move || drop(rec));
        }
    }
}

fn step_of(stage: Stage) -> Option<usize> {
    match stage {
        Stage::Step(i) => Some(i),
        Stage::Baseline => None,
    }
}

impl Drop for ServedRun {
    fn drop(&mut self) {
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        reader.metrics.in_flight().dec();
        reader.metrics.request(&reader.preset, self.status);
        if reader.permit.is_none() {
            // The run had ended and its record was read.
            return;
        }
        // The response went away before the run ended: stop it, and let its last events reach
        // the metrics and the recorder.
        self.cancel.cancel();
        reader.progress = false;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while let Some(ev) = reader.events.recv().await {
                    reader.observe(ev);
                }
                reader.end();
            });
        }
    }
}
