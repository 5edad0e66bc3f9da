//! Drives one provider call: limits, retries (before the first token only), the four timeouts,
//! cancellation, usage estimation and cost. Reports through events and returns the call's record.

use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{CallTag, RunEvent};
use super::preset::AgentSpec;
use super::prompts::{estimate_message_tokens, estimate_tokens};
use super::record::{CallRecord, CallStatus};
use crate::config::Config;
use crate::provider::cache::CachedAnswer;
use crate::provider::limits::backoff;
use crate::provider::registry::Registry;
use crate::provider::{ChatRequest, Chunk, Message, ProviderError};

/// What every call of a run shares.
pub struct CallContext {
    pub registry: Arc<Registry>,
    pub events: UnboundedSender<RunEvent>,
    pub run_start: Instant,
    /// Text streamed so far by each call of the running concurrent step, by slot, for live
    /// agreement. None outside such steps.
    pub partials: std::sync::Mutex<Option<(usize, Vec<String>)>>,
}

impl CallContext {
    fn config(&self) -> &Config {
        self.registry.config()
    }
    fn record_partial(&self, tag: &CallTag, piece: &str) {
        if let (super::Stage::Step(step), Ok(mut g)) = (tag.stage, self.partials.lock())
            && let Some((s, texts)) = g.as_mut()
            && *s == step
            && let Some(t) = texts.get_mut(tag.slot)
        {
            t.push_str(piece);
        }
    }

    pub fn emit(&self, ev: RunEvent) {
        // A consumer that went away (closed TUI) must not stop the run.
        let _ = self.events.send(ev);
    }
}

/// An answer may not grow past this many bytes per allowed token (or 4 MiB without max_tokens):
/// a server that ignores max_tokens cannot exhaust memory.
const BYTES_PER_TOKEN_CAP: usize = 64;
const UNBOUNDED_CAP: usize = 4 << 20;

enum Outcome {
    Done,
    Failed(ProviderError),
    TimedOut(&'static str, String),
    Cancelled,
    Capped,
}

pub async fn run_call(
    ctx: &CallContext,
    tag: CallTag,
    agent: &AgentSpec,
    messages: Vec<Message>,
    final_candidate: bool,
    cancel: CancellationToken,
) -> CallRecord {
    let started = Instant::now();
    let mut rec = CallRecord {
        top_p: agent.top_p,
        max_tokens: agent.max_tokens,
        start_ms: started.duration_since(ctx.run_start).as_millis() as u64,
        ..CallRecord::empty(tag.slot, &agent.model, agent.temperature, CallStatus::Ok)
    };
    ctx.emit(RunEvent::CallStarted {
        tag: tag.clone(),
        temperature: agent.temperature,
        final_candidate,
    });
    let est_in = estimate_message_tokens(&messages);
    let (handle, model_name) = match ctx.registry.get(&agent.model) {
        Ok(x) => x,
        Err(e) => {
            return finish(ctx, tag, rec, started, Outcome::Failed(e), None, est_in);
        }
    };
    let timeouts = handle.settings.timeouts;
    let total_deadline = started + timeouts.total;
    let req = ChatRequest {
        model: model_name,
        messages,
        temperature: agent.temperature,
        top_p: agent.top_p,
        max_tokens: agent.max_tokens,
        seed: agent.seed,
        top_k: agent.top_k,
        repeat_penalty: agent.repeat_penalty,
    };
    // A look-up is bounded (Redis' deadline, one embedding), but a cancelled run (a client gone
    // from `moa serve`) must not wait even for that.
    let looked = match ctx.registry.cache() {
        Some(cache) => tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return finish(ctx, tag, rec, started, Outcome::Cancelled, None, est_in);
            }
            r = cache.lookup(&handle.settings, &req, tag.slot) => Some(r),
        },
        None => None,
    };
    let pending = match looked {
        Some(looked) => match looked {
            Ok(hit) => {
                // Shown as one chunk: the answer is whole, and nothing was sent.
                rec.ttft_ms = Some(0);
                rec.text = hit.text;
                rec.finish_reason = hit.finish_reason;
                rec.usage_estimated = hit.usage_estimated;
                rec.cached = true;
                ctx.record_partial(&tag, &rec.text);
                ctx.emit(RunEvent::Delta {
                    tag: tag.clone(),
                    text: rec.text.clone(),
                });
                let usage = Some((hit.tokens_in, hit.tokens_out));
                return finish(ctx, tag, rec, started, Outcome::Done, usage, est_in);
            }
            Err(pending) => Some(pending),
        },
        None => None,
    };
    let cap = agent.max_tokens.map_or(UNBOUNDED_CAP, |m| {
        (m as usize).saturating_mul(BYTES_PER_TOKEN_CAP).max(4096)
    });
    let mut usage: Option<(u64, u64)> = None;
    let mut attempt: u32 = 0;
    // Made once for the call: a fresh one for every chunk was put on the token's waiter list and
    // taken off it again, under its lock.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let outcome = 'attempts: loop {
        let mut permit = tokio::select! {
            biased;
            _ = &mut cancelled => break Outcome::Cancelled,
            _ = tokio::time::sleep_until(total_deadline) => break Outcome::TimedOut("total_timeout", format!("no answer within the total timeout of {} (timeout_total_ms)", secs(timeouts.total))),
            p = handle.limits.acquire() => p,
        };
        let sent = Instant::now();
        let first_deadline = (sent + timeouts.first_token).min(total_deadline);
        // The answer is polled before the deadline: when moa itself stalled (Ctrl-Z, a laptop
        // asleep), a reply already waiting must win over a timer that expired meanwhile.
        let opened = tokio::select! {
            biased;
            _ = &mut cancelled => break Outcome::Cancelled,
            r = handle.provider.open(req.clone()) => r,
            _ = tokio::time::sleep_until(first_deadline) => break first_token_timeout(&timeouts, total_deadline, first_deadline),
        };
        permit.opened();
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                drop(permit);
                if e.is_retryable() && attempt < handle.settings.max_retries {
                    let delay = backoff(attempt, e.retry_after());
                    if Instant::now() + delay < total_deadline {
                        attempt += 1;
                        rec.retries = attempt;
                        ctx.emit(RunEvent::Retrying {
                            tag: tag.clone(),
                            attempt,
                            delay_ms: delay.as_millis() as u64,
                            reason: e.to_string(),
                        });
                        tokio::select! {
                            biased;
                            _ = &mut cancelled => break Outcome::Cancelled,
                            _ = tokio::time::sleep(delay) => continue 'attempts,
                        }
                    }
                }
                break Outcome::Failed(e);
            }
        };
        // Streaming. Deadlines: first token (from sending), then idle between chunks, and total.
        let mut last = Instant::now();
        // One timer for the stream, never later than the deadline and moved on only when it fires
        // early: the idle deadline moves with every chunk, and resetting a timer for each (out of
        // the timer wheel and back in) was a good part of what a streamed token cost.
        let timer = tokio::time::sleep_until(first_deadline);
        tokio::pin!(timer);
        loop {
            let deadline = if rec.ttft_ms.is_none() {
                first_deadline
            } else {
                (last + timeouts.idle).min(total_deadline)
            };
            if deadline < timer.deadline() {
                // After the first token the idle deadline can be nearer than the first token's.
                timer.as_mut().reset(deadline);
            }
            if Instant::now() >= total_deadline {
                // Checked here too: with the stream polled first, a provider that always has data
                // ready would otherwise never meet the total deadline.
                break 'attempts Outcome::TimedOut(
                    "total_timeout",
                    format!(
                        "the answer was cut off by the total timeout of {} (timeout_total_ms)",
                        secs(timeouts.total)
                    ),
                );
            }
            // The stream is polled before the deadline, and once more after it fired: the idle and
            // first-token deadlines are about the provider, and data already waiting in the socket
            // means moa stalled (a pager nobody reads, Ctrl-Z, sleep), not the provider.
            let next = tokio::select! {
                biased;
                _ = &mut cancelled => break 'attempts Outcome::Cancelled,
                n = stream.next() => n,
                _ = &mut timer => {
                    if Instant::now() < deadline {
                        // Fired for a deadline that has moved on since it was set.
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    match waiting(&mut stream).await {
                        Some(n) => n,
                        None if rec.ttft_ms.is_none() => {
                            break 'attempts first_token_timeout(&timeouts, total_deadline, first_deadline);
                        }
                        None if deadline == total_deadline => {
                            break 'attempts Outcome::TimedOut("total_timeout", format!("the answer was cut off by the total timeout of {} (timeout_total_ms)", secs(timeouts.total)));
                        }
                        None => {
                            break 'attempts Outcome::TimedOut("idle_timeout", format!("the provider went silent for {} s mid-answer (timeout_idle_ms)", secs(timeouts.idle)));
                        }
                    }
                }
            };
            last = Instant::now();
            match next {
                None => break 'attempts Outcome::Done,
                Some(Ok(Chunk::Text(mut piece))) => {
                    if rec.ttft_ms.is_none() {
                        rec.ttft_ms = Some(started.elapsed().as_millis() as u64);
                    }
                    let room = cap.saturating_sub(rec.text.len());
                    let capped = piece.len() > room;
                    if capped {
                        piece.truncate(piece.floor_char_boundary(room));
                    }
                    rec.text.push_str(&piece);
                    if !piece.is_empty() {
                        ctx.record_partial(&tag, &piece);
                        // The chunk's own text travels on: no copy per token.
                        ctx.emit(RunEvent::Delta {
                            tag: tag.clone(),
                            text: piece,
                        });
                    }
                    if capped {
                        break 'attempts Outcome::Capped;
                    }
                }
                Some(Ok(Chunk::Usage {
                    tokens_in,
                    tokens_out,
                })) => usage = Some((tokens_in, tokens_out)),
                Some(Ok(Chunk::Finish(r))) => rec.finish_reason = Some(r),
                Some(Err(e)) => {
                    // Nothing was shown yet: a retryable error may still be retried.
                    if rec.text.is_empty()
                        && e.is_retryable()
                        && attempt < handle.settings.max_retries
                    {
                        drop(stream);
                        drop(permit);
                        let delay = backoff(attempt, e.retry_after());
                        attempt += 1;
                        rec.retries = attempt;
                        ctx.emit(RunEvent::Retrying {
                            tag: tag.clone(),
                            attempt,
                            delay_ms: delay.as_millis() as u64,
                            reason: e.to_string(),
                        });
                        tokio::select! {
                            biased;
                            _ = &mut cancelled => break 'attempts Outcome::Cancelled,
                            _ = tokio::time::sleep(delay) => continue 'attempts,
                        }
                    }
                    break 'attempts Outcome::Failed(e);
                }
            }
        }
    };
    let rec = finish(ctx, tag, rec, started, outcome, usage, est_in);
    // Only whole answers are worth giving again: not a failed, cut or capped one.
    if let (Some(cache), Some(pending)) = (ctx.registry.cache(), pending)
        && rec.status == CallStatus::Ok
        && rec.finish_reason.as_deref().is_some_and(|r| r != "capped")
    {
        cache
            .store(
                pending,
                CachedAnswer {
                    key: String::new(),
                    text: rec.text.clone(),
                    tokens_in: rec.tokens_in,
                    tokens_out: rec.tokens_out,
                    usage_estimated: rec.usage_estimated,
                    finish_reason: rec.finish_reason.clone(),
                    stored_at: 0,
                },
            )
            .await;
    }
    rec
}

/// What the stream has ready without waiting, after the runtime had a turn to see the socket (a
/// yielded task runs after the I/O driver is polled): None when nothing is there.
async fn waiting(
    stream: &mut crate::provider::ChunkStream,
) -> Option<Option<Result<Chunk, ProviderError>>> {
    tokio::task::yield_now().await;
    futures::FutureExt::now_or_never(stream.next())
}

fn first_token_timeout(
    t: &crate::config::Timeouts,
    total_deadline: Instant,
    first_deadline: Instant,
) -> Outcome {
    if first_deadline >= total_deadline {
        Outcome::TimedOut(
            "total_timeout",
            format!(
                "no answer within the total timeout of {} (timeout_total_ms)",
                secs(t.total)
            ),
        )
    } else {
        Outcome::TimedOut(
            "first_token_timeout",
            format!(
                "no first token within {} (timeout_first_token_ms); the server accepted the request but never answered",
                secs(t.first_token)
            ),
        )
    }
}

fn finish(
    ctx: &CallContext,
    tag: CallTag,
    mut rec: CallRecord,
    started: Instant,
    outcome: Outcome,
    usage: Option<(u64, u64)>,
    est_in: u64,
) -> CallRecord {
    rec.latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Done => {}
        Outcome::Capped => {
            rec.finish_reason = Some("capped".into());
        }
        Outcome::Cancelled => {
            rec.status = CallStatus::Cancelled;
            rec.error = Some("cancelled".into());
            rec.error_kind = Some("cancelled".into());
        }
        Outcome::TimedOut(kind, msg) => {
            rec.status = CallStatus::Timeout;
            rec.error = Some(msg);
            rec.error_kind = Some(kind.into());
        }
        Outcome::Failed(e) => {
            rec.status = CallStatus::Failed;
            rec.error_kind = Some(e.kind().into());
            rec.error = Some(e.to_string());
        }
    }
    if rec.status == CallStatus::Ok && rec.text.is_empty() {
        rec.status = CallStatus::Failed;
        rec.error_kind = Some("empty".into());
        rec.error = Some("the model returned an empty answer".into());
    }
    match usage {
        Some((i, o)) if i + o > 0 => {
            rec.tokens_in = i;
            rec.tokens_out = o;
        }
        _ => {
            // No usage reported: estimate, and say so. A call that never reached the model costs nothing.
            let reached = rec.ttft_ms.is_some();
            rec.tokens_in = if reached { est_in } else { 0 };
            rec.tokens_out = estimate_tokens(&rec.text);
            rec.usage_estimated = reached;
        }
    }
    let provider_is_local = ctx
        .config()
        .resolve(&rec.model)
        .is_ok_and(|(p, _)| p.kind == crate::config::ProviderKind::Local);
    rec.cost_usd = match ctx.config().price(&rec.model) {
        Some(p) => Some(
            rec.tokens_in as f64 * p.input_per_mtok / 1e6
                + rec.tokens_out as f64 * p.output_per_mtok / 1e6,
        ),
        None if provider_is_local => Some(0.0),
        None => None,
    };
    let ev = if rec.status == CallStatus::Ok {
        RunEvent::CallFinished {
            tag,
            record: rec.clone(),
        }
    } else {
        RunEvent::CallFailed {
            tag,
            record: rec.clone(),
        }
    };
    ctx.emit(ev);
    rec
}

/// How long since `t`, in whole milliseconds.
pub fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// A timeout as people read it: "600 ms", "2.5 s", "30 s".
fn secs(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
