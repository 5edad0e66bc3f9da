//! The run record (`moa.run/1`, CONTRACT.md): what `moa run --json` prints and what a session stores.

use serde::{Deserialize, Serialize};

use crate::provider::Message;

pub const RUN_SCHEMA: &str = "moa.run/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Ok,
    Failed,
    Timeout,
    Cancelled,
    /// Finished after its step had moved on (quorum or deadline); not used by later steps.
    Late,
    /// Its answer was removed by a later step (dropout, rank).
    Dropped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub slot: usize,
    pub model: String,
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    pub status: CallStatus,
    /// What went wrong and what to do, for a person. Never contains a key.
    pub error: Option<String>,
    /// A short kind (`rate_limited`, `first_token_timeout`, `disconnect`, ...), when there was an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Everything streamed, also for failed and timed-out calls.
    pub text: String,
    pub ttft_ms: Option<u64>,
    pub latency_ms: u64,
    /// Milliseconds from the start of the run to the start of this call (for latency bars).
    pub start_ms: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usage_estimated: bool,
    /// Null when no price is known for the model.
    pub cost_usd: Option<f64>,
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Answered from the call cache (`moa eval`, `moa tune`, runs with `[cache]` or the preset
    /// turning it on; a semantic match counts too): nothing was sent; tokens and cost
    /// are those of the call that was cached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl CallRecord {
    /// Tokens in and out. Saturating: the counts come from providers and from files people edit.
    pub fn tokens(&self) -> u64 {
        self.tokens_in.saturating_add(self.tokens_out)
    }

    /// A call that has produced nothing (yet): the start of placeholders and partial records.
    pub fn empty(slot: usize, model: &str, temperature: Option<f64>, status: CallStatus) -> Self {
        CallRecord {
            slot,
            model: model.to_string(),
            temperature,
            top_p: None,
            max_tokens: None,
            status,
            error: None,
            error_kind: None,
            text: String::new(),
            ttft_ms: None,
            latency_ms: 0,
            start_ms: 0,
            tokens_in: 0,
            tokens_out: 0,
            usage_estimated: false,
            cost_usd: None,
            retries: 0,
            finish_reason: None,
            cached: false,
        }
    }
}

/// How the responses going into a call were shortened to fit a context window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortening {
    pub context_window: u64,
    pub max_chars_per_response: usize,
    pub responses_shortened: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub op: String,
    pub agreement: Option<f64>,
    pub agreement_method: Option<String>,
    /// Pairwise agreement between the step's responses (by position in `calls` that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_matrix: Option<Vec<Vec<f64>>>,
    pub calls: Vec<CallRecord>,
    /// The responses after this step, as (step, slot) of the call that produced each.
    pub responses: Vec<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortened: Option<Shortening>,
    /// Things the user should know (quorum reached, judge output unparsable, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub wall_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalAnswer {
    pub text: String,
    /// `aggregate`, `fallback:<slot>`, or `<op>:<slot>` for pipelines that end without an aggregator.
    pub source: String,
    pub status: CallStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// True when some call had no price: the cost is then a lower bound.
    #[serde(default)]
    pub cost_incomplete: bool,
}

impl Usage {
    pub fn tokens(&self) -> u64 {
        self.tokens_in.saturating_add(self.tokens_out)
    }

    pub fn add(&mut self, c: &CallRecord) {
        self.tokens_in = self.tokens_in.saturating_add(c.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(c.tokens_out);
        match c.cost_usd {
            Some(x) => self.cost_usd += x,
            None => self.cost_incomplete |= c.tokens() > 0,
        }
    }
}

/// What a failed run's final answer says its source is.
pub const FAILED_SOURCE: &str = "error";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: String,
    pub id: String,
    pub created: String,
    pub preset: String,
    pub messages: Vec<Message>,
    pub steps: Vec<StepRecord>,
    /// Null when the run produced no answer (every proposer failed, or it was cancelled early).
    #[serde(rename = "final")]
    pub final_answer: Option<FinalAnswer>,
    pub baseline: Option<CallRecord>,
    /// The MoA pipeline's wall time, first request to final answer (the baseline runs alongside).
    pub wall_ms: u64,
    /// Tokens and cost of the MoA pipeline (every step, late calls included; baseline apart).
    pub usage: Usage,
    #[serde(default)]
    pub cancelled: bool,
}

impl RunRecord {
    /// This record (the steps that had ended) as a run the engine could not finish (a panic in
    /// the run task): a note with `error` on the step under way, and a failed final answer, so
    /// that every front end sees the run end, and why.
    pub fn into_failed(mut self, current: Option<&str>, error: &str) -> RunRecord {
        if let Some(op) = current {
            self.steps.push(StepRecord {
                op: op.to_string(),
                agreement: None,
                agreement_method: None,
                agreement_matrix: None,
                calls: Vec::new(),
                responses: Vec::new(),
                shortened: None,
                notes: vec![error.to_string()],
                wall_ms: 0,
            });
        }
        let mut usage = Usage::default();
        for c in self.steps.iter().flat_map(|s| &s.calls) {
            usage.add(c);
        }
        self.usage = usage;
        self.final_answer = Some(FinalAnswer {
            text: String::new(),
            source: FAILED_SOURCE.into(),
            status: CallStatus::Failed,
        });
        self
    }
}
