//! Runs a preset over a conversation: steps in order, each a barrier unless its quorum or deadline
//! lets it move on; every call reported as events; the run record returned at the end.
//!
//! Late calls (still running when a step moved on early) keep streaming, so the user sees them
//! finish, but their answers do not enter later steps. When the pipeline has its final answer, any
//! still running are cancelled: waiting would cost the latency that quorum/deadline exist to save.
//! Those that finished in time are recorded as `late`, the others as `cancelled` with their text.
//!
//! A panic anywhere in the run task still ends the run: a supervising task sees the run task's
//! JoinError, cancels what is still running and sends `RunDone` with a failed final answer and
//! the steps that had ended, so no front end waits for a run that will never end. Debug builds
//! (tests) can ask for such a panic: `MOA_DEBUG_PANIC_AT_STEP=N` panics as step N (0-based)
//! starts. Release builds do not read it.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call::{CallContext, ms_since, run_call};
use super::events::{CallTag, RunEvent, Stage};
use super::preset::{AgentSpec, Gate, Preset, Step};
use super::prompts::{self, estimate_message_tokens};
use super::record::*;
use crate::metrics::agreement::{self, AgreementScorer};
use crate::provider::Message;
use crate::provider::registry::Registry;

/// The engine: turns presets and conversations into runs. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub registry: Arc<Registry>,
    pub scorer: Arc<dyn AgreementScorer>,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run the preset's baseline alongside (when it has one).
    pub baseline: bool,
    /// Start from these responses instead of none (re-running an aggregator on earlier answers).
    pub responses: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            baseline: true,
            responses: Vec::new(),
        }
    }
}

/// Responses given by the caller rather than produced by a step have this origin step.
const GIVEN: usize = usize::MAX;

/// A run in progress: its events, a way to cancel it, and its record when it ends.
pub struct RunHandle {
    pub id: Arc<str>,
    pub events: mpsc::UnboundedReceiver<RunEvent>,
    pub cancel: CancellationToken,
    pub done: tokio::task::JoinHandle<RunRecord>,
}

impl Engine {
    pub fn start(
        &self,
        preset: Arc<Preset>,
        messages: Vec<Message>,
        opts: RunOptions,
    ) -> RunHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let id: Arc<str> = ulid::Ulid::generate().to_string().into();
        let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
        let failed = RunRecord {
            schema: RUN_SCHEMA.into(),
            id: id.to_string(),
            created: now_rfc3339(),
            preset: preset.name.clone(),
            messages: messages.clone(),
            steps: Vec::new(),
            final_answer: None,
            baseline: None,
            wall_ms: 0,
            usage: Usage::default(),
            cancelled: false,
        };
        let supervisor = Supervisor {
            events: tx.clone(),
            cancel: cancel.clone(),
            progress: progress.clone(),
            run: id.clone(),
            started: Instant::now(),
            ops: preset.steps.iter().map(Step::op).collect(),
            failed,
        };
        let runner = Runner {
            progress,
            ctx: Arc::new(CallContext {
                registry: self.registry.clone(),
                events: tx,
                run_start: Instant::now(),
                partials: std::sync::Mutex::new(None),
            }),
            scorer: self.scorer.clone(),
            run: id.clone(),
            cancel: cancel.clone(),
            conversation: messages,
            steps: Vec::new(),
            responses: opts
                .responses
                .iter()
                .enumerate()
                .map(|(slot, text)| Response {
                    step: GIVEN,
                    slot,
                    text: text.clone(),
                })
                .collect(),
            late: Vec::new(),
            pending_scores: Vec::new(),
            final_source: None,
            partial_final: None,
            windows: None,
        };
        let task = tokio::spawn(runner.run(preset, opts));
        let done = tokio::spawn(supervisor.watch(task));
        RunHandle {
            id,
            events: rx,
            cancel,
            done,
        }
    }

    /// Run only `base`'s last aggregation on given responses, optionally with another prompt: the
    /// core loop of aggregator prompt tuning (the proposers are not called again).
    pub fn reaggregate(
        &self,
        base: &Preset,
        prompt: Option<String>,
        messages: Vec<Message>,
        responses: Vec<String>,
    ) -> Result<RunHandle, super::ReaggregateError> {
        let step = base
            .steps
            .iter()
            .rev()
            .find(|s| matches!(s, Step::Aggregate { .. }))
            .cloned()
            .ok_or_else(|| super::ReaggregateError::NoAggregateStep {
                preset: base.name.clone(),
            })?;
        if responses.is_empty() {
            return Err(super::ReaggregateError::NoAnswers);
        }
        let step = match (step, prompt) {
            (Step::Aggregate { agent, .. }, Some(p)) => Step::Aggregate { agent, prompt: p },
            (s, _) => s,
        };
        let preset = Preset {
            name: format!("{} (re-aggregate)", base.name),
            description: base.description.clone(),
            steps: vec![step],
            baseline: None,
            origin: base.origin.clone(),
            text: base.text.clone(),
            cache: base.cache,
        };
        Ok(self.start(
            Arc::new(preset),
            messages,
            RunOptions {
                baseline: false,
                responses,
            },
        ))
    }

    /// Run to the end, forwarding events to `on_event`.
    pub async fn run_to_end(
        &self,
        preset: Arc<Preset>,
        messages: Vec<Message>,
        opts: RunOptions,
        mut on_event: impl FnMut(&RunEvent),
    ) -> RunRecord {
        let mut h = self.start(preset, messages, opts);
        let mut last = None;
        while let Some(ev) = h.events.recv().await {
            on_event(&ev);
            if let RunEvent::RunDone { record } = ev {
                last = Some(*record);
            }
        }
        match h.done.await {
            Ok(r) => r,
            // The supervisor does not panic; should the runtime drop it, the last record sent
            // is the run's.
            Err(e) => last.unwrap_or_else(|| {
                RunRecord {
                    schema: RUN_SCHEMA.into(),
                    id: h.id.to_string(),
                    created: now_rfc3339(),
                    preset: String::new(),
                    messages: Vec::new(),
                    steps: Vec::new(),
                    final_answer: None,
                    baseline: None,
                    wall_ms: 0,
                    usage: Usage::default(),
                    cancelled: false,
                }
                .into_failed(
                    None,
                    &format!("internal error: the run ended abnormally ({e})"),
                )
            }),
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What a run has done so far, kept where its supervisor can read it after a panic.
#[derive(Default)]
struct Progress {
    steps: Vec<StepRecord>,
    /// The step under way.
    current: Option<usize>,
}

/// Waits for a run task and, if it panicked, ends the run for everyone listening.
struct Supervisor {
    events: mpsc::UnboundedSender<RunEvent>,
    cancel: CancellationToken,
    progress: Arc<std::sync::Mutex<Progress>>,
    run: Arc<str>,
    started: Instant,
    ops: Vec<&'static str>,
    /// The record's head (id, created, preset, messages), filled in on failure.
    failed: RunRecord,
}

impl Supervisor {
    async fn watch(self, task: tokio::task::JoinHandle<RunRecord>) -> RunRecord {
        let e = match task.await {
            Ok(record) => return record,
            Err(e) => e,
        };
        // Calls, baseline and late calls the dead task started would go on streaming.
        self.cancel.cancel();
        let why = if e.is_panic() {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!(
                "internal error: the run failed: the engine panicked ({msg}); please report this"
            )
        } else {
            "internal error: the run task was stopped".to_string()
        };
        let (steps, current) = match self.progress.lock() {
            Ok(p) => (p.steps.clone(), p.current),
            Err(poisoned) => {
                let p = poisoned.into_inner();
                (p.steps.clone(), p.current)
            }
        };
        let current = current.filter(|i| *i >= steps.len());
        let mut head = self.failed;
        head.steps = steps;
        head.wall_ms = ms_since(self.started);
        let record = head.into_failed(current.and_then(|i| self.ops.get(i).copied()), &why);
        let _ = self.events.send(RunEvent::Notice {
            run: self.run.clone(),
            stage: Stage::Step(current.unwrap_or(0)),
            message: why,
        });
        let _ = self.events.send(RunEvent::RunDone {
            record: Box::new(record.clone()),
        });
        record
    }
}

/// A current response and the call that wrote it.
#[derive(Clone, Debug)]
struct Response {
    step: usize,
    slot: usize,
    text: String,
}

struct LateCalls {
    step: usize,
    token: CancellationToken,
    set: JoinSet<(usize, CallRecord)>,
}

struct Runner {
    progress: Arc<std::sync::Mutex<Progress>>,
    ctx: Arc<CallContext>,
    scorer: Arc<dyn AgreementScorer>,
    run: Arc<str>,
    cancel: CancellationToken,
    conversation: Vec<Message>,
    steps: Vec<StepRecord>,
    responses: Vec<Response>,
    late: Vec<LateCalls>,
    pending_scores: Vec<(usize, tokio::task::JoinHandle<Option<agreement::Agreement>>)>,
    final_source: Option<String>,
    /// Text of an aggregator cut off by cancellation: better than nothing for the user.
    partial_final: Option<String>,
    /// Asking providers for context windows, started with the run so that no step waits for it.
    windows: Option<tokio::task::JoinHandle<()>>,
}

struct Job {
    slot: usize,
    agent: AgentSpec,
    messages: Vec<Message>,
    final_candidate: bool,
}

impl Runner {
    fn tag(&self, stage: Stage, slot: usize, model: &str) -> CallTag {
        CallTag {
            run: self.run.clone(),
            stage,
            slot,
            model: model.into(),
        }
    }

    fn notice(&self, stage: Stage, message: String) {
        self.ctx.emit(RunEvent::Notice {
            run: self.run.clone(),
            stage,
            message,
        });
    }

    async fn run(mut self, preset: Arc<Preset>, opts: RunOptions) -> RunRecord {
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.ctx.emit(RunEvent::RunStarted {
            run: self.run.clone(),
            preset: preset.name.clone(),
            ops: preset.steps.iter().map(Step::op).collect(),
        });
        let baseline = match (&preset.baseline, opts.baseline) {
            (Some(agent), true) => {
                let ctx = self.ctx.clone();
                let tag = self.tag(Stage::Baseline, 0, &agent.model);
                let agent = agent.clone();
                let msgs = prompts::with_agent_system(&self.conversation, agent.system.as_deref());
                let token = self.cancel.child_token();
                let placeholder = placeholder_of(&agent, 0);
                Some((
                    placeholder,
                    tokio::spawn(
                        async move { run_call(&ctx, tag, &agent, msgs, false, token).await },
                    ),
                ))
            }
            _ => None,
        };
        // Steps that put answers into a prompt fit them to the model's window: learn the windows
        // the config does not know from the providers now, while the first step runs.
        let fitted: Vec<String> = preset
            .steps
            .iter()
            .filter(|s| {
                !matches!(
                    s,
                    Step::Propose { .. } | Step::Shuffle { .. } | Step::Dropout { .. }
                )
            })
            .flat_map(|s| s.models())
            .map(str::to_string)
            .collect();
        if !fitted.is_empty() {
            let registry = self.ctx.registry.clone();
            self.windows = Some(tokio::spawn(async move {
                let models: Vec<&str> = fitted.iter().map(String::as_str).collect();
                registry.learn_context_windows(&models).await;
            }));
        }
        let last_llm = preset
            .steps
            .iter()
            .rposition(|s| !matches!(s, Step::Shuffle { .. } | Step::Dropout { .. }));
        for (i, step) in preset.steps.iter().enumerate() {
            if self.cancel.is_cancelled() {
                break;
            }
            if let Ok(mut p) = self.progress.lock() {
                p.current = Some(i);
            }
            self.ctx.emit(RunEvent::StepStarted {
                run: self.run.clone(),
                step: i,
                op: step.op(),
            });
            #[cfg(debug_assertions)]
            if std::env::var("MOA_DEBUG_PANIC_AT_STEP")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                == Some(i)
            {
                panic!("MOA_DEBUG_PANIC_AT_STEP={i}");
            }
            let started = Instant::now();
            let mut rec = StepRecord {
                op: step.op().to_string(),
                agreement: None,
                agreement_method: None,
                agreement_matrix: None,
                calls: Vec::new(),
                responses: Vec::new(),
                shortened: None,
                notes: Vec::new(),
                wall_ms: 0,
            };
            let is_final = Some(i) == last_llm;
            self.run_step(i, step, is_final, &mut rec).await;
            rec.responses = self.responses.iter().map(|r| [r.step, r.slot]).collect();
            rec.wall_ms = ms_since(started);
            for n in &rec.notes {
                self.notice(Stage::Step(i), n.clone());
            }
            self.ctx.emit(RunEvent::StepDone {
                run: self.run.clone(),
                step: i,
                record: rec.clone(),
            });
            if let Ok(mut p) = self.progress.lock() {
                p.steps.push(rec.clone());
            }
            self.steps.push(rec);
            if self.responses.is_empty() {
                break;
            }
        }
        let wall_ms = ms_since(self.ctx.run_start);
        // Cancelling once the pipeline has its answer (the baseline still streaming, say) stops
        // what is still running but takes nothing away from that answer.
        let pipeline_cancelled = self.cancel.is_cancelled();
        self.collect_late().await;
        self.collect_scores().await;
        let baseline = match baseline {
            Some((placeholder, h)) => Some(h.await.unwrap_or_else(|_| CallRecord {
                status: CallStatus::Failed,
                error: Some(
                    "internal error: the baseline call panicked (please report this)".into(),
                ),
                error_kind: Some("internal".into()),
                ..placeholder
            })),
            None => None,
        };
        let cancelled = self.cancel.is_cancelled();
        let final_answer = if pipeline_cancelled {
            self.partial_final.take().map(|text| FinalAnswer {
                text,
                source: "aggregate".into(),
                status: CallStatus::Cancelled,
            })
        } else {
            self.responses.first().map(|r| FinalAnswer {
                text: r.text.clone(),
                source: self.final_source.clone().unwrap_or_else(|| {
                    let op = self.steps.get(r.step).map_or("given", |s| s.op.as_str());
                    format!("{op}:{}", r.slot)
                }),
                status: CallStatus::Ok,
            })
        };
        let mut usage = Usage::default();
        for c in self.steps.iter().flat_map(|s| &s.calls) {
            usage.add(c);
        }
        let record = RunRecord {
            schema: RUN_SCHEMA.into(),
            id: self.run.to_string(),
            created,
            preset: preset.name.clone(),
            messages: self.conversation.clone(),
            steps: std::mem::take(&mut self.steps),
            final_answer,
            baseline,
            wall_ms,
            usage,
            cancelled,
        };
        self.ctx.emit(RunEvent::RunDone {
            record: Box::new(record.clone()),
        });
        record
    }

    async fn run_step(&mut self, i: usize, step: &Step, is_final: bool, rec: &mut StepRecord) {
        let texts: Vec<String> = self.responses.iter().map(|r| r.text.clone()).collect();
        if !matches!(
            step,
            Step::Propose { .. } | Step::Shuffle { .. } | Step::Dropout { .. }
        ) && let Some(h) = self.windows.take()
        {
            let _ = h.await;
        }
        match step {
            Step::Propose { agents, gate } => {
                let jobs = agents
                    .iter()
                    .enumerate()
                    .map(|(slot, a)| Job {
                        slot,
                        agent: a.clone(),
                        messages: prompts::with_agent_system(
                            &self.conversation,
                            a.system.as_deref(),
                        ),
                        final_candidate: false,
                    })
                    .collect();
                let ok = self.run_calls(i, jobs, *gate, rec).await;
                if ok.is_empty() {
                    rec.notes.push(
                        "every proposer failed: there is nothing to aggregate (see each call's error)"
                            .into(),
                    );
                }
                self.responses = ok;
                self.score(i);
            }
            Step::Synthesize {
                agents,
                prompt,
                gate,
            } => {
                let jobs = agents
                    .iter()
                    .enumerate()
                    .map(|(slot, a)| {
                        let fitted = self.fit(a, prompt, &texts, rec);
                        Job {
                            slot,
                            agent: a.clone(),
                            messages: prompts::synthesis_messages(
                                &self.conversation,
                                a.system.as_deref(),
                                prompt,
                                &fitted,
                            ),
                            final_candidate: false,
                        }
                    })
                    .collect();
                let ok = self.run_calls(i, jobs, *gate, rec).await;
                if ok.is_empty() {
                    rec.notes.push(
                        "every synthesizer failed: keeping the previous layer's responses".into(),
                    );
                } else {
                    self.responses = ok;
                }
                self.score(i);
            }
            Step::Refine {
                agents,
                prompt,
                gate,
            } => {
                let jobs = texts
                    .iter()
                    .enumerate()
                    .map(|(slot, t)| {
                        let a = &agents[slot % agents.len()];
                        Job {
                            slot,
                            agent: a.clone(),
                            messages: prompts::judge_messages(
                                &self.conversation,
                                a.system.as_deref(),
                                prompt,
                                &[],
                                Some(t),
                            ),
                            final_candidate: false,
                        }
                    })
                    .collect();
                let ok = self.run_calls(i, jobs, *gate, rec).await;
                // A response whose refinement failed stays as it was.
                let mut next = self.responses.clone();
                for r in ok {
                    let s = r.slot;
                    next[s] = r;
                }
                let kept = next.iter().filter(|r| r.step != i).count();
                if kept > 0 {
                    rec.notes.push(format!(
                        "{kept} response(s) could not be refined and were kept as they were"
                    ));
                }
                self.responses = next;
                self.score(i);
            }
            Step::Aggregate { agent, prompt } => {
                let fitted = self.fit(agent, prompt, &texts, rec);
                let msgs = prompts::synthesis_messages(
                    &self.conversation,
                    agent.system.as_deref(),
                    prompt,
                    &fitted,
                );
                let call = self.single_call(i, 0, agent, msgs, is_final).await;
                if call.status == CallStatus::Ok {
                    self.responses = vec![Response {
                        step: i,
                        slot: 0,
                        text: call.text.clone(),
                    }];
                    self.final_source = Some("aggregate".into());
                } else if self.cancel.is_cancelled() {
                    if !call.text.is_empty() {
                        self.partial_final = Some(call.text.clone());
                    }
                } else {
                    let pick = self.central_response();
                    let r = self.responses[pick].clone();
                    rec.notes.push(format!(
                        "the aggregator failed ({}); falling back to the answer of {} (slot {}), the one that agrees most with the others",
                        call.error.as_deref().unwrap_or("no answer"),
                        self.model_of(&r),
                        r.slot
                    ));
                    self.final_source = Some(format!("fallback:{}", r.slot));
                    self.responses = vec![r];
                }
                rec.calls.push(call);
            }
            Step::Rank { agent, n, prompt } => {
                let fitted = self.fit(agent, prompt, &texts, rec);
                let msgs = prompts::judge_messages(
                    &self.conversation,
                    agent.system.as_deref(),
                    prompt,
                    &fitted,
                    None,
                );
                let call = self.single_call(i, 0, agent, msgs, false).await;
                let order = if call.status == CallStatus::Ok {
                    let o = parse_ranking(&call.text, texts.len());
                    if o.is_none() {
                        rec.notes.push(
                            "the judge's ranking could not be read; kept the first responses"
                                .into(),
                        );
                    }
                    o
                } else {
                    rec.notes
                        .push("the ranking judge failed; kept the first responses".into());
                    None
                };
                let order = order.unwrap_or_else(|| (0..texts.len()).collect());
                let keep: Vec<Response> = order
                    .iter()
                    .take(*n)
                    .map(|&k| self.responses[k].clone())
                    .collect();
                let dropped: Vec<Response> = order
                    .iter()
                    .skip(*n)
                    .map(|&k| self.responses[k].clone())
                    .collect();
                rec.calls.push(call);
                self.mark_dropped(&dropped);
                self.responses = keep;
            }
            Step::Vote { agent, prompt } => {
                let fitted = self.fit(agent, prompt, &texts, rec);
                let msgs = prompts::judge_messages(
                    &self.conversation,
                    agent.system.as_deref(),
                    prompt,
                    &fitted,
                    None,
                );
                let call = self.single_call(i, 0, agent, msgs, false).await;
                let choice = if call.status == CallStatus::Ok {
                    parse_choice(&call.text, texts.len())
                } else {
                    None
                };
                let pick = match choice {
                    Some(k) => k,
                    None => {
                        rec.notes.push(format!(
                            "the vote {}; picked the response that agrees most with the others",
                            if call.status == CallStatus::Ok {
                                "could not be read (no [[k]])"
                            } else {
                                "failed"
                            }
                        ));
                        self.central_response()
                    }
                };
                rec.calls.push(call);
                let chosen = self.responses[pick].clone();
                let others: Vec<Response> = self
                    .responses
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != pick)
                    .map(|(_, r)| r.clone())
                    .collect();
                self.mark_dropped(&others);
                self.responses = vec![chosen];
            }
            Step::SelfMoaSeq {
                agent,
                window,
                samples,
                sample_temperature,
                prompt,
            } => {
                let mut slot = 0;
                if let Some(k) = samples {
                    let sampler = AgentSpec {
                        temperature: sample_temperature.or(agent.temperature),
                        ..agent.clone()
                    };
                    let jobs = (0..*k)
                        .map(|s| Job {
                            slot: s,
                            agent: sampler.clone(),
                            messages: prompts::with_agent_system(
                                &self.conversation,
                                sampler.system.as_deref(),
                            ),
                            final_candidate: false,
                        })
                        .collect();
                    let ok = self.run_calls(i, jobs, Gate::default(), rec).await;
                    if ok.is_empty() {
                        rec.notes.push("every sample failed".into());
                        self.responses.clear();
                        return;
                    }
                    self.responses = ok;
                    self.score(i);
                    slot = *k;
                }
                let mut best = self.responses[0].clone();
                let rest: Vec<Response> = self.responses[1..].to_vec();
                let chunks: Vec<&[Response]> = rest.chunks(window - 1).collect();
                let rounds = chunks.len();
                for (round, chunk) in chunks.into_iter().enumerate() {
                    let window_texts: Vec<String> = std::iter::once(best.text.clone())
                        .chain(chunk.iter().map(|r| r.text.clone()))
                        .collect();
                    let fitted = self.fit(agent, prompt, &window_texts, rec);
                    let msgs = prompts::synthesis_messages(
                        &self.conversation,
                        agent.system.as_deref(),
                        prompt,
                        &fitted,
                    );
                    let last = round + 1 == rounds;
                    let call = self
                        .single_call(i, slot, agent, msgs, is_final && last)
                        .await;
                    if call.status == CallStatus::Ok {
                        best = Response {
                            step: i,
                            slot,
                            text: call.text.clone(),
                        };
                    } else if self.cancel.is_cancelled() {
                        if last && !call.text.is_empty() {
                            self.partial_final = Some(call.text.clone());
                        }
                        rec.calls.push(call);
                        break;
                    } else {
                        rec.notes.push(format!(
                            "window {} failed to aggregate; the running answer carries on unchanged",
                            round + 1
                        ));
                    }
                    rec.calls.push(call);
                    slot += 1;
                }
                self.responses = vec![best];
            }
            Step::Shuffle { seed } => {
                let mut rng = rng_for(*seed);
                self.responses.shuffle(&mut rng);
            }
            Step::Dropout { rate, seed } => {
                let mut rng = rng_for(*seed);
                let mut kept = Vec::new();
                let mut dropped = Vec::new();
                for r in std::mem::take(&mut self.responses) {
                    if rng.random::<f64>() < *rate {
                        dropped.push(r);
                    } else {
                        kept.push(r);
                    }
                }
                if kept.is_empty() && !dropped.is_empty() {
                    let k = rng.random_range(0..dropped.len());
                    kept.push(dropped.remove(k));
                }
                if !dropped.is_empty() {
                    rec.notes.push(format!(
                        "dropped {} of {} responses",
                        dropped.len(),
                        dropped.len() + kept.len()
                    ));
                }
                self.mark_dropped(&dropped);
                self.responses = kept;
            }
        }
    }

    fn model_of(&self, r: &Response) -> String {
        self.steps
            .get(r.step)
            .and_then(|s| s.calls.iter().find(|c| c.slot == r.slot))
            .map(|c| c.model.clone())
            .unwrap_or_default()
    }

    fn central_response(&self) -> usize {
        let texts: Vec<String> = self.responses.iter().map(|r| r.text.clone()).collect();
        agreement::score(self.scorer.as_ref(), &texts)
            .map_or(0, |a| agreement::most_central(&a.matrix))
    }

    fn mark_dropped(&mut self, dropped: &[Response]) {
        for d in dropped {
            if let Some(c) = self
                .steps
                .get_mut(d.step)
                .and_then(|s| s.calls.iter_mut().find(|c| c.slot == d.slot))
                && c.status == CallStatus::Ok
            {
                c.status = CallStatus::Dropped;
            }
        }
    }

    /// The step's final agreement. Embeddings take 0.03 to 0.5 s on CPU, so it is computed in
    /// the background, off the critical path: the next step starts at once, the Agreement event is
    /// sent when the score is ready, and the run record gets it before the run ends
    /// (`collect_scores`).
    fn score(&mut self, step: usize) {
        let own: Vec<&Response> = self.responses.iter().filter(|r| r.step == step).collect();
        if own.len() < 2 {
            return;
        }
        let texts: Vec<String> = own.iter().map(|r| r.text.clone()).collect();
        let slots: Vec<usize> = own.iter().map(|r| r.slot).collect();
        let scorer = self.scorer.clone();
        let ctx = self.ctx.clone();
        let run = self.run.clone();
        let handle = tokio::spawn(async move {
            // Scoring at the hand-off itself competed with sending the next step's requests (a
            // thread to start, then the work, on two cores): 0.5 ms more on that hand-off.
            tokio::time::sleep(SCORE_AFTER).await;
            let scored = tokio::task::spawn_blocking(move || {
                let a = agreement::score(scorer.as_ref(), &texts)?;
                ctx.emit(RunEvent::Agreement {
                    run,
                    step,
                    value: a.mean,
                    method: a.method.clone(),
                    slots,
                    matrix: a.matrix.clone(),
                    live: false,
                });
                Some(a)
            });
            scored.await.ok().flatten()
        });
        self.pending_scores.push((step, handle));
    }

    /// Put the background agreement scores into the step records.
    async fn collect_scores(&mut self) {
        for (step, handle) in std::mem::take(&mut self.pending_scores) {
            let Ok(Some(a)) = handle.await else { continue };
            if let Some(rec) = self.steps.get_mut(step) {
                rec.agreement = Some((a.mean * 1e4).round() / 1e4);
                rec.agreement_method = Some(a.method);
                rec.agreement_matrix = Some(
                    a.matrix
                        .iter()
                        .map(|row| row.iter().map(|v| (v * 1e4).round() / 1e4).collect())
                        .collect(),
                );
            }
        }
    }

    /// Shorten the responses going into `agent`'s call when they would overflow its context window.
    fn fit(
        &self,
        agent: &AgentSpec,
        template: &str,
        texts: &[String],
        rec: &mut StepRecord,
    ) -> Vec<String> {
        let Some(window) = self.ctx.registry.context_window(&agent.model) else {
            return texts.to_vec();
        };
        let skeleton = prompts::synthesis_messages(
            &self.conversation,
            agent.system.as_deref(),
            template,
            &vec![String::new(); texts.len()],
        );
        let overhead = estimate_message_tokens(&skeleton);
        let reserve = agent.max_tokens.map_or(1024, u64::from);
        let margin = window / 20;
        let budget_tokens = window.saturating_sub(overhead + reserve + margin);
        let budget_chars = (budget_tokens as usize * 4).max(64 * texts.len());
        let mut fitted = texts.to_vec();
        if let Some(cap) = prompts::fit_responses(&mut fitted, budget_chars) {
            let n = texts.iter().filter(|t| t.chars().count() > cap).count();
            if rec.shortened.is_none() {
                rec.notes.push(format!(
                    "the responses would overflow {}'s context of {window} tokens: {n} of them were shortened to {cap} characters each",
                    agent.model
                ));
            }
            rec.shortened = Some(Shortening {
                context_window: window,
                max_chars_per_response: cap,
                responses_shortened: n,
            });
        }
        fitted
    }

    async fn single_call(
        &self,
        step: usize,
        slot: usize,
        agent: &AgentSpec,
        messages: Vec<Message>,
        final_candidate: bool,
    ) -> CallRecord {
        let tag = self.tag(Stage::Step(step), slot, &agent.model);
        run_call(
            &self.ctx,
            tag,
            agent,
            messages,
            final_candidate,
            self.cancel.child_token(),
        )
        .await
    }

    /// Run jobs concurrently under the step's gate. Returns the successful responses in slot order;
    /// puts every call's record (late ones as placeholders, patched at the end) into `rec`.
    async fn run_calls(
        &mut self,
        step: usize,
        jobs: Vec<Job>,
        gate: Gate,
        rec: &mut StepRecord,
    ) -> Vec<Response> {
        let n = jobs.len();
        let token = self.cancel.child_token();
        let mut set: JoinSet<(usize, CallRecord)> = JoinSet::new();
        let mut placeholders = Vec::with_capacity(n);
        for job in jobs {
            let ctx = self.ctx.clone();
            let tag = self.tag(Stage::Step(step), job.slot, &job.agent.model);
            let t = token.child_token();
            placeholders.push(placeholder_of(&job.agent, job.slot));
            set.spawn(async move {
                let slot = job.slot;
                let fut = run_call(&ctx, tag, &job.agent, job.messages, job.final_candidate, t);
                match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => (slot, r),
                    Err(_) => {
                        let mut r = CallRecord {
                            status: CallStatus::Failed,
                            error: Some(
                                "internal error: the call panicked (please report this)".into(),
                            ),
                            error_kind: Some("internal".into()),
                            ..placeholder_of(&job.agent, slot)
                        };
                        r.slot = slot;
                        (slot, r)
                    }
                }
            });
        }
        let mut results: Vec<Option<CallRecord>> = vec![None; n];
        if n >= 2 {
            *self
                .ctx
                .partials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((step, vec![String::new(); n]));
        }
        let mut live = tokio::time::interval(LIVE_AGREEMENT_EVERY);
        live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let scoring = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut last_scored_len = 0usize;
        let deadline = gate
            .deadline_ms
            .map(|d| Instant::now() + Duration::from_millis(d));
        let mut deadline_passed = false;
        let mut ok = 0usize;
        let mut moved_on = None;
        while !set.is_empty() {
            if let Some(q) = gate.quorum
                && ok >= q.min(n)
            {
                moved_on = Some(format!("quorum of {q} reached"));
                break;
            }
            if deadline_passed && ok >= 1 {
                moved_on = Some(format!(
                    "deadline of {} ms passed with {ok} answer(s)",
                    gate.deadline_ms.unwrap_or_default()
                ));
                break;
            }
            tokio::select! {
                biased;
                r = set.join_next() => {
                    if let Some(Ok((slot, call))) = r {
                        if call.status == CallStatus::Ok {
                            ok += 1;
                        }
                        results[slot] = Some(call);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !deadline_passed => {
                    deadline_passed = true;
                }
                _ = live.tick(), if n >= 2 => {
                    self.live_agreement(step, &scoring, &mut last_scored_len);
                }
            }
        }
        *self
            .ctx
            .partials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        if let Some(why) = moved_on {
            let waiting = set.len();
            rec.notes.push(format!(
                "{why}: moved on without {waiting} call(s); they go on streaming until the final answer and are recorded as late"
            ));
            self.late.push(LateCalls { step, token, set });
        }
        let mut ok_responses = Vec::new();
        for (slot, r) in results.into_iter().enumerate() {
            let call = r.unwrap_or_else(|| placeholders[slot].clone());
            if call.status == CallStatus::Ok {
                ok_responses.push(Response {
                    step,
                    slot,
                    text: call.text.clone(),
                });
            }
            rec.calls.push(call);
        }
        ok_responses
    }

    /// Agreement of the partial answers, in the background; skipped while one is still being
    /// computed or when nothing new has streamed since the last one.
    fn live_agreement(
        &self,
        step: usize,
        busy: &Arc<std::sync::atomic::AtomicBool>,
        last_len: &mut usize,
    ) {
        use std::sync::atomic::Ordering;
        let (slots, texts): (Vec<usize>, Vec<String>) = {
            let g = self
                .ctx
                .partials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some((_, texts)) = g.as_ref() else { return };
            let total: usize = texts.iter().map(String::len).sum();
            if total == *last_len {
                return;
            }
            *last_len = total;
            texts
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.trim().is_empty())
                .map(|(i, t)| (i, t.clone()))
                .unzip()
        };
        if texts.len() < 2 || busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let scorer = self.scorer.clone();
        let ctx = self.ctx.clone();
        let run = self.run.clone();
        let busy = busy.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(a) = agreement::score(scorer.as_ref(), &texts) {
                ctx.emit(RunEvent::Agreement {
                    run,
                    step,
                    value: a.mean,
                    method: a.method,
                    slots,
                    matrix: a.matrix,
                    live: true,
                });
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Cancel calls still running after their step moved on, and record how each ended.
    async fn collect_late(&mut self) {
        for mut group in std::mem::take(&mut self.late) {
            group.token.cancel();
            while let Some(r) = group.set.join_next().await {
                let Ok((slot, mut call)) = r else { continue };
                if call.status == CallStatus::Ok {
                    call.status = CallStatus::Late;
                }
                if let Some(c) = self
                    .steps
                    .get_mut(group.step)
                    .and_then(|s| s.calls.iter_mut().find(|c| c.slot == slot))
                {
                    *c = call;
                }
            }
        }
    }
}

/// A step's final agreement is computed this long after the step ends, once the next step's
/// requests are out.
const SCORE_AFTER: Duration = Duration::from_millis(10);

/// Live agreement is recomputed at most this often while answers stream.
const LIVE_AGREEMENT_EVERY: Duration = Duration::from_millis(500);

fn placeholder_of(agent: &AgentSpec, slot: usize) -> CallRecord {
    CallRecord {
        top_p: agent.top_p,
        max_tokens: agent.max_tokens,
        ..CallRecord::empty(slot, &agent.model, agent.temperature, CallStatus::Cancelled)
    }
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::seed_from_u64(rand::random()),
    }
}

/// Read a judge's ranking: the last line saying "Ranking:", else the last line with '>', else every
/// number in the text. Returns all indices (0-based), best first, the unranked ones after in their
/// original order; None when no valid number was found.
pub fn parse_ranking(text: &str, n: usize) -> Option<Vec<usize>> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_lowercase().contains("ranking"))
        .or_else(|| text.lines().rev().find(|l| l.contains('>')))
        .unwrap_or(text);
    let mut order: Vec<usize> = Vec::new();
    for num in line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<usize>().ok())
    {
        if (1..=n).contains(&num) && !order.contains(&(num - 1)) {
            order.push(num - 1);
        }
    }
    if order.is_empty() {
        return None;
    }
    for k in 0..n {
        if !order.contains(&k) {
            order.push(k);
        }
    }
    Some(order)
}

/// Read a judge's pick: the last `[[k]]` with 1 <= k <= n, as a 0-based index.
///
/// One pass: a judge's output is model text of any length, and looking for the `]]` after every
/// `[[` (then parsing all between) made a megabyte of `[[` take minutes.
pub fn parse_choice(text: &str, n: usize) -> Option<usize> {
    // Longer than any usize in decimal, with room for spaces: nothing longer can be a pick.
    const MAX_INSIDE: usize = 32;
    let mut found = None;
    let mut from = 0;
    // The first `]]` at or after the current `[[`: searched again only once passed, so the text
    // is scanned for `]]` once in all.
    let mut close: Option<usize> = None;
    while let Some(p) = text[from..].find("[[") {
        let start = from + p + 2;
        if close.is_none_or(|c| c < start) {
            close = text[start..].find("]]").map(|c| start + c);
        }
        let Some(end) = close else { break };
        if end - start <= MAX_INSIDE
            && let Ok(k) = text[start..end].trim().parse::<usize>()
            && (1..=n).contains(&k)
        {
            found = Some(k - 1);
        }
        from = from + p + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings() {
        assert_eq!(
            parse_ranking(
                "Response 2 is best because of 3 facts.\nRanking: 2 > 3 > 1",
                3
            ),
            Some(vec![1, 2, 0])
        );
        assert_eq!(parse_ranking("I'd go 3 > 1", 3), Some(vec![2, 0, 1]));
        assert_eq!(
            parse_ranking("Ranking: [4] > [9] > [4]", 4),
            Some(vec![3, 0, 1, 2])
        );
        assert_eq!(parse_ranking("no idea", 3), None);
    }

    #[test]
    fn choices() {
        assert_eq!(parse_choice("Most say Paris. [[2]]", 3), Some(1));
        assert_eq!(parse_choice("[[1]] hmm, actually [[3]]", 3), Some(2));
        assert_eq!(parse_choice("[[7]]", 3), None);
        assert_eq!(parse_choice("[[A]]", 3), None);
        assert_eq!(parse_choice("[[[[2]]", 3), Some(1));
        assert_eq!(parse_choice("[[ 3 ]] é", 3), Some(2));
    }

    #[test]
    fn choices_are_read_in_linear_time() {
        let mut text = "[[".repeat(512 * 1024);
        text.push_str("[[2]]");
        let t = std::time::Instant::now();
        assert_eq!(parse_choice(&text, 3), Some(1));
        assert_eq!(parse_choice(&"[[".repeat(512 * 1024), 3), None);
        // Quadratic, this took minutes; linear, milliseconds (debug build, loaded machine: 2 s).
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }
}
