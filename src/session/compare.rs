//! MoA against the single-model baseline for one run: answers, latency, tokens, cost and ratios.

use serde::Serialize;

use super::SessionRun;
use crate::engine::record::CallStatus;

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
    let calls: usize = r.steps.iter().map(|s| s.calls.len()).sum();
    let moa = Side {
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
        calls,
    };
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
