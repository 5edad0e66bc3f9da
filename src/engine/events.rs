//! Everything that happens during a run, as one ordered stream. Front ends (CLI printer, TUI,
//! session recorder) only consume these.

use std::sync::Arc;

use super::record::{CallRecord, RunRecord, StepRecord};

/// Which part of a run an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    Step(usize),
    Baseline,
}

/// One call within a run: where it is and which model it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CallTag {
    pub run: Arc<str>,
    pub stage: Stage,
    pub slot: usize,
    pub model: Arc<str>,
}

#[derive(Clone, Debug)]
pub enum RunEvent {
    RunStarted {
        run: Arc<str>,
        preset: String,
        ops: Vec<&'static str>,
    },
    StepStarted {
        run: Arc<str>,
        step: usize,
        op: &'static str,
    },
    CallStarted {
        tag: CallTag,
        temperature: Option<f64>,
        /// This call's text is the run's final answer if it succeeds (the last aggregation).
        final_candidate: bool,
    },
    /// A retry is coming after a retryable error before the first token.
    Retrying {
        tag: CallTag,
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    Delta {
        tag: CallTag,
        text: String,
    },
    CallFinished {
        tag: CallTag,
        record: CallRecord,
    },
    /// Failed, timed out or cancelled; the record keeps the partial text.
    CallFailed {
        tag: CallTag,
        record: CallRecord,
    },
    /// How far the step's responses agree: live while they stream (`live`), final at step end.
    Agreement {
        run: Arc<str>,
        step: usize,
        value: f64,
        method: String,
        /// Slots the matrix rows stand for.
        slots: Vec<usize>,
        matrix: Vec<Vec<f64>>,
        live: bool,
    },
    Notice {
        run: Arc<str>,
        stage: Stage,
        message: String,
    },
    StepDone {
        run: Arc<str>,
        step: usize,
        record: StepRecord,
    },
    RunDone {
        record: Box<RunRecord>,
    },
}

impl RunEvent {
    /// The call an event belongs to, for events of one call.
    pub fn tag_mut(&mut self) -> Option<&mut CallTag> {
        match self {
            RunEvent::CallStarted { tag, .. }
            | RunEvent::Retrying { tag, .. }
            | RunEvent::Delta { tag, .. }
            | RunEvent::CallFinished { tag, .. }
            | RunEvent::CallFailed { tag, .. } => Some(tag),
            _ => None,
        }
    }
}
