//! MoA against the single-model baseline for one run: answers, latency, tokens, cost and ratios.

use serde::Serialize;

use super::SessionRun;
use crate::engine::record::{CallRecord, CallStatus, RunRecord};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Side {
    pub label: String,
    pub text: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Null when a model has no price (see `[prices]` in the config).
    pub cost_usd: Option<f64>,
    pub calls: usize,
}

impl Side {
    pub fn tokens(&self) -> u64 {
        self.tokens_in.saturating_add(self.tokens_out)
    }

    /// "4.7 s · 260 tokens · $0.00040 · 4 call(s)"
    pub fn summary(&self) -> String {
        format!(
            "{:.1} s · {} tokens · {} · {} call(s)",
            self.latency_ms as f64 / 1000.0,
            self.tokens(),
            fmt_cost(self.cost_usd),
            self.calls
        )
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Comparison {
    pub moa: Side,
    pub baseline: Option<Side>,
    /// MoA over baseline: how many times slower, more tokens, more expensive.
    pub latency_ratio: Option<f64>,
    pub tokens_ratio: Option<f64>,
    pub cost_ratio: Option<f64>,
}

pub fn compare(run: &SessionRun) -> Comparison {
    let r = &run.record;
    let moa = run_side(r);
    let baseline = r.baseline.as_ref().map(|b| Side {
        label: format!("baseline ({})", b.model),
        text: b.text.clone(),
        ok: b.status == CallStatus::Ok,
        latency_ms: b.latency_ms,
        tokens_in: b.tokens_in,
        tokens_out: b.tokens_out,
        cost_usd: b.cost_usd,
        calls: 1,
    });
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let (latency_ratio, tokens_ratio, cost_ratio) = match &baseline {
        Some(b) => (
            ratio(moa.latency_ms as f64, b.latency_ms as f64),
            ratio(moa.tokens() as f64, b.tokens() as f64),
            match (moa.cost_usd, b.cost_usd) {
                (Some(m), Some(b)) => ratio(m, b),
                _ => None,
            },
        ),
        None => (None, None, None),
    };
    Comparison {
        moa,
        baseline,
        latency_ratio,
        tokens_ratio,
        cost_ratio,
    }
}

/// A run's final answer with the whole pipeline's time, tokens and cost.
pub fn run_side(r: &RunRecord) -> Side {
    Side {
        label: format!("MoA ({})", r.preset),
        text: r
            .final_answer
            .as_ref()
            .map(|f| f.text.clone())
            .unwrap_or_default(),
        ok: r
            .final_answer
            .as_ref()
            .is_some_and(|f| f.status == CallStatus::Ok),
        latency_ms: r.wall_ms,
        tokens_in: r.usage.tokens_in,
        tokens_out: r.usage.tokens_out,
        cost_usd: (!r.usage.cost_incomplete).then_some(r.usage.cost_usd),
        calls: r.steps.iter().map(|s| s.calls.len()).sum(),
    }
}

/// The pipeline of `r` as if `variant` had been its aggregation instead of `own` (the call that
/// made its answer): the proposers' time, tokens and cost, plus the variant's.
pub fn variant_side(r: &RunRecord, own: &CallRecord, variant: &CallRecord, label: String) -> Side {
    let calls: usize = r.steps.iter().map(|s| s.calls.len()).sum();
    let cost = match (r.usage.cost_incomplete, own.cost_usd, variant.cost_usd) {
        (false, Some(o), Some(v)) => Some((r.usage.cost_usd - o).max(0.0) + v),
        _ => None,
    };
    Side {
        label,
        text: variant.text.clone(),
        ok: variant.status == CallStatus::Ok,
        latency_ms: r.wall_ms.saturating_sub(own.latency_ms) + variant.latency_ms,
        tokens_in: r.usage.tokens_in.saturating_sub(own.tokens_in) + variant.tokens_in,
        tokens_out: r.usage.tokens_out.saturating_sub(own.tokens_out) + variant.tokens_out,
        cost_usd: cost,
        calls,
    }
}

/// One call on its own (the baseline) as a side.
pub fn call_side(c: &CallRecord, label: String) -> Side {
    Side {
        label,
        text: c.text.clone(),
        ok: c.status == CallStatus::Ok,
        latency_ms: c.latency_ms,
        tokens_in: c.tokens_in,
        tokens_out: c.tokens_out,
        cost_usd: c.cost_usd,
        calls: 1,
    }
}

/// `a` over `b`: latency, tokens and cost ratios (None where `b` has none).
pub fn ratios(a: &Side, b: &Side) -> [Option<f64>; 3] {
    let ratio = |x: f64, y: f64| (y > 0.0).then(|| x / y);
    [
        ratio(a.latency_ms as f64, b.latency_ms as f64),
        ratio(a.tokens() as f64, b.tokens() as f64),
        match (a.cost_usd, b.cost_usd) {
            (Some(x), Some(y)) => ratio(x, y),
            _ => None,
        },
    ]
}

pub fn fmt_cost(c: Option<f64>) -> String {
    match c {
        Some(0.0) => "$0".into(),
        Some(c) if c < 0.01 => format!("${c:.5}"),
        Some(c) => format!("${c:.4}"),
        None => "n/a".into(),
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.1}x"))
        .unwrap_or_else(|| "n/a".into())
}
