//! Aggregator variants of one run, as the workbench keeps them: the run's own aggregation (A) and
//! every re-aggregation of its answers with another prompt, model or temperature (B, C, …), which
//! are saved as runs of kind `reaggregate` whose `parent` is that run. What is learnt about them is
//! kept with them: which proposers each drew on (attribution), verdicts between two of them, and
//! what leaving one proposer's answer out did (leave-one-out).

use serde::{Deserialize, Serialize};

use super::judge::Judgement;
use super::{RunKind, Session, SessionRun};
use crate::engine::Engine;
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::engine::record::{CallRecord, CallStatus};
use crate::metrics::agreement::AgreementScorer;
use crate::provider::Message;

/// An answer this similar to one proposer's, and clearly less to the others', copied it.
pub const COPY_AT: f64 = 0.95;
/// How far below the copied one the next proposer must be for it to count as a copy.
pub const COPY_MARGIN: f64 = 0.1;

/// How similar an aggregated answer is to each answer it was given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// `minilm` or `tfidf`.
    pub method: String,
    /// The proposers' slots (0-based), in the order of `similarity`.
    pub slots: Vec<usize>,
    pub similarity: Vec<f64>,
    /// The slot whose answer was copied, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<usize>,
}

/// The similarity of `answer` to each of `responses` (slot, text).
pub fn attribute(
    scorer: &dyn AgreementScorer,
    answer: &str,
    responses: &[(usize, String)],
) -> Option<Attribution> {
    if responses.is_empty() || answer.trim().is_empty() {
        return None;
    }
    let mut texts = vec![answer.to_string()];
    texts.extend(responses.iter().map(|(_, t)| t.clone()));
    let scored = scorer.scored(&texts);
    let row = scored.matrix.first()?;
    let similarity: Vec<f64> = row
        .iter()
        .skip(1)
        .map(|x| (x * 1000.0).round() / 1000.0)
        .collect();
    if similarity.len() != responses.len() {
        return None;
    }
    Some(Attribution {
        method: scored.method,
        slots: responses.iter().map(|(s, _)| *s).collect(),
        copied: copied(&similarity).map(|i| responses[i].0),
        similarity,
    })
}

/// The index of the copied answer: at least `COPY_AT` similar, and the others all at least
/// `COPY_MARGIN` less. With one answer there is nothing to tell apart: no copy.
pub fn copied(similarity: &[f64]) -> Option<usize> {
    if similarity.len() < 2 {
        return None;
    }
    let (best, top) = similarity
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let second = similarity
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, x)| *x)
        .fold(f64::MIN, f64::max);
    (*top >= COPY_AT && second <= top - COPY_MARGIN).then_some(best)
}

/// A verdict between two answers of one run: variants by their run id, or `baseline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairJudgement {
    pub a: String,
    pub b: String,
    /// The outcome is `a`'s.
    pub judgement: Judgement,
}

/// The name of the baseline among the sides a pair verdict names.
pub const BASELINE: &str = "baseline";

/// One proposer left out of a variant: the answer without it, and how it compares with the full one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LooEntry {
    pub slot: usize,
    pub model: String,
    pub call: CallRecord,
    /// The full variant judged against this answer (a win: the proposer's answer helped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
    /// How similar this answer is to the full one (1: leaving the proposer out changed nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
}

/// Something learnt about a saved run after it ended, to be kept with it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunData {
    Attribution(Attribution),
    PairJudgement(PairJudgement),
    LeaveOneOut(Vec<LooEntry>),
}

impl RunData {
    pub fn apply(self, run: &mut SessionRun) {
        match self {
            RunData::Attribution(a) => run.attribution = Some(a),
            RunData::PairJudgement(j) => run.pair_judgements.push(j),
            RunData::LeaveOneOut(l) => run.leave_one_out = l,
        }
    }
}

/// Aggregate `given` again once per answer without that answer (concurrently), with `agent` and
/// `prompt` on the conversation `messages`; each result judged against `full` in both orders when
/// there is a `judge`, and its similarity to `full` measured.
#[allow(clippy::too_many_arguments)]
pub async fn leave_one_out(
    engine: &Engine,
    base: &Preset,
    messages: &[Message],
    agent: &AgentSpec,
    prompt: &str,
    given: &[(usize, String)],
    full: &str,
    judge: Option<&str>,
) -> Vec<LooEntry> {
    let mut preset = base.clone();
    if let Some(Step::Aggregate { agent: a, .. }) = preset
        .steps
        .iter_mut()
        .rev()
        .find(|s| matches!(s, Step::Aggregate { .. }))
    {
        *a = agent.clone();
    }
    let question = crate::engine::prompts::last_user(messages).to_string();
    let one = |slot: usize| {
        let responses: Vec<String> = given
            .iter()
            .filter(|(s, _)| *s != slot)
            .map(|(_, t)| t.clone())
            .collect();
        let (preset, question) = (&preset, &question);
        async move {
            let mut call =
                CallRecord::empty(0, &agent.model, agent.temperature, CallStatus::Failed);
            match engine.reaggregate(
                preset,
                Some(prompt.to_string()),
                messages.to_vec(),
                responses,
            ) {
                Ok(h) => {
                    if let Ok(r) = h.done.await
                        && let Some(c) = r.steps.into_iter().flat_map(|s| s.calls).next()
                    {
                        call = c;
                    }
                }
                Err(e) => call.error = Some(e.to_string()),
            }
            let ok = call.status == CallStatus::Ok;
            let similarity = if ok {
                let scorer = engine.scorer.clone();
                let texts = vec![full.to_string(), call.text.clone()];
                tokio::task::spawn_blocking(move || scorer.matrix(&texts))
                    .await
                    .ok()
                    .and_then(|m| m.first().and_then(|r| r.get(1)).copied())
                    .map(|x| (x * 1000.0).round() / 1000.0)
            } else {
                None
            };
            let judgement = match judge {
                Some(model) if ok => Some(
                    super::judge::judge_pair(
                        engine,
                        model,
                        question,
                        ("full", full),
                        (&format!("without #{}", slot + 1), &call.text),
                    )
                    .await,
                ),
                _ => None,
            };
            LooEntry {
                slot,
                model: String::new(),
                call,
                judgement,
                similarity,
            }
        }
    };
    futures::future::join_all(given.iter().map(|(slot, _)| one(*slot))).await
}

impl Session {
    /// The variants of run `id`: the run itself when it aggregated, then its re-aggregations in
    /// the order they were made.
    pub fn variants(&self, id: &str) -> Vec<&SessionRun> {
        let mut v: Vec<&SessionRun> = self
            .runs
            .iter()
            .filter(|r| r.record.id == id && r.kind == RunKind::Run)
            .filter(|r| r.aggregated().is_some())
            .collect();
        v.extend(
            self.runs
                .iter()
                .filter(|r| r.kind == RunKind::Reaggregate && r.parent.as_deref() == Some(id)),
        );
        v
    }
}

/// "A", "B", … "Z", then "27", "28": how variants are named everywhere.
pub fn letter(i: usize) -> String {
    if i < 26 {
        ((b'A' + i as u8) as char).to_string()
    } else {
        (i + 1).to_string()
    }
}

/// What `moa sessions show` and the Markdown export say about a run's variants, attribution,
/// verdicts between variants and leave-one-out, one line each (plain text).
pub fn describe(session: &Session, run: &SessionRun) -> Vec<String> {
    let mut out = Vec::new();
    let family_of = match (&run.kind, &run.parent) {
        (RunKind::Reaggregate, Some(p)) => p.clone(),
        _ => run.record.id.clone(),
    };
    let family = session.variants(&family_of);
    let name = |id: &str| variant_name(&family, id);
    if let Some(i) = family.iter().position(|r| r.record.id == run.record.id)
        && family.len() > 1
    {
        let all: Vec<String> = family
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let c = if k == 0 {
                    r.aggregated()
                } else {
                    r.record.steps.first().and_then(|s| s.calls.first())
                };
                let t = c
                    .and_then(|c| c.temperature)
                    .map(|t| format!(" t={t}"))
                    .unwrap_or_default();
                format!(
                    "{} {}{t}",
                    letter(k),
                    c.map(|c| c.model.as_str()).unwrap_or("?")
                )
            })
            .collect();
        out.push(format!(
            "aggregator variant {} of {}: {}",
            letter(i),
            family.len(),
            all.join(" · ")
        ));
    }
    if let Some(a) = &run.attribution {
        let sims: Vec<String> = a
            .slots
            .iter()
            .zip(&a.similarity)
            .map(|(s, x)| format!("#{} {x:.2}", s + 1))
            .collect();
        out.push(format!(
            "draws on {} ({}){}",
            sims.join("  "),
            a.method,
            a.copied
                .map(|s| format!(" — copies #{}", s + 1))
                .unwrap_or_default()
        ));
    }
    for p in &run.pair_judgements {
        out.push(format!(
            "judge {}: {} {} against {}{}",
            p.judgement.judge_model,
            name(&p.a),
            p.judgement.outcome.as_str(),
            name(&p.b),
            if p.judgement.inconsistent {
                " (the two orders disagreed)"
            } else {
                ""
            }
        ));
    }
    for e in &run.leave_one_out {
        let verdict = e
            .judgement
            .as_ref()
            .map(|j| {
                format!(
                    "with it {}{}",
                    j.outcome.as_str(),
                    if j.inconsistent {
                        " (inconsistent)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_else(|| "not judged".into());
        out.push(format!(
            "leave-one-out without #{} {}: {verdict}; similarity to the full answer {}",
            e.slot + 1,
            e.model,
            e.similarity
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    out
}

impl SessionRun {
    /// The call that made this run's final answer by aggregating, when one did.
    pub fn aggregated(&self) -> Option<&CallRecord> {
        let f = self.record.final_answer.as_ref()?;
        if f.source != "aggregate" {
            return None;
        }
        self.record
            .steps
            .iter()
            .rev()
            .find(|s| s.op == "aggregate")?
            .calls
            .iter()
            .rfind(|c| c.status == CallStatus::Ok || c.text == f.text)
    }
}

/// What a verdict calls one side: `baseline`, a variant's letter in `family`, else `MoA`.
pub fn variant_name(family: &[&SessionRun], id: &str) -> String {
    if id == BASELINE {
        return "baseline".into();
    }
    family
        .iter()
        .position(|r| r.record.id == id)
        .map(letter)
        .unwrap_or_else(|| "MoA".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_one_near_identical_answer_clearly_above_the_rest() {
        assert_eq!(copied(&[0.97, 0.5, 0.6]), Some(0));
        assert_eq!(copied(&[0.5, 0.99, 0.88]), Some(1));
        // Two near-identical answers: it may have drawn on either, no single copy.
        assert_eq!(copied(&[0.97, 0.96]), None);
        assert_eq!(copied(&[0.9, 0.2]), None);
        assert_eq!(copied(&[0.99]), None);
        assert_eq!(copied(&[]), None);
    }

    #[test]
    fn attribution_ranks_the_answer_it_repeats() {
        let scorer = crate::metrics::agreement::TfIdf;
        let a = attribute(
            &scorer,
            "Paris is the capital of France, on the Seine.",
            &[
                (0, "Paris is the capital of France, on the Seine.".into()),
                (2, "Bananas are yellow fruit rich in potassium.".into()),
            ],
        )
        .unwrap();
        assert_eq!(a.slots, [0, 2]);
        assert!(a.similarity[0] > 0.99 && a.similarity[1] < 0.3, "{a:?}");
        assert_eq!(a.copied, Some(0));
        assert_eq!(a.method, "tfidf");
        assert!(attribute(&scorer, "x", &[]).is_none());
    }
}
