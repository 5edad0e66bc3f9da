//! Aggregator tuning (`moa tune`): which aggregator prompt, model or temperature works best on *my*
//! prompts, and what each proposer adds. For each prompt the preset runs once up to its last
//! aggregation; those proposer answers are frozen (`frozen.jsonl`) and every variant aggregates
//! exactly the same answers, so the variants differ only in what is being tuned. Variants are
//! judged pairwise in both orders; with `--leave-one-out` each variant also runs once without each
//! proposer's answer and is judged against its full self.
//!
//! Like `moa eval` it is a workflow over the engine, not storage: every answer and verdict is
//! appended (one fsync'd line) to `results.jsonl` as it arrives, so an interrupted tuning loses
//! nothing and the same command again sends no request for what is done. Results are keyed by what
//! produced them (prompt, the variant's settings, the proposer left out, the judge), so adding a
//! variant or `--leave-one-out` later runs only what is new, and editing a variant runs it again.
//!
//! Layers: `cli` → `tune` → `engine`/`session`.

pub mod html;
pub mod report;
pub mod variants;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::preset::Preset;
use crate::engine::record::{CallRecord, CallStatus, RunRecord};
use crate::engine::{Engine, RunOptions};
use crate::provider::Message;
use crate::session::eval::Item;
use crate::session::judge::{self, Judgement};
use crate::session::store;
pub use variants::Variant;

pub const TUNE_SCHEMA: &str = "moa.tune/1";
pub const FROZEN: &str = "frozen.jsonl";
pub const RESULTS: &str = "results.jsonl";
pub const META: &str = "meta.json";

/// What a tuning folder was made for: the pipeline whose answers are frozen. A resume must match.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub schema: String,
    pub preset: Preset,
    pub prompts: PathBuf,
    pub created: String,
}

/// One answer the proposers gave, as it goes into the aggregation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The step and slot of the call that produced it (a proposer's identity across prompts).
    pub step: usize,
    pub slot: usize,
    pub model: String,
    pub text: String,
}

/// The proposers' answers to one prompt: what every variant aggregates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Frozen {
    pub key: String,
    pub line: usize,
    pub turns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The conversation the aggregator sees (earlier turns answered by the whole preset).
    pub messages: Vec<Message>,
    pub answers: Vec<Answer>,
    /// The run up to the last aggregation (its calls, tokens, cost, agreement).
    pub run: RunRecord,
    /// Why there is nothing to aggregate; such prompts run again on resume.
    pub error: Option<String>,
}

/// A line of `results.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// A variant's aggregation of a prompt's frozen answers (without one of them, for leave-one-out).
    Answer {
        key: String,
        variant: String,
        fingerprint: String,
        /// The proposer left out, as (step, slot).
        without: Option<[usize; 2]>,
        call: CallRecord,
    },
    /// Variant `a` judged against variant `b` (the outcome is `a`'s).
    Judged {
        key: String,
        a: String,
        a_fingerprint: String,
        b: String,
        b_fingerprint: String,
        judgement: Judgement,
    },
    /// A variant judged against itself without one proposer's answer (the outcome is the full
    /// variant's: a win means that proposer's answer helped).
    LooJudged {
        key: String,
        variant: String,
        fingerprint: String,
        without: [usize; 2],
        judgement: Judgement,
    },
}

/// Everything in a tuning folder, indexed by what produced it.
#[derive(Default)]
pub struct Results {
    pub frozen: BTreeMap<String, Frozen>,
    /// (prompt key, variant fingerprint, left out) → the aggregation call.
    pub answers: HashMap<(String, String, Option<[usize; 2]>), CallRecord>,
    /// (prompt key, fingerprint a, fingerprint b, judge model) → judgement for a.
    pub judged: HashMap<(String, String, String, String), Judgement>,
    /// (prompt key, fingerprint, left out, judge model) → judgement for the full variant.
    pub loo_judged: HashMap<(String, String, [usize; 2], String), Judgement>,
    /// Lines cut off by a crash, ignored.
    pub damaged: usize,
}

impl Results {
    pub fn answer(
        &self,
        key: &str,
        v: &Variant,
        without: Option<[usize; 2]>,
    ) -> Option<&CallRecord> {
        self.answers
            .get(&(key.to_string(), v.fingerprint.clone(), without))
            .filter(|c| c.status == CallStatus::Ok)
    }
}

/// Read the folder's frozen answers and results (the newest line of each identity wins).
pub fn load(dir: &Path) -> Results {
    let mut r = Results::default();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    for line in read(FROZEN).lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Frozen>(line) {
            Ok(f) => {
                r.frozen.insert(f.key.clone(), f);
            }
            Err(_) => r.damaged += 1,
        }
    }
    for line in read(RESULTS).lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Answer {
                key,
                fingerprint,
                without,
                call,
                ..
            }) => {
                r.answers.insert((key, fingerprint, without), call);
            }
            Ok(Line::Judged {
                key,
                a_fingerprint,
                b_fingerprint,
                judgement,
                ..
            }) => {
                let j = judgement.judge_model.clone();
                r.judged
                    .insert((key, a_fingerprint, b_fingerprint, j), judgement);
            }
            Ok(Line::LooJudged {
                key,
                fingerprint,
                without,
                judgement,
                ..
            }) => {
                let j = judgement.judge_model.clone();
                r.loo_judged
                    .insert((key, fingerprint, without, j), judgement);
            }
            Err(_) => r.damaged += 1,
        }
    }
    r
}

/// Who is judged against whom.
#[derive(Clone, Debug, PartialEq)]
pub enum Against {
    /// Every other variant against this one (by index).
    One(usize),
    /// Every pair.
    RoundRobin,
}

impl Against {
    /// The pairs (a, b) to judge, a's outcome counted.
    pub fn pairs(&self, n: usize) -> Vec<(usize, usize)> {
        match self {
            Against::One(x) => (0..n).filter(|i| i != x).map(|i| (i, *x)).collect(),
            Against::RoundRobin => (0..n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .collect(),
        }
    }
}

pub struct Plan {
    pub engine: Engine,
    pub preset: Arc<Preset>,
    pub variants: Vec<Variant>,
    pub judge: Option<String>,
    pub against: Against,
    pub leave_one_out: bool,
    pub concurrency: usize,
    pub out: PathBuf,
    pub prompts: PathBuf,
}

/// What one prompt gave, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub line: usize,
    /// Requests this prompt sent (0 when everything was done already).
    pub new_calls: usize,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds a tuning of another preset ({other:?}); pass another --out to keep both")]
    OtherTask { path: PathBuf, other: String },
    #[error("{path}: damaged ({reason})")]
    Damaged { path: PathBuf, reason: String },
}

/// An append-only, fsync'd JSONL file shared by the tasks of one tuning.
struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Journal {
    fn open(path: PathBuf) -> Result<Journal, TuneError> {
        crate::files::drop_cut_last_line(&path).map_err(|source| TuneError::Write {
            path: path.clone(),
            source,
        })?;
        let file = store::open_private_append(&path).map_err(|source| TuneError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
        })
    }

    fn append<T: Serialize>(&self, value: &T) -> Result<(), TuneError> {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line, then fsync: a kill can cut at most the line being written.
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|source| TuneError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

pub fn load_meta(dir: &Path) -> Result<Meta, TuneError> {
    let p = dir.join(META);
    let text = std::fs::read_to_string(&p).map_err(|e| TuneError::Damaged {
        path: dir.to_path_buf(),
        reason: format!("not a tuning folder: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| TuneError::Damaged {
        path: p,
        reason: e.to_string(),
    })
}

/// The preset without its last aggregation: what is run once per prompt and frozen.
fn proposers_only(preset: &Preset) -> Preset {
    let mut p = preset.clone();
    p.steps.pop();
    p.baseline = None;
    p.name = format!("{} (up to the aggregation)", preset.name);
    p
}

fn same_pipeline(a: &Preset, b: &Preset) -> bool {
    let steps = |p: &Preset| serde_json::to_string(&p.steps).unwrap_or_default();
    a.name == b.name && steps(a) == steps(b)
}

/// Run every prompt: freeze what is not frozen, aggregate, judge. Returns how many prompts needed
/// no request at all.
pub async fn run(
    plan: &Plan,
    items: &[Item],
    cancel: tokio_util::sync::CancellationToken,
    mut progress: impl FnMut(Progress),
) -> Result<usize, TuneError> {
    let meta = Meta {
        schema: "moa.tune-meta/1".into(),
        preset: plan.preset.as_ref().clone(),
        prompts: plan.prompts.clone(),
        created: crate::session::rfc3339(time::OffsetDateTime::now_utc()),
    };
    match load_meta(&plan.out) {
        Ok(old) if !same_pipeline(&old.preset, &meta.preset) => {
            return Err(TuneError::OtherTask {
                path: plan.out.clone(),
                other: old.preset.name,
            });
        }
        Ok(_) => {}
        Err(_) => {
            let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            store::write_atomic(&plan.out.join(META), &bytes).map_err(|source| {
                TuneError::Write {
                    path: plan.out.clone(),
                    source,
                }
            })?;
        }
    }
    store::remove_stale_temps(&plan.out);
    let done = Arc::new(load(&plan.out));
    let frozen_log = Journal::open(plan.out.join(FROZEN))?;
    let results_log = Journal::open(plan.out.join(RESULTS))?;
    let mut skipped = 0;
    let mut stream = futures::stream::iter(items)
        .map(|item| tune_item(plan, &done, &frozen_log, &results_log, item))
        .buffer_unordered(plan.concurrency.max(1));
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            r = stream.next() => r,
        };
        let Some(p) = next else { break };
        let p = p?;
        if p.new_calls == 0 && p.error.is_none() {
            skipped += 1;
        }
        progress(p);
    }
    Ok(skipped)
}

/// The question a judge sees: the last turn, with earlier turns as context.
pub fn question(turns: &[String]) -> String {
    if turns.len() == 1 {
        return turns[0].clone();
    }
    turns
        .iter()
        .enumerate()
        .map(|(i, t)| format!("(Turn {}) {t}", i + 1))
        .collect::<Vec<_>>()
        .join("\n\n")
}

async fn tune_item(
    plan: &Plan,
    done: &Results,
    frozen_log: &Journal,
    results_log: &Journal,
    item: &Item,
) -> Result<Progress, TuneError> {
    let mut p = Progress {
        line: item.line,
        ..Default::default()
    };
    let frozen = match done.frozen.get(&item.key).filter(|f| f.error.is_none()) {
        Some(f) => f.clone(),
        None => {
            let f = freeze(plan, item).await;
            p.new_calls += f.run.steps.iter().map(|s| s.calls.len()).sum::<usize>();
            frozen_log.append(&f)?;
            f
        }
    };
    if let Some(e) = &frozen.error {
        p.error = Some(e.clone());
        return Ok(p);
    }

    // Every aggregation this prompt needs: each variant on all answers, and (leave-one-out) on all
    // but one. They run at once; the providers' limits pace them.
    let mut jobs: Vec<(usize, Option<[usize; 2]>)> = Vec::new();
    for v in 0..plan.variants.len() {
        jobs.push((v, None));
        if plan.leave_one_out && frozen.answers.len() >= 2 {
            jobs.extend(frozen.answers.iter().map(|a| (v, Some([a.step, a.slot]))));
        }
    }
    let mut calls: HashMap<(usize, Option<[usize; 2]>), CallRecord> = HashMap::new();
    let mut todo = Vec::new();
    for (v, without) in jobs {
        match done.answer(&item.key, &plan.variants[v], without) {
            Some(c) => {
                calls.insert((v, without), c.clone());
            }
            None => todo.push((v, without)),
        }
    }
    let new = futures::future::join_all(todo.into_iter().map(|(v, without)| {
        let responses: Vec<String> = frozen
            .answers
            .iter()
            .filter(|a| Some([a.step, a.slot]) != without)
            .map(|a| a.text.clone())
            .collect();
        let variant = &plan.variants[v];
        let messages = frozen.messages.clone();
        async move {
            let call = aggregate(&plan.engine, &plan.preset, variant, messages, responses).await;
            (v, without, call)
        }
    }))
    .await;
    for (v, without, call) in new {
        p.new_calls += 1;
        results_log.append(&Line::Answer {
            key: item.key.clone(),
            variant: plan.variants[v].name.clone(),
            fingerprint: plan.variants[v].fingerprint.clone(),
            without,
            call: call.clone(),
        })?;
        calls.insert((v, without), call);
    }
    let ok = |v: usize, without: Option<[usize; 2]>| {
        calls
            .get(&(v, without))
            .filter(|c| c.status == CallStatus::Ok)
            .map(|c| c.text.as_str())
    };
    let failed: Vec<String> = (0..plan.variants.len())
        .filter(|v| ok(*v, None).is_none())
        .map(|v| {
            let why = calls
                .get(&(v, None))
                .and_then(|c| c.error.clone())
                .unwrap_or_else(|| "no answer".into());
            format!("{}: {why}", plan.variants[v].name)
        })
        .collect();
    if !failed.is_empty() {
        p.error = Some(failed.join("; "));
    }

    let Some(judge_model) = &plan.judge else {
        return Ok(p);
    };
    let q = question(&item.turns);
    let mut judgings = Vec::new();
    for (a, b) in plan.against.pairs(plan.variants.len()) {
        let (va, vb) = (&plan.variants[a], &plan.variants[b]);
        let id = (
            item.key.clone(),
            va.fingerprint.clone(),
            vb.fingerprint.clone(),
            judge_model.clone(),
        );
        if done.judged.get(&id).is_some_and(|j| !j.call_failed()) {
            continue;
        }
        if let (Some(ta), Some(tb)) = (ok(a, None), ok(b, None)) {
            let q = q.clone();
            judgings.push(futures::future::Either::Left(async move {
                let j = judge::judge_pair(
                    &plan.engine,
                    judge_model,
                    &q,
                    (&va.name, ta),
                    (&vb.name, tb),
                )
                .await;
                Line::Judged {
                    key: item.key.clone(),
                    a: va.name.clone(),
                    a_fingerprint: va.fingerprint.clone(),
                    b: vb.name.clone(),
                    b_fingerprint: vb.fingerprint.clone(),
                    judgement: j,
                }
            }));
        }
    }
    if plan.leave_one_out {
        for (v, variant) in plan.variants.iter().enumerate() {
            for a in &frozen.answers {
                let without = [a.step, a.slot];
                let id = (
                    item.key.clone(),
                    variant.fingerprint.clone(),
                    without,
                    judge_model.clone(),
                );
                if done.loo_judged.get(&id).is_some_and(|j| !j.call_failed()) {
                    continue;
                }
                if let (Some(full), Some(less)) = (ok(v, None), ok(v, Some(without))) {
                    let q = q.clone();
                    judgings.push(futures::future::Either::Right(async move {
                        let without_name = format!("{} without #{}", variant.name, without[1] + 1);
                        let j = judge::judge_pair(
                            &plan.engine,
                            judge_model,
                            &q,
                            (&variant.name, full),
                            (&without_name, less),
                        )
                        .await;
                        Line::LooJudged {
                            key: item.key.clone(),
                            variant: variant.name.clone(),
                            fingerprint: variant.fingerprint.clone(),
                            without,
                            judgement: j,
                        }
                    }));
                }
            }
        }
    }
    for line in futures::future::join_all(judgings).await {
        p.new_calls += 2;
        results_log.append(&line)?;
    }
    Ok(p)
}

/// Run the preset up to its last aggregation on one prompt (earlier turns of a multi-turn prompt
/// are answered by the whole preset, so the conversation goes on as it would in a real run).
async fn freeze(plan: &Plan, item: &Item) -> Frozen {
    let opts = || RunOptions {
        baseline: false,
        ..Default::default()
    };
    let proposers = Arc::new(proposers_only(&plan.preset));
    let mut messages: Vec<Message> = Vec::new();
    let mut error = None;
    let last = item.turns.len().saturating_sub(1);
    for turn in &item.turns[..last] {
        messages.push(Message::user(turn.clone()));
        let run = plan
            .engine
            .run_to_end(plan.preset.clone(), messages.clone(), opts(), |_| {})
            .await;
        match run.final_answer {
            Some(f) if f.status == CallStatus::Ok => messages.push(Message::assistant(f.text)),
            _ => {
                error = Some("the preset produced no answer to an earlier turn".to_string());
                break;
            }
        }
    }
    if let Some(t) = item.turns.last() {
        messages.push(Message::user(t.clone()));
    }
    let run = if error.is_none() {
        plan.engine
            .run_to_end(proposers, messages.clone(), opts(), |_| {})
            .await
    } else {
        RunRecord {
            schema: crate::engine::record::RUN_SCHEMA.into(),
            id: String::new(),
            created: crate::session::rfc3339(time::OffsetDateTime::now_utc()),
            preset: plan.preset.name.clone(),
            messages: messages.clone(),
            steps: Vec::new(),
            final_answer: None,
            baseline: None,
            wall_ms: 0,
            usage: Default::default(),
            cancelled: false,
        }
    };
    let answers = frozen_answers(&run);
    if error.is_none() && answers.is_empty() {
        error = Some(
            run.steps
                .iter()
                .flat_map(|s| s.notes.iter())
                .next()
                .cloned()
                .unwrap_or_else(|| "the proposers gave no answer to aggregate".into()),
        );
    }
    Frozen {
        key: item.key.clone(),
        line: item.line,
        turns: item.turns.clone(),
        reference: item.reference.clone(),
        messages,
        answers,
        run,
        error,
    }
}

/// The answers after the last step of a run, with the call that produced each.
fn frozen_answers(run: &RunRecord) -> Vec<Answer> {
    let Some(last) = run.steps.last() else {
        return Vec::new();
    };
    last.responses
        .iter()
        .filter_map(|[step, slot]| {
            let call = run
                .steps
                .get(*step)?
                .calls
                .iter()
                .find(|c| c.slot == *slot)?;
            Some(Answer {
                step: *step,
                slot: *slot,
                model: call.model.clone(),
                text: call.text.clone(),
            })
        })
        .collect()
}

/// One variant's aggregation of `responses`: the call record (its text, tokens, cost, latency).
async fn aggregate(
    engine: &Engine,
    preset: &Preset,
    variant: &Variant,
    messages: Vec<Message>,
    responses: Vec<String>,
) -> CallRecord {
    let p = Preset {
        name: format!("{} ({})", preset.name, variant.name),
        description: preset.description.clone(),
        steps: vec![variant.step()],
        baseline: None,
        origin: preset.origin.clone(),
        text: String::new(),
        cache: preset.cache,
    };
    let run = engine
        .run_to_end(
            Arc::new(p),
            messages,
            RunOptions {
                baseline: false,
                responses,
            },
            |_| {},
        )
        .await;
    run.steps
        .into_iter()
        .flat_map(|s| s.calls)
        .next()
        .unwrap_or_else(|| {
            let mut c = CallRecord::empty(
                0,
                &variant.agent.model,
                variant.agent.temperature,
                CallStatus::Failed,
            );
            c.error = Some("the aggregation did not run".into());
            c
        })
}

/// The folder a tuning writes to when `--out` is not given: one per (preset, prompts file), so
/// that the same command resumes and new variants reuse the frozen answers.
pub fn default_out(tunes_dir: &Path, preset: &Preset, prompts: &Path) -> PathBuf {
    crate::session::eval::results_folder(tunes_dir, preset, prompts, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_against_one_and_round_robin() {
        assert_eq!(Against::One(0).pairs(3), vec![(1, 0), (2, 0)]);
        assert_eq!(Against::One(1).pairs(2), vec![(0, 1)]);
        assert_eq!(Against::RoundRobin.pairs(3), vec![(0, 1), (0, 2), (1, 2)]);
        assert!(Against::RoundRobin.pairs(1).is_empty());
    }

    #[test]
    fn a_cut_off_line_is_dropped_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(RESULTS);
        std::fs::write(&p, b"{\"kind\":\"answer\"}\n{\"kind\":\"ans").unwrap();
        let j = Journal::open(p.clone()).unwrap();
        j.append(&serde_json::json!({"x": 1})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"kind\":\"answer\"}\n{\"x\":1}\n"
        );
    }
}
