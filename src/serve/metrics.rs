//! `GET /metrics`: the production guide's series in Prometheus text (the `prometheus-client`
//! crate's OpenMetrics encoding), fed from the run events of served requests.
//!
//! A proposer is a call of a `propose`, `synthesize` or `refine` step; its `proposer_id` is
//! `MODEL#SLOT` (the slot is the agent's place in its step, so one model sampled three times is
//! three proposers; layers of one pipeline share ids). Every other call (aggregate, vote, rank,
//! self_moa_seq) counts as the aggregator. Every series carries the `preset` too, since one server
//! serves several pipelines.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::record::{CallRecord, CallStatus, RunRecord};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The production guide's latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn agreement_histogram() -> Histogram {
    Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
}

pub struct Metrics {
    registry: Registry,
    proposer_latency: Histograms,
    aggregator_latency: Histograms,
    agreement: Family<Labels, Gauge<f64, AtomicU64>>,
    agreement_histogram: Histograms,
    cache_hits: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    in_flight: Gauge,
    call_failures: Family<Labels, Counter>,
    fallbacks: Family<Labels, Counter>,
    tokens_in: Family<Labels, Counter>,
    tokens_out: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
}

/// Whether calls of this step are proposers (else they count as the aggregator).
pub fn is_proposer_op(op: &str) -> bool {
    matches!(op, "propose" | "synthesize" | "refine")
}

pub fn proposer_id(c: &CallRecord) -> String {
    format!("{}#{}", c.model, c.slot)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            proposer_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            aggregator_latency: Family::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            agreement: Family::default(),
            agreement_histogram: Family::new_with_constructor(
                agreement_histogram as fn() -> Histogram,
            ),
            cache_hits: Family::default(),
            requests: Family::default(),
            in_flight: Gauge::default(),
            call_failures: Family::default(),
            fallbacks: Family::default(),
            tokens_in: Family::default(),
            tokens_out: Family::default(),
            cost: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "moa_proposer_latency_seconds",
            "Latency of each proposer call that answered, request to last token",
            m.proposer_latency.clone(),
        );
        registry.register(
            "moa_aggregator_latency_seconds",
            "Latency of each aggregator call that answered, request to last token",
            m.aggregator_latency.clone(),
        );
        registry.register(
            "moa_proposer_agreement_score",
            "Agreement between the proposers' answers of the last finished layer (0 to 1)",
            m.agreement.clone(),
        );
        registry.register(
            "moa_proposer_agreement_score_distribution",
            "Agreement between the proposers' answers, per finished layer (0 to 1)",
            m.agreement_histogram.clone(),
        );
        registry.register(
            "moa_cache_hits",
            "Calls answered from the call cache (nothing sent to the provider)",
            m.cache_hits.clone(),
        );
        registry.register(
            "moa_requests",
            "Chat completion requests by preset and HTTP status (499: the client went away)",
            m.requests.clone(),
        );
        registry.register(
            "moa_requests_in_flight",
            "Chat completion requests being served",
            m.in_flight.clone(),
        );
        registry.register(
            "moa_call_failures",
            "Provider calls that failed, timed out or were cancelled, by kind",
            m.call_failures.clone(),
        );
        registry.register(
            "moa_fallbacks",
            "Runs whose aggregator failed and whose answer is a proposer's",
            m.fallbacks.clone(),
        );
        registry.register(
            "moa_tokens_in",
            "Prompt tokens of every call of served pipelines",
            m.tokens_in.clone(),
        );
        registry.register(
            "moa_tokens_out",
            "Completion tokens of every call of served pipelines",
            m.tokens_out.clone(),
        );
        registry.register(
            "moa_cost_usd",
            "Cost of served pipelines in USD (calls with a known price)",
            m.cost.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text `/metrics` serves.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub fn request(&self, preset: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("preset", preset.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// A call ended (finished or failed) in a step with operation `op`.
    pub fn call(&self, preset: &str, op: &str, c: &CallRecord) {
        let id = proposer_id(c);
        let p = || ("preset", preset.to_string());
        if c.cached {
            self.cache_hits
                .get_or_create(&vec![p(), ("proposer_id", id.clone())])
                .inc();
        }
        match c.status {
            CallStatus::Ok | CallStatus::Late => {
                let secs = c.latency_ms as f64 / 1000.0;
                if is_proposer_op(op) {
                    self.proposer_latency
                        .get_or_create(&vec![p(), ("proposer_id", id)])
                        .observe(secs);
                } else {
                    self.aggregator_latency
                        .get_or_create(&vec![p()])
                        .observe(secs);
                }
            }
            CallStatus::Failed | CallStatus::Timeout | CallStatus::Cancelled => {
                let kind = c.error_kind.clone().unwrap_or_else(|| {
                    serde_json::to_value(c.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                });
                self.call_failures
                    .get_or_create(&vec![p(), ("kind", kind)])
                    .inc();
            }
            CallStatus::Dropped => {}
        }
    }

    /// The run ended: its proposer layers' agreement (scored as steps end, complete in the run
    /// record), fallback, tokens and cost.
    pub fn run_done(&self, r: &RunRecord) {
        let l = vec![("preset", r.preset.clone())];
        for a in r
            .steps
            .iter()
            .filter(|s| is_proposer_op(&s.op))
            .filter_map(|s| s.agreement)
        {
            self.agreement.get_or_create(&l).set(a);
            self.agreement_histogram.get_or_create(&l).observe(a);
        }
        if r.final_answer
            .as_ref()
            .is_some_and(|f| f.source.starts_with("fallback:"))
        {
            self.fallbacks.get_or_create(&l).inc();
        }
        self.tokens_in.get_or_create(&l).inc_by(r.usage.tokens_in);
        self.tokens_out.get_or_create(&l).inc_by(r.usage.tokens_out);
        self.cost.get_or_create(&l).inc_by(r.usage.cost_usd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_as_the_guide_names_them() {
        let m = Metrics::new();
        let mut c = CallRecord::empty(2, "fake/p", None, CallStatus::Ok);
        c.latency_ms = 700;
        c.cached = true;
        m.call("six", "propose", &c);
        let mut agg = CallRecord::empty(0, "fake/agg", None, CallStatus::Ok);
        agg.latency_ms = 3000;
        m.call("six", "aggregate", &agg);
        let mut f = CallRecord::empty(1, "fake/p", None, CallStatus::Failed);
        f.error_kind = Some("http_500".into());
        m.call("six", "propose", &f);
        m.request("six", 200);
        let t = m.render();
        for line in [
            "moa_proposer_latency_seconds_bucket{le=\"1.0\",preset=\"six\",proposer_id=\"fake/p#2\"} 1",
            "moa_proposer_latency_seconds_bucket{le=\"0.5\",preset=\"six\",proposer_id=\"fake/p#2\"} 0",
            "moa_aggregator_latency_seconds_bucket{le=\"5.0\",preset=\"six\"} 1",
            "moa_cache_hits_total{preset=\"six\",proposer_id=\"fake/p#2\"} 1",
            "moa_call_failures_total{preset=\"six\",kind=\"http_500\"} 1",
            "moa_requests_total{preset=\"six\",status=\"200\"} 1",
        ] {
            assert!(t.contains(line), "{line} not in\n{t}");
        }
    }
}
