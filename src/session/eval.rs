//! Batch evaluation (`moa eval`): a preset against a single-model baseline over a prompt set, with an
//! optional LLM judge and exact-match checks. Results are appended to `results.jsonl` as each prompt
//! finishes (one fsync'd line each), so an interrupted evaluation resumes where it stopped: running
//! the same command again skips every prompt already done.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exact::{self, Match};
use super::judge::{self, Judgement, Outcome};
use super::stats::{self, Spread};
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::engine::record::{CallRecord, CallStatus, RunRecord};
use crate::engine::{Engine, RunOptions};
use crate::provider::Message;

pub const EVAL_SCHEMA: &str = "moa.eval/1";
pub const RESULTS: &str = "results.jsonl";
pub const META: &str = "meta.json";

/// Why an evaluation cannot start or go on. Every message is what `moa eval` prints after "moa: "
/// (users and tests grep them); io errors name the file and keep the cause as their source.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read the prompts file {}: {source}", path.display())]
    ReadPrompts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Cutting a results file back to its last whole line failed.
    #[error("cannot repair {}: {source}", path.display())]
    Repair {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The folder has no readable `meta.json`.
    #[error("{}: not an evaluation folder ({source})", dir.display())]
    NotAnEvaluation {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` is there but does not parse.
    #[error("{}: damaged ({source})", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The folder was made for another preset, baseline or judge (`what` says which).
    #[error("{} holds an evaluation with another {what}; pass another --out to keep both", out.display())]
    OtherTask { out: PathBuf, what: String },
    /// `meta.json` could not be written (the path is the folder's).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot append to {}: {source}", path.display())]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One prompt of the set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Line in the prompts file (1-based).
    pub line: usize,
    /// Stable across runs: a hash of the turns (and of the occurrence, for repeated prompts).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub turns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// Read a JSONL prompts file. Each line has `prompt` (or AlpacaEval's `instruction`, or MT-Bench's
/// `turns`), optionally `reference` (or GSM8K's `answer`, its part after `####`), `id`, `category`.
/// Bad lines are reported ("FILE:LINE: what") and skipped; the rest are used.
pub fn read_prompts(path: &Path) -> Result<(Vec<Item>, Vec<String>), EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::ReadPrompts {
        path: path.to_path_buf(),
        source,
    })?;
    parse_prompts(path, &String::from_utf8_lossy(&bytes))
}

/// The prompts of a JSONL text read from `path` (named in warnings): the items, and a warning for
/// each line skipped. In memory, so the fuzzer can feed it. (No error comes from the text itself
/// today: bad lines are warnings. The `Result` keeps the loader's signature.)
pub fn parse_prompts(path: &Path, text: &str) -> Result<(Vec<Item>, Vec<String>), EvalError> {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with("//") {
            continue;
        }
        let bad = |what: String| format!("{}:{line}: {what}; line skipped", path.display());
        let v: serde_json::Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(bad(format!("not JSON ({e})")));
                continue;
            }
        };
        let string = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let turns: Vec<String> = if let Some(p) = string("prompt").or_else(|| string("instruction"))
        {
            match string("input").filter(|s| !s.trim().is_empty()) {
                Some(input) => vec![format!("{p}\n\n{input}")],
                None => vec![p],
            }
        } else if let Some(t) = v.get("turns").and_then(|t| t.as_array()) {
            t.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        } else {
            warnings.push(bad(
                "no \"prompt\", \"instruction\" or \"turns\" (a string, or a list of strings)"
                    .into(),
            ));
            continue;
        };
        if turns.is_empty() || turns.iter().any(|t| t.trim().is_empty()) {
            warnings.push(bad("the prompt is empty".into()));
            continue;
        }
        let reference = match v.get("reference").or_else(|| v.get("answer")) {
            Some(serde_json::Value::String(s)) => Some(
                s.rsplit_once("####")
                    .map(|(_, r)| r.trim().to_string())
                    .unwrap_or_else(|| s.clone()),
            ),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            // MT-Bench gives one reference per turn: the last turn's is the one checked.
            Some(serde_json::Value::Array(a)) => {
                a.last().and_then(|x| x.as_str()).map(str::to_string)
            }
            _ => None,
        };
        let mut h = Sha256::new();
        for t in &turns {
            h.update(t.as_bytes());
            h.update([0u8]);
        }
        let digest: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let n = seen.entry(digest.clone()).or_insert(0);
        *n += 1;
        let key = if *n == 1 {
            digest
        } else {
            format!("{digest}-{n}")
        };
        items.push(Item {
            line,
            key,
            id: string("id").or_else(|| v.get("question_id").map(|q| q.to_string())),
            turns,
            reference: reference.filter(|r| !r.trim().is_empty()),
            category: string("category"),
        });
    }
    Ok((items, warnings))
}

/// What one prompt gave.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemResult {
    pub key: String,
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub turns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The MoA run of the last turn; its `baseline` is the baseline's call for that turn.
    pub run: RunRecord,
    /// Final answers of earlier turns (multi-turn prompts), MoA and baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_moa: Option<Match>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_baseline: Option<Match>,
    /// Why this prompt has no usable MoA answer; such prompts are run again on resume.
    pub error: Option<String>,
    pub finished: String,
}

impl ItemResult {
    pub fn moa_text(&self) -> Option<&str> {
        self.run.final_answer.as_ref().map(|f| f.text.as_str())
    }
    pub fn baseline_ok(&self) -> Option<&CallRecord> {
        self.run
            .baseline
            .as_ref()
            .filter(|b| b.status == CallStatus::Ok)
    }
}

/// What the baseline is: one call, or the same budget spent on one model (arXiv:2502.00674).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BaselineKind {
    /// One call of the model.
    #[default]
    Single,
    /// The model sampled `n` times and aggregated by itself with the preset's aggregation prompt.
    SelfMoa { n: usize },
    /// The model sampled `n` times and the judge (else the model) picks the best answer.
    BestOf { n: usize },
}

impl BaselineKind {
    /// `self-moa:MODEL[:N]`, `best-of:MODEL[:N]` or `MODEL`: the kind and the model. A missing N
    /// is `default_n` (the preset's proposer calls: the same budget).
    pub fn parse(spec: &str, default_n: usize) -> Result<(BaselineKind, String), String> {
        let (kind, rest) = if let Some(r) = spec.strip_prefix("self-moa:") {
            ("self-moa", r)
        } else if let Some(r) = spec.strip_prefix("best-of:") {
            ("best-of", r)
        } else {
            return Ok((BaselineKind::Single, spec.to_string()));
        };
        // Model names may hold colons (ollama/llama3.2:3b): only a last part of digits is N.
        let (model, n) = match rest.rsplit_once(':') {
            Some((m, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => (
                m,
                n.parse::<usize>()
                    .map_err(|e| format!("--baseline {spec:?}: N: {e}"))?,
            ),
            _ => (rest, default_n),
        };
        if !model.contains('/') {
            return Err(format!(
                "--baseline {spec:?}: the model must be written PROVIDER/MODEL, e.g. {kind}:groq/llama-3.1-8b-instant:4"
            ));
        }
        if !(2..=64).contains(&n) {
            return Err(format!(
                "--baseline {spec:?}: N must be 2 to 64 samples (it is {n})"
            ));
        }
        let k = if kind == "self-moa" {
            BaselineKind::SelfMoa { n }
        } else {
            BaselineKind::BestOf { n }
        };
        Ok((k, model.to_string()))
    }

    /// How reports name the baseline: `MODEL`, `self-moa:MODEL:N`, `best-of:MODEL:N`.
    pub fn label(self, model: &str) -> String {
        match self {
            BaselineKind::Single => model.to_string(),
            BaselineKind::SelfMoa { n } => format!("self-moa:{model}:{n}"),
            BaselineKind::BestOf { n } => format!("best-of:{model}:{n}"),
        }
    }
}

/// Proposer calls of a preset before its final step: the budget a matched baseline spends.
pub fn proposer_calls(preset: &Preset) -> usize {
    let last_llm = preset.steps.len().saturating_sub(1);
    preset.steps[..last_llm]
        .iter()
        .map(|s| match s {
            Step::Propose { agents, .. }
            | Step::Synthesize { agents, .. }
            | Step::Refine { agents, .. } => agents.iter().map(|a| a.n.unwrap_or(1)).sum(),
            _ => 0,
        })
        .sum::<usize>()
        .max(2)
}

/// The pipeline that makes the baseline's answer.
pub fn baseline_preset(
    kind: BaselineKind,
    agent: &AgentSpec,
    preset: &Preset,
    judge: Option<&str>,
) -> Preset {
    let samples = |n: usize| Step::Propose {
        agents: vec![
            AgentSpec {
                // Sampling, as the Self-MoA paper does: the same answer N times buys nothing.
                temperature: agent.temperature.or(Some(0.7)),
                n: None,
                ..agent.clone()
            };
            n
        ],
        gate: Default::default(),
    };
    let template = |name: &str| {
        crate::engine::prompts::Templates::builtin()
            .get(name)
            .unwrap_or_default()
            .to_string()
    };
    let steps = match kind {
        BaselineKind::Single => return Preset::single("baseline", agent.clone()),
        BaselineKind::SelfMoa { n } => {
            let prompt = preset
                .steps
                .iter()
                .rev()
                .find_map(|s| match s {
                    Step::Aggregate { prompt, .. } => Some(prompt.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| template("together"));
            vec![
                samples(n),
                Step::Aggregate {
                    agent: AgentSpec {
                        n: None,
                        ..agent.clone()
                    },
                    prompt,
                },
            ]
        }
        BaselineKind::BestOf { n } => vec![
            samples(n),
            Step::Rank {
                agent: AgentSpec {
                    temperature: Some(0.0),
                    ..AgentSpec::model(judge.unwrap_or(&agent.model))
                },
                n: 1,
                prompt: template("rank"),
            },
        ],
    };
    Preset {
        name: kind.label(&agent.model),
        description: format!("{} as the baseline", kind.label(&agent.model)),
        steps,
        baseline: None,
        origin: "builtin".into(),
        text: String::new(),
        cache: preset.cache,
    }
}

/// A baseline pipeline's run as one call: its final answer, the pipeline's time, tokens and cost.
fn pipeline_as_call(run: &RunRecord, label: &str) -> CallRecord {
    let ok = run
        .final_answer
        .as_ref()
        .is_some_and(|f| f.status == CallStatus::Ok);
    let mut c = CallRecord::empty(
        0,
        label,
        None,
        if ok {
            CallStatus::Ok
        } else {
            CallStatus::Failed
        },
    );
    c.text = run
        .final_answer
        .as_ref()
        .map(|f| f.text.clone())
        .unwrap_or_default();
    c.latency_ms = run.wall_ms;
    c.tokens_in = run.usage.tokens_in;
    c.tokens_out = run.usage.tokens_out;
    c.cost_usd = (!run.usage.cost_incomplete).then_some(run.usage.cost_usd);
    if !ok {
        c.error = run
            .steps
            .iter()
            .flat_map(|s| s.notes.iter())
            .next()
            .cloned()
            .or_else(|| Some("the baseline pipeline produced no answer".into()));
    }
    c
}

/// What an evaluation folder was made for; a resume must match it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub schema: String,
    pub preset: Preset,
    pub prompts: PathBuf,
    pub baseline: Option<AgentSpec>,
    #[serde(default)]
    pub baseline_kind: BaselineKind,
    pub judge: Option<String>,
    pub created: String,
}

impl Meta {
    /// The baseline as reports name it.
    pub fn baseline_label(&self) -> Option<String> {
        self.baseline
            .as_ref()
            .map(|b| self.baseline_kind.label(&b.model))
    }
}

impl Meta {
    fn same_task(&self, other: &Meta) -> Option<String> {
        let steps = |p: &Preset| serde_json::to_string(&p.steps).unwrap_or_default();
        if self.preset.name != other.preset.name || steps(&self.preset) != steps(&other.preset) {
            return Some(format!("preset {:?}", self.preset.name));
        }
        if self.baseline.as_ref().map(|b| &b.model) != other.baseline.as_ref().map(|b| &b.model)
            || self.baseline_kind != other.baseline_kind
        {
            return Some("baseline".into());
        }
        if self.judge != other.judge {
            return Some("judge".into());
        }
        None
    }
}

pub struct Plan {
    pub engine: Engine,
    pub preset: Arc<Preset>,
    pub baseline: Option<AgentSpec>,
    pub baseline_kind: BaselineKind,
    pub judge: Option<String>,
    pub concurrency: usize,
    pub out: PathBuf,
    pub prompts: PathBuf,
}

/// Progress reported after each prompt.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub result: &'a ItemResult,
}

/// Results in `dir` so far: the newest line per key. A line cut short by a crash is ignored (its
/// prompt runs again); the count of such lines is returned with them.
pub fn load_results(dir: &Path) -> (BTreeMap<String, ItemResult>, usize) {
    let mut out = BTreeMap::new();
    let mut damaged = 0;
    let Ok(text) = std::fs::read_to_string(dir.join(RESULTS)) else {
        return (out, 0);
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<ItemResult>(line) {
            Ok(r) => {
                out.insert(r.key.clone(), r);
            }
            Err(_) => damaged += 1,
        }
    }
    (out, damaged)
}

/// What `repair_results` did to a results file a kill had cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// Bytes of the cut-off last line that were dropped.
    pub dropped_bytes: u64,
}

/// A results file must end in a newline before anything is appended: one that does not ends in a
/// line cut off by a crash, and the next line would be joined onto it (both then unreadable).
/// The cut-off line is dropped (its prompt is not done, so it runs again).
pub fn repair_results(dir: &Path) -> Result<Option<Repaired>, EvalError> {
    let path = dir.join(RESULTS);
    match crate::files::drop_cut_last_line(&path) {
        Ok(dropped) => Ok(dropped.map(|dropped_bytes| Repaired { dropped_bytes })),
        Err(source) => Err(EvalError::Repair { path, source }),
    }
}

pub fn load_meta(dir: &Path) -> Result<Meta, EvalError> {
    let p = dir.join(META);
    let text = std::fs::read_to_string(&p).map_err(|source| EvalError::NotAnEvaluation {
        dir: dir.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EvalError::Damaged { path: p, source })
}

/// Run every prompt not done yet. Returns how many were skipped as already done.
pub async fn run(
    plan: &Plan,
    items: &[Item],
    cancel: tokio_util::sync::CancellationToken,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<usize, EvalError> {
    let meta = Meta {
        schema: "moa.eval-meta/1".into(),
        preset: plan.preset.as_ref().clone(),
        prompts: plan.prompts.clone(),
        baseline: plan.baseline.clone(),
        baseline_kind: plan.baseline_kind,
        judge: plan.judge.clone(),
        created: super::rfc3339(time::OffsetDateTime::now_utc()),
    };
    match load_meta(&plan.out) {
        Ok(old) => {
            if let Some(what) = old.same_task(&meta) {
                return Err(EvalError::OtherTask {
                    out: plan.out.clone(),
                    what,
                });
            }
        }
        Err(_) => {
            #[allow(
                clippy::expect_used,
                reason = "plain data with string keys always serializes"
            )]
            let bytes = serde_json::to_vec_pretty(&meta).expect("meta serializes");
            super::store::write_atomic(&plan.out.join(META), &bytes).map_err(|source| {
                EvalError::Write {
                    path: plan.out.clone(),
                    source,
                }
            })?;
        }
    }
    let (done, _) = load_results(&plan.out);
    let todo: Vec<&Item> = items
        .iter()
        .filter(|i| done.get(&i.key).is_none_or(|r| r.error.is_some()))
        .collect();
    let skipped = items.len() - todo.len();
    // Callers that report the repair have run it already; this one makes appending safe for all.
    repair_results(&plan.out)?;
    super::store::remove_stale_temps(&plan.out);
    let results = plan.out.join(RESULTS);
    let mut file =
        super::store::open_private_append(&results).map_err(|source| EvalError::Open {
            path: results.clone(),
            source,
        })?;
    let mut finished = skipped;
    let mut stream = futures::stream::iter(todo)
        .map(|item| run_item(plan, item))
        .buffer_unordered(plan.concurrency.max(1));
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            r = stream.next() => r,
        };
        let Some(result) = next else { break };
        #[allow(
            clippy::expect_used,
            reason = "plain data with string keys always serializes"
        )]
        let mut line = serde_json::to_vec(&result).expect("a result serializes");
        line.push(b'\n');
        // One write per line, then fsync: a kill can cut at most the line being written.
        file.write_all(&line)
            .and_then(|_| file.sync_data())
            .map_err(|source| EvalError::Append {
                path: results.clone(),
                source,
            })?;
        finished += 1;
        progress(Progress {
            done: finished,
            total: items.len(),
            result: &result,
        });
    }
    Ok(skipped)
}

async fn run_item(plan: &Plan, item: &Item) -> ItemResult {
    let opts = || RunOptions {
        baseline: false,
        ..Default::default()
    };
    let mut moa_msgs: Vec<Message> = Vec::new();
    let mut base_msgs: Vec<Message> = Vec::new();
    let mut earlier = Vec::new();
    let mut last: Option<RunRecord> = None;
    let mut error = None;
    let base_preset = plan.baseline.as_ref().map(|b| {
        Arc::new(baseline_preset(
            plan.baseline_kind,
            b,
            &plan.preset,
            plan.judge.as_deref(),
        ))
    });
    let label = plan
        .baseline
        .as_ref()
        .map(|b| plan.baseline_kind.label(&b.model))
        .unwrap_or_default();
    for (t, turn) in item.turns.iter().enumerate() {
        moa_msgs.push(Message::user(turn.clone()));
        base_msgs.push(Message::user(turn.clone()));
        // MoA and baseline run side by side, each continuing its own conversation (MT-Bench style).
        let moa = plan
            .engine
            .run_to_end(plan.preset.clone(), moa_msgs.clone(), opts(), |_| {});
        let base = async {
            match &base_preset {
                Some(p) => Some(
                    plan.engine
                        .run_to_end(p.clone(), base_msgs.clone(), opts(), |_| {})
                        .await,
                ),
                None => None,
            }
        };
        let (mut run, base) = futures::join!(moa, base);
        run.baseline = match plan.baseline_kind {
            BaselineKind::Single => {
                base.and_then(|b| b.steps.into_iter().next()?.calls.into_iter().next())
            }
            // A pipeline: its final answer, with the whole pipeline's time, tokens and cost.
            _ => base.map(|b| pipeline_as_call(&b, &label)),
        };
        let moa_text = run.final_answer.as_ref().map(|f| f.text.clone());
        let base_text = run
            .baseline
            .as_ref()
            .map(|b| b.text.clone())
            .unwrap_or_default();
        if moa_text.is_none() {
            error = Some(match t {
                0 => "the MoA pipeline produced no answer".to_string(),
                _ => format!("the MoA pipeline produced no answer at turn {}", t + 1),
            });
            last = Some(run);
            break;
        }
        if t + 1 < item.turns.len() {
            earlier.push([moa_text.clone().unwrap_or_default(), base_text.clone()]);
        }
        moa_msgs.push(Message::assistant(moa_text.unwrap_or_default()));
        base_msgs.push(Message::assistant(base_text));
        last = Some(run);
    }
    #[allow(
        clippy::expect_used,
        reason = "items are parsed with at least one turn"
    )]
    let run = last.expect("an item has at least one turn");
    let mut result = ItemResult {
        key: item.key.clone(),
        line: item.line,
        id: item.id.clone(),
        turns: item.turns.clone(),
        reference: item.reference.clone(),
        run,
        earlier,
        judgement: None,
        exact_moa: None,
        exact_baseline: None,
        error,
        finished: String::new(),
    };
    if let (Some(reference), Some(text)) = (&item.reference, result.moa_text()) {
        result.exact_moa = Some(exact::check(text, reference));
        result.exact_baseline = result
            .baseline_ok()
            .map(|b| exact::check(&b.text, reference));
    }
    if let (Some(model), Some(moa), Some(base)) = (
        &plan.judge,
        result.moa_text().map(str::to_string),
        result.baseline_ok().map(|b| b.text.clone()),
    ) && result.error.is_none()
    {
        let question = if item.turns.len() == 1 {
            item.turns[0].clone()
        } else {
            // Earlier turns as context; the answers judged are the last turn's.
            item.turns
                .iter()
                .enumerate()
                .map(|(i, t)| format!("(Turn {}) {t}", i + 1))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        result.judgement = Some(judge::judge(&plan.engine, model, &question, &moa, &base).await);
    }
    result.finished = super::rfc3339(time::OffsetDateTime::now_utc());
    result
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JudgeSummary {
    pub model: String,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub inconsistent: usize,
    /// Pairs the judge could not decide (it failed or gave no verdict); not in the rate.
    pub errors: usize,
    pub win_rate: f64,
    /// Wilson's interval.
    pub ci95: [f64; 2],
    /// A paired bootstrap over prompts (the prompts resampled, 2,000 times).
    #[serde(default)]
    pub ci95_bootstrap: Option<[f64; 2]>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Accuracy {
    pub moa: f64,
    pub baseline: Option<f64>,
    pub n: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub moa_p50: Option<u64>,
    pub moa_p95: Option<u64>,
    pub baseline_p50: Option<u64>,
    pub baseline_p95: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct PerSide {
    pub moa: f64,
    pub baseline: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepAgreement {
    pub step: usize,
    pub op: String,
    pub method: String,
    pub spread: Spread,
}

/// The evaluation summary (`moa eval --json`, CONTRACT.md `moa.eval/1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub schema: String,
    pub preset: String,
    pub baseline_model: Option<String>,
    pub prompts: usize,
    pub done: usize,
    pub errors: usize,
    pub skipped_done: usize,
    pub judge: Option<JudgeSummary>,
    pub accuracy: Option<Accuracy>,
    pub latency_ms: Latency,
    /// Totals over the prompts done.
    pub cost_usd: PerSide,
    pub cost_per_prompt_usd: PerSide,
    /// Tokens in + out per prompt (mean).
    pub tokens_per_prompt: PerSide,
    /// Mean answer length in characters: judges favour long answers, so read it beside the win
    /// rate.
    #[serde(default)]
    pub avg_length: PerSide,
    /// True when some model had no price: costs are then lower bounds.
    pub cost_incomplete: bool,
    pub agreement: Vec<StepAgreement>,
    /// The call cache in this run; null with --no-cache (and in `--compare`).
    #[serde(default)]
    pub cache: Option<crate::provider::cache::CacheStats>,
    pub out: PathBuf,
}

/// Summarize the results of `items` (those of the prompts file; others in the folder are ignored).
pub fn summarize(
    meta: &Meta,
    items: &[Item],
    results: &BTreeMap<String, ItemResult>,
    skipped_done: usize,
    out: &Path,
) -> Summary {
    let rs: Vec<&ItemResult> = items.iter().filter_map(|i| results.get(&i.key)).collect();
    let ok: Vec<&ItemResult> = rs.iter().copied().filter(|r| r.error.is_none()).collect();
    let judge = meta.judge.as_ref().map(|model| {
        let js: Vec<&Judgement> = ok.iter().filter_map(|r| r.judgement.as_ref()).collect();
        let count = |o: Outcome| js.iter().filter(|j| j.outcome == o).count();
        let (wins, ties, losses) = (
            count(Outcome::Win),
            count(Outcome::Tie),
            count(Outcome::Loss),
        );
        let n = wins + ties + losses;
        let win_rate = if n == 0 {
            0.0
        } else {
            (wins as f64 + ties as f64 / 2.0) / n as f64
        };
        let ci = stats::wilson95(win_rate, n).unwrap_or((0.0, 1.0));
        let units: Vec<Vec<f64>> = js
            .iter()
            .map(|j| match j.outcome {
                Outcome::Win => vec![1.0],
                Outcome::Tie => vec![0.5],
                Outcome::Loss => vec![0.0],
                Outcome::Error => vec![],
            })
            .collect();
        let boot = stats::paired_bootstrap95(&units, 2000, 0x6576_616c)
            .map(|(lo, hi)| [round3(lo), round3(hi)]);
        JudgeSummary {
            model: model.clone(),
            wins,
            ties,
            losses,
            inconsistent: js.iter().filter(|j| j.inconsistent).count(),
            errors: count(Outcome::Error),
            win_rate: round3(win_rate),
            ci95: [round3(ci.0), round3(ci.1)],
            ci95_bootstrap: boot,
        }
    });
    let checked: Vec<&ItemResult> = ok
        .iter()
        .copied()
        .filter(|r| r.exact_moa.is_some())
        .collect();
    let accuracy = (!checked.is_empty()).then(|| {
        let frac = |f: &dyn Fn(&ItemResult) -> Option<bool>| {
            let v: Vec<bool> = checked.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty())
                .then(|| round3(v.iter().filter(|x| **x).count() as f64 / v.len() as f64))
        };
        Accuracy {
            moa: frac(&|r| r.exact_moa.as_ref().map(|m| m.correct)).unwrap_or(0.0),
            baseline: frac(&|r| r.exact_baseline.as_ref().map(|m| m.correct)),
            n: checked.len(),
        }
    });
    let moa_lat: Vec<f64> = ok.iter().map(|r| r.run.wall_ms as f64).collect();
    let base_lat: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.baseline_ok().map(|b| b.latency_ms as f64))
        .collect();
    let p = |v: &[f64], q| stats::percentile(v, q).map(|x| x as u64);
    let moa_cost: f64 = rs.iter().map(|r| r.run.usage.cost_usd).sum();
    let bases: Vec<&CallRecord> = rs.iter().filter_map(|r| r.run.baseline.as_ref()).collect();
    let base_cost: f64 = bases.iter().filter_map(|b| b.cost_usd).sum();
    let has_base = !bases.is_empty();
    let n = rs.len().max(1) as f64;
    let moa_tokens: Vec<f64> = rs.iter().map(|r| r.run.usage.tokens() as f64).collect();
    let base_tokens: Vec<f64> = bases.iter().map(|b| b.tokens() as f64).collect();
    let cost_incomplete = rs.iter().any(|r| r.run.usage.cost_incomplete)
        || bases.iter().any(|b| b.cost_usd.is_none() && b.tokens() > 0);
    let mut per_step: BTreeMap<usize, (String, String, Vec<f64>)> = BTreeMap::new();
    for r in &ok {
        for (i, s) in r.run.steps.iter().enumerate() {
            if let (Some(a), Some(m)) = (s.agreement, &s.agreement_method) {
                per_step
                    .entry(i)
                    .or_insert_with(|| (s.op.clone(), m.clone(), Vec::new()))
                    .2
                    .push(a);
            }
        }
    }
    Summary {
        schema: EVAL_SCHEMA.into(),
        preset: meta.preset.name.clone(),
        baseline_model: meta.baseline_label(),
        prompts: items.len(),
        done: ok.len(),
        errors: rs.len() - ok.len(),
        skipped_done,
        judge,
        accuracy,
        latency_ms: Latency {
            moa_p50: p(&moa_lat, 0.5),
            moa_p95: p(&moa_lat, 0.95),
            baseline_p50: p(&base_lat, 0.5),
            baseline_p95: p(&base_lat, 0.95),
        },
        cost_usd: PerSide {
            moa: moa_cost,
            baseline: has_base.then_some(base_cost),
        },
        cost_per_prompt_usd: PerSide {
            moa: moa_cost / n,
            baseline: has_base.then(|| base_cost / bases.len() as f64),
        },
        tokens_per_prompt: PerSide {
            moa: stats::mean(&moa_tokens).unwrap_or(0.0).round(),
            baseline: stats::mean(&base_tokens).map(f64::round),
        },
        cost_incomplete,
        avg_length: PerSide {
            moa: stats::mean(
                &ok.iter()
                    .filter_map(|r| r.moa_text().map(|t| t.chars().count() as f64))
                    .collect::<Vec<_>>(),
            )
            .unwrap_or(0.0)
            .round(),
            baseline: stats::mean(
                &ok.iter()
                    .filter_map(|r| r.baseline_ok().map(|b| b.text.chars().count() as f64))
                    .collect::<Vec<_>>(),
            )
            .map(f64::round),
        },
        agreement: per_step
            .into_iter()
            .filter_map(|(step, (op, method, v))| {
                Some(StepAgreement {
                    step,
                    op,
                    method,
                    spread: stats::spread(&v)?,
                })
            })
            .collect(),
        cache: None,
        out: out.to_path_buf(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The folder an evaluation writes to when `--out` is not given: one per (preset, prompts file,
/// baseline, judge), so that running the same command again resumes it.
pub fn default_out(
    evals_dir: &Path,
    preset: &Preset,
    prompts: &Path,
    baseline: Option<&str>,
    judge: Option<&str>,
) -> PathBuf {
    results_folder(
        evals_dir,
        preset,
        prompts,
        &[baseline.unwrap_or(""), judge.unwrap_or("")],
    )
}

/// A results folder under `dir` named for the preset, the prompts file and `extra` (what else the
/// results depend on): `PRESET-PROMPTS-HASH`, the same for the same task, so a command resumes.
pub fn results_folder(dir: &Path, preset: &Preset, prompts: &Path, extra: &[&str]) -> PathBuf {
    let abs = std::fs::canonicalize(prompts).unwrap_or_else(|_| prompts.to_path_buf());
    let mut h = Sha256::new();
    let steps = serde_json::to_string(&preset.steps).unwrap_or_default();
    let abs = abs.to_string_lossy();
    for part in [preset.name.as_str(), &steps, &abs]
        .into_iter()
        .chain(extra.iter().copied())
    {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest: String = h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = prompts
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!(
        "{}-{}-{digest}",
        super::slug(&preset.name, 40),
        super::slug(&stem, 40)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_prompt_format_and_reports_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.jsonl");
        std::fs::write(
            &p,
            concat!(
                "{\"prompt\": \"What is 2+2?\", \"reference\": \"4\"}\n",
                "\n",
                "{\"instruction\": \"Write a haiku\"}\n",
                "{\"turns\": [\"Hi\", \"And then?\"], \"reference\": [\"a\", \"b\"], \"question_id\": 81}\n",
                "not json\n",
                "{\"question\": \"no prompt field\"}\n",
                "{\"prompt\": \"   \"}\n",
                "{\"prompt\": \"GSM\", \"answer\": \"work... #### 1,200\"}\n",
                "{\"prompt\": \"What is 2+2?\"}\n",
            ),
        )
        .unwrap();
        let (items, warnings) = read_prompts(&p).unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0].reference.as_deref(), Some("4"));
        assert_eq!(items[1].turns, ["Write a haiku"]);
        assert_eq!(items[2].turns.len(), 2);
        assert_eq!(items[2].reference.as_deref(), Some("b"));
        assert_eq!(items[2].id.as_deref(), Some("81"));
        assert_eq!(items[3].reference.as_deref(), Some("1,200"));
        // The same prompt twice gets two keys.
        assert_eq!(items[4].key, format!("{}-2", items[0].key));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("p.jsonl:5: not JSON"), "{warnings:?}");
        assert!(warnings[1].contains(":6: no \"prompt\""), "{warnings:?}");
        assert!(
            warnings[2].contains(":7: the prompt is empty"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_missing_prompts_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nosuch.jsonl");
        let e = read_prompts(&p).unwrap_err();
        assert!(matches!(&e, EvalError::ReadPrompts { path, source }
            if *path == p && source.kind() == std::io::ErrorKind::NotFound));
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read the prompts file {}: No such file or directory (os error 2)",
                p.display()
            )
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_folder_without_meta_is_not_an_evaluation_and_a_bad_meta_is_damaged() {
        let d = tempfile::tempdir().unwrap();
        let e = load_meta(d.path()).unwrap_err();
        assert!(matches!(e, EvalError::NotAnEvaluation { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: not an evaluation folder (No such file or directory (os error 2))",
                d.path().display()
            )
        );
        std::fs::write(d.path().join(META), "{").unwrap();
        let e = load_meta(d.path()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: damaged (", d.path().join(META).display())),
            "{e}"
        );
        let other = EvalError::OtherTask {
            out: "/tmp/evals/x".into(),
            what: "judge".into(),
        };
        assert_eq!(
            other.to_string(),
            "/tmp/evals/x holds an evaluation with another judge; pass another --out to keep both"
        );
    }

    #[test]
    fn a_cut_off_last_line_is_dropped_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(RESULTS);
        assert_eq!(repair_results(d.path()).unwrap(), None);
        std::fs::write(&p, b"{\"whole\": 1}\n{\"cut\": ").unwrap();
        assert_eq!(
            repair_results(d.path()).unwrap(),
            Some(Repaired { dropped_bytes: 8 })
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"whole\": 1}\n");
        assert_eq!(repair_results(d.path()).unwrap(), None);
        std::fs::write(&p, b"no newline at all").unwrap();
        repair_results(d.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }

    #[test]
    fn the_shipped_prompt_set_reads_cleanly() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/eval/starter.jsonl");
        let (items, warnings) = read_prompts(&p).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(items.len() >= 20);
        assert!(items.iter().filter(|i| i.reference.is_some()).count() >= 10);
    }
}
