//! The pairwise LLM judge (MT-Bench / FastChat `pair-v2` prompt): the judge compares two answers and
//! ends with `[[A]]`, `[[B]]` or `[[C]]` (tie). Each pair is judged in both orders, to cancel the
//! judge's position bias; orders that disagree count as a tie and are flagged inconsistent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::engine::preset::{AgentSpec, Preset};
use crate::engine::record::CallStatus;
use crate::provider::Message;

pub const SYSTEM: &str = include_str!("../../assets/judge/pairwise-system.md");
pub const USER: &str = include_str!("../../assets/judge/pairwise-user.md");
/// Enough for a short explanation and the verdict.
const JUDGE_MAX_TOKENS: u32 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    A,
    B,
    /// A tie.
    C,
}

/// The outcome for the MoA answer against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Win,
    Tie,
    Loss,
    /// The judge failed or its verdict could not be read in at least one order.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Win => "win",
            Outcome::Tie => "tie",
            Outcome::Loss => "loss",
            Outcome::Error => "error",
        }
    }
}

/// The error of an order whose judge answered without a verdict (as opposed to a call that
/// failed): asking that judge again would give the same.
pub const NO_VERDICT: &str = "the judge's answer has no [[A]], [[B]] or [[C]] verdict";

impl Judgement {
    /// Worth asking again: some order's call failed (a rate limit, a timeout), rather than the
    /// judge answering without a verdict.
    pub fn call_failed(&self) -> bool {
        self.outcome == Outcome::Error
            && self
                .orders
                .iter()
                .any(|o| o.verdict.is_none() && o.error.as_deref() != Some(NO_VERDICT))
    }
}

/// One order of the pair as the judge saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderVerdict {
    /// Which answer was shown as assistant A: `moa` or `baseline` (a variant's name in `moa tune`).
    pub a: String,
    pub verdict: Option<Verdict>,
    /// The judge's whole answer (its explanation and verdict).
    pub reasoning: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub judge_model: String,
    pub created: String,
    pub outcome: Outcome,
    /// The two orders disagreed (the outcome is then a tie).
    pub inconsistent: bool,
    pub orders: Vec<OrderVerdict>,
}

/// The verdict a judge's answer ends with: the last `[[A]]`, `[[B]]` or `[[C]]` in it (an explanation
/// may quote the format before giving its own verdict).
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    [
        ("[[A]]", Verdict::A),
        ("[[B]]", Verdict::B),
        ("[[C]]", Verdict::C),
    ]
    .into_iter()
    .filter_map(|(tag, v)| text.rfind(tag).map(|at| (at, v)))
    .max_by_key(|(at, _)| *at)
    .map(|(_, v)| v)
}

/// Combine the verdicts of the two orders (MoA shown first, then baseline shown first) into the
/// outcome for MoA, and whether the orders disagreed.
pub fn combine(moa_first: Option<Verdict>, baseline_first: Option<Verdict>) -> (Outcome, bool) {
    let as_moa = |v: Verdict, moa_is_a: bool| match (v, moa_is_a) {
        (Verdict::C, _) => Outcome::Tie,
        (Verdict::A, true) | (Verdict::B, false) => Outcome::Win,
        _ => Outcome::Loss,
    };
    match (moa_first, baseline_first) {
        (Some(x), Some(y)) => {
            let (x, y) = (as_moa(x, true), as_moa(y, false));
            if x == y {
                (x, false)
            } else {
                (Outcome::Tie, true)
            }
        }
        _ => (Outcome::Error, false),
    }
}

/// The messages for one order: the judge's instructions and the question with both answers.
pub fn messages(question: &str, answer_a: &str, answer_b: &str) -> Vec<Message> {
    // One pass, so that braces inside the answers are never taken for placeholders.
    let mut user =
        String::with_capacity(USER.len() + question.len() + answer_a.len() + answer_b.len());
    let mut rest = USER;
    while let Some(at) = rest.find('{') {
        user.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (value, len) = if tail.starts_with("{question}") {
            (question, "{question}".len())
        } else if tail.starts_with("{answer_a}") {
            (answer_a, "{answer_a}".len())
        } else if tail.starts_with("{answer_b}") {
            (answer_b, "{answer_b}".len())
        } else {
            ("{", 1)
        };
        user.push_str(value);
        rest = &tail[len..];
    }
    user.push_str(rest);
    vec![Message::system(SYSTEM), Message::user(user)]
}

/// Judge the MoA answer against the baseline answer to `question`, in both orders at once.
pub async fn judge(
    engine: &Engine,
    judge_model: &str,
    question: &str,
    moa: &str,
    baseline: &str,
) -> Judgement {
    judge_pair(
        engine,
        judge_model,
        question,
        ("moa", moa),
        ("baseline", baseline),
    )
    .await
}

/// Judge two named answers to `question` in both orders at once; the outcome is the first's (a
/// win means the first answer won). The names are recorded in each order's `a`.
pub async fn judge_pair(
    engine: &Engine,
    judge_model: &str,
    question: &str,
    (first_name, moa): (&str, &str),
    (second_name, baseline): (&str, &str),
) -> Judgement {
    let one = |a_is_moa: bool| {
        let (a, b) = if a_is_moa {
            (moa, baseline)
        } else {
            (baseline, moa)
        };
        let msgs = messages(question, a, b);
        let agent = AgentSpec {
            temperature: Some(0.0),
            max_tokens: Some(JUDGE_MAX_TOKENS),
            system: None,
            ..AgentSpec::model(judge_model)
        };
        let preset = Arc::new(Preset::single("judge", agent));
        let engine = engine.clone();
        async move {
            let rec = engine
                .run_to_end(
                    preset,
                    msgs,
                    crate::engine::RunOptions {
                        baseline: false,
                        ..Default::default()
                    },
                    |_| {},
                )
                .await;
            let call = rec.steps.first().and_then(|s| s.calls.first());
            let text = call.map(|c| c.text.clone()).unwrap_or_default();
            let ok = call.is_some_and(|c| c.status == CallStatus::Ok);
            let verdict = if ok { parse_verdict(&text) } else { None };
            let error = if !ok {
                Some(
                    call.and_then(|c| c.error.clone())
                        .unwrap_or_else(|| "the judge did not answer".into()),
                )
            } else if verdict.is_none() {
                Some(NO_VERDICT.into())
            } else {
                None
            };
            OrderVerdict {
                a: if a_is_moa { first_name } else { second_name }.into(),
                verdict,
                reasoning: text,
                error,
                cost_usd: call.and_then(|c| c.cost_usd),
                latency_ms: call.map(|c| c.latency_ms).unwrap_or(0),
            }
        }
    };
    let (first, second) = futures::join!(one(true), one(false));
    let (outcome, inconsistent) = combine(first.verdict, second.verdict);
    Judgement {
        judge_model: judge_model.to_string(),
        created: super::rfc3339(time::OffsetDateTime::now_utc()),
        outcome,
        inconsistent,
        orders: vec![first, second],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_verdict() {
        assert_eq!(parse_verdict("blah [[A]]"), Some(Verdict::A));
        assert_eq!(
            parse_verdict("Format: \"[[A]]\" if A... My verdict: [[B]]"),
            Some(Verdict::B)
        );
        assert_eq!(parse_verdict("[[C]]."), Some(Verdict::C));
        assert_eq!(parse_verdict("A is better"), None);
        assert_eq!(parse_verdict("[[D]] [A]"), None);
    }

    #[test]
    fn both_orders_combine_into_one_outcome() {
        use Verdict::*;
        assert_eq!(combine(Some(A), Some(B)), (Outcome::Win, false));
        assert_eq!(combine(Some(B), Some(A)), (Outcome::Loss, false));
        assert_eq!(combine(Some(C), Some(C)), (Outcome::Tie, false));
        // A judge that always says A (position bias) is a tie, and inconsistent.
        assert_eq!(combine(Some(A), Some(A)), (Outcome::Tie, true));
        assert_eq!(combine(Some(B), Some(B)), (Outcome::Tie, true));
        assert_eq!(combine(Some(A), Some(C)), (Outcome::Tie, true));
        assert_eq!(combine(None, Some(A)), (Outcome::Error, false));
    }

    #[test]
    fn answers_are_placed_verbatim() {
        let m = messages("Q {answer_b}?", "first {question}", "second");
        assert_eq!(m[0].content, SYSTEM);
        let u = &m[1].content;
        assert!(u.starts_with("[User Question]\nQ {answer_b}?\n\n[The Start of Assistant A's Answer]\nfirst {question}\n"), "{u}");
        assert!(
            u.ends_with("second\n[The End of Assistant B's Answer]"),
            "{u}"
        );
    }
}
