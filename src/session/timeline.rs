//! When things happened in a run, kept with it so that `moa replay` can play it back at its
//! recorded pace: when each step and call started and ended, how the text of each call arrived,
//! how the live agreement moved, and the notices and retries on the way.
//!
//! Pacing is coarse and bounded, so a session grows little: a call's text is sampled at most once
//! per `POINT_BYTES` and `POINT_MS` (plus the point before a stall, so pauses replay as pauses),
//! and replay interpolates between points. Live agreement is kept at most every
//! `AGREEMENT_EVERY_MS` per step. The points are stored as compact strings ("ms:bytes" deltas),
//! because sessions are pretty-printed JSON, where an array of numbers costs a line per number.
//!
//! `schedule` turns a saved run back into the engine's event stream, each event at its time; a
//! run saved before timelines existed gets one made from its calls' start, first-token and
//! latency times (an even pace within each call), and says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::record::{CallRecord, CallStatus, RunRecord};
use crate::engine::{CallTag, RunEvent, Stage};

use super::SessionRun;

/// A new pacing point needs this much new text...
const POINT_BYTES: usize = 256;
/// ...and this much time since the last point.
const POINT_MS: u64 = 250;
/// A pause between two chunks longer than this keeps the point before it.
const STALL_MS: u64 = 1000;
/// Live agreement values are kept at most this often per step.
const AGREEMENT_EVERY_MS: u64 = 2000;
/// Replay sends interpolated text about this often per streaming call.
const REPLAY_CHUNK_MS: u64 = 50;

/// What a session keeps of a run's timing (`SessionRun::timeline`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub v: u32,
    /// Milliseconds from the run's start to its end.
    pub end_ms: u64,
    /// "STEP START END" per step that started.
    pub steps: Vec<String>,
    /// "STAGE.SLOT START END ok|failed FINAL POINTS…", a point being "DT:DB": milliseconds and
    /// bytes of text since the previous point (the first since the call's start). STAGE is the
    /// step's index or `b` for the baseline; FINAL is 1 for the call whose answer is the run's.
    pub calls: Vec<String>,
    /// "STEP T live|final VALUE METHOD SLOTS UPPER": SLOTS and the upper triangle of the matrix
    /// comma-separated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agreement: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<TimedNotice>,
}

/// A notice or a retry, at its time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedNotice {
    pub t: u64,
    /// The step's index, or `b` for the baseline.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    /// For a retry: the attempt and the wait before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<(u32, u64)>,
    pub text: String,
}

fn stage_str(s: Stage) -> String {
    match s {
        Stage::Step(i) => i.to_string(),
        Stage::Baseline => "b".into(),
    }
}

fn parse_stage(s: &str) -> Option<Stage> {
    match s {
        "b" => Some(Stage::Baseline),
        n => n.parse().ok().map(Stage::Step),
    }
}

#[derive(Default)]
struct CallTrack {
    start: u64,
    end: Option<(u64, bool)>,
    final_candidate: bool,
    bytes: usize,
    /// The last point kept (ms, bytes), absolute.
    point: (u64, usize),
    /// The last chunk seen (ms, bytes), absolute.
    last: (u64, usize),
    pace: String,
}

impl CallTrack {
    fn push(&mut self, at: (u64, usize)) {
        let (dt, db) = (at.0.saturating_sub(self.point.0), at.1 - self.point.1);
        if !self.pace.is_empty() {
            self.pace.push(' ');
        }
        self.pace.push_str(&format!("{dt}:{db}"));
        self.point = at;
    }

    fn delta(&mut self, t: u64, len: usize) {
        let first = self.bytes == 0;
        if !first && t.saturating_sub(self.last.0) > STALL_MS && self.last != self.point {
            self.push(self.last);
        }
        self.bytes += len;
        self.last = (t, self.bytes);
        if first
            || (self.bytes - self.point.1 >= POINT_BYTES
                && t.saturating_sub(self.point.0) >= POINT_MS)
        {
            self.push(self.last);
        }
    }
}

/// Builds a run's timeline from its events as they arrive (the session recorder holds one).
pub struct TimelineRecorder {
    started: Instant,
    steps: Vec<(usize, u64, Option<u64>)>,
    calls: Vec<((Stage, usize), CallTrack)>,
    index: HashMap<(Stage, usize), usize>,
    agreement: Vec<String>,
    last_live: HashMap<usize, u64>,
    notices: Vec<TimedNotice>,
}

impl TimelineRecorder {
    pub fn new(started: Instant) -> Self {
        TimelineRecorder {
            started,
            steps: Vec::new(),
            calls: Vec::new(),
            index: HashMap::new(),
            agreement: Vec::new(),
            last_live: HashMap::new(),
            notices: Vec::new(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    fn call(&mut self, tag: &CallTag) -> Option<&mut CallTrack> {
        let i = *self.index.get(&(tag.stage, tag.slot))?;
        Some(&mut self.calls[i].1)
    }

    /// Note `ev`, which arrived at `now`.
    pub fn event(&mut self, ev: &RunEvent, now: Instant) {
        let t = self.ms(now);
        match ev {
            RunEvent::StepStarted { step, .. } => self.steps.push((*step, t, None)),
            RunEvent::StepDone { step, .. } => {
                if let Some(s) = self.steps.iter_mut().rev().find(|s| s.0 == *step) {
                    s.2 = Some(t);
                }
            }
            RunEvent::CallStarted {
                tag,
                final_candidate,
                ..
            } => {
                let key = (tag.stage, tag.slot);
                let track = CallTrack {
                    start: t,
                    final_candidate: *final_candidate,
                    point: (t, 0),
                    last: (t, 0),
                    ..Default::default()
                };
                // A call started again (a re-run) replaces the earlier one.
                match self.index.get(&key) {
                    Some(&i) => self.calls[i].1 = track,
                    None => {
                        self.index.insert(key, self.calls.len());
                        self.calls.push((key, track));
                    }
                }
            }
            RunEvent::Delta { tag, text } => {
                if let Some(c) = self.call(tag) {
                    c.delta(t, text.len());
                }
            }
            RunEvent::CallFinished { tag, .. } | RunEvent::CallFailed { tag, .. } => {
                let ok = matches!(ev, RunEvent::CallFinished { .. });
                if let Some(c) = self.call(tag) {
                    if c.last != c.point {
                        c.push(c.last);
                    }
                    c.end = Some((t, ok));
                }
            }
            RunEvent::Agreement {
                step,
                value,
                method,
                slots,
                matrix,
                live,
                ..
            } => {
                if *live {
                    if self
                        .last_live
                        .get(step)
                        .is_some_and(|l| t.saturating_sub(*l) < AGREEMENT_EVERY_MS)
                    {
                        return;
                    }
                    self.last_live.insert(*step, t);
                }
                self.agreement.push(agreement_line(
                    *step, t, *live, *value, method, slots, matrix,
                ));
            }
            RunEvent::Notice { stage, message, .. } if !message.is_empty() => {
                self.notices.push(TimedNotice {
                    t,
                    stage: stage_str(*stage),
                    slot: None,
                    retry: None,
                    text: message.clone(),
                })
            }
            RunEvent::Retrying {
                tag,
                attempt,
                delay_ms,
                reason,
            } => self.notices.push(TimedNotice {
                t,
                stage: stage_str(tag.stage),
                slot: Some(tag.slot),
                retry: Some((*attempt, *delay_ms)),
                text: reason.clone(),
            }),
            _ => {}
        }
    }

    /// The timeline so far; `now` ends the run (and whatever had not ended).
    pub fn timeline(&self, now: Instant) -> Timeline {
        let end = self.ms(now);
        Timeline {
            v: 1,
            end_ms: end,
            steps: self
                .steps
                .iter()
                .map(|(s, a, b)| format!("{s} {a} {}", b.unwrap_or(end)))
                .collect(),
            calls: self
                .calls
                .iter()
                .map(|((stage, slot), c)| {
                    let (e, ok) = c.end.unwrap_or((end, false));
                    let mut line = format!(
                        "{}.{slot} {} {e} {} {}",
                        stage_str(*stage),
                        c.start,
                        if ok { "ok" } else { "failed" },
                        u8::from(c.final_candidate)
                    );
                    if !c.pace.is_empty() {
                        line.push(' ');
                        line.push_str(&c.pace);
                    }
                    // A call still streaming: its last chunk so far.
                    if c.last != c.point {
                        let (dt, db) = (c.last.0.saturating_sub(c.point.0), c.last.1 - c.point.1);
                        line.push_str(&format!(" {dt}:{db}"));
                    }
                    line
                })
                .collect(),
            agreement: self.agreement.clone(),
            notices: self.notices.clone(),
        }
    }
}

fn agreement_line(
    step: usize,
    t: u64,
    live: bool,
    value: f64,
    method: &str,
    slots: &[usize],
    matrix: &[Vec<f64>],
) -> String {
    let slots: Vec<String> = slots.iter().map(usize::to_string).collect();
    let mut upper = Vec::new();
    for (i, row) in matrix.iter().enumerate() {
        for x in row.iter().skip(i + 1) {
            upper.push(format!("{x:.3}"));
        }
    }
    let method: String = method
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!(
        "{step} {t} {} {value:.4} {} {} {}",
        if live { "live" } else { "final" },
        if method.is_empty() { "-" } else { &method },
        if slots.is_empty() {
            "-".into()
        } else {
            slots.join(",")
        },
        if upper.is_empty() {
            "-".into()
        } else {
            upper.join(",")
        },
    )
}

/// One event of a replay, at its time in the recorded run.
#[derive(Clone, Debug)]
pub struct Timed {
    pub ms: u64,
    pub event: RunEvent,
}

/// A saved run as its events, in order, each at its time.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub events: Vec<Timed>,
    pub end_ms: u64,
    /// The run had no timeline (saved before they were kept): the pace is made up from each
    /// call's start, first-token and latency times.
    pub estimated: bool,
}

/// Where an event falls among events of the same millisecond: a run starts first and ends last;
/// within a stage, a step starts before its calls, text comes after its call started and before
/// it ended, and the step ends after its calls.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    StepStart,
    CallStart,
    Text,
    CallEnd,
    Agreement,
    Notice,
    StepEnd,
}

/// How events are ordered: time, then run start (0) / the rest (1) / run end (2), then the stage,
/// the phase within it, and the order they were made in.
type Order = (u64, u8, usize, Phase, usize);

/// When a call ran, how it ended, and whether its answer is the run's.
struct Span {
    start: u64,
    end: u64,
    ok: bool,
    final_candidate: bool,
}

struct Builder {
    run: Arc<str>,
    events: Vec<(Order, RunEvent)>,
}

impl Builder {
    fn push(&mut self, ms: u64, stage: Stage, phase: Phase, event: RunEvent) {
        let order = match stage {
            Stage::Step(i) => i,
            Stage::Baseline => usize::MAX,
        };
        let seq = self.events.len();
        self.events.push(((ms, 1, order, phase, seq), event));
    }

    /// A call's events: started, its text arriving through `points` (absolute ms, bytes; the
    /// text in between spread evenly), then finished or failed.
    fn call(&mut self, stage: Stage, record: &CallRecord, span: Span, points: &[(u64, usize)]) {
        let Span {
            start,
            end,
            ok,
            final_candidate,
        } = span;
        let tag = CallTag {
            run: self.run.clone(),
            stage,
            slot: record.slot,
            model: Arc::from(record.model.as_str()),
        };
        self.push(
            start,
            stage,
            Phase::CallStart,
            RunEvent::CallStarted {
                tag: tag.clone(),
                temperature: record.temperature,
                final_candidate,
            },
        );
        let text = record.text.as_str();
        let mut sent = 0usize;
        let mut prev: Option<(u64, usize)> = None;
        for &(t, b) in points {
            let (t, b) = (t.clamp(start, end.max(start)), b.min(text.len()));
            let steps = match prev {
                Some((pt, _)) => (t.saturating_sub(pt) / REPLAY_CHUNK_MS).max(1),
                None => 1,
            };
            let (pt, pb) = prev.unwrap_or((t, 0));
            for j in 1..=steps {
                let at = pt + (t - pt) * j / steps;
                let mut upto = if prev.is_none() {
                    b
                } else {
                    pb + (b.saturating_sub(pb)) * j as usize / steps as usize
                };
                while upto > sent && !text.is_char_boundary(upto) {
                    upto -= 1;
                }
                if upto > sent {
                    self.push(
                        at,
                        stage,
                        Phase::Text,
                        RunEvent::Delta {
                            tag: tag.clone(),
                            text: text[sent..upto].to_string(),
                        },
                    );
                    sent = upto;
                }
            }
            prev = Some((t, b));
        }
        let record = record.clone();
        let event = if ok {
            RunEvent::CallFinished { tag, record }
        } else {
            RunEvent::CallFailed { tag, record }
        };
        self.push(end.max(start), stage, Phase::CallEnd, event);
    }
}

/// The record of a call of a stage.
fn call_record(record: &RunRecord, stage: Stage, slot: usize) -> Option<&CallRecord> {
    match stage {
        Stage::Step(i) => record.steps.get(i)?.calls.iter().find(|c| c.slot == slot),
        Stage::Baseline => record.baseline.as_ref().filter(|c| c.slot == slot),
    }
}

fn parse_points(start: u64, words: &[&str]) -> Option<Vec<(u64, usize)>> {
    let (mut t, mut b) = (start, 0usize);
    words
        .iter()
        .map(|w| {
            let (dt, db) = w.split_once(':')?;
            t = t.checked_add(dt.parse().ok()?)?;
            b = b.checked_add(db.parse().ok()?)?;
            Some((t, b))
        })
        .collect()
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    if s == "-" {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

/// The event stream of saved run `run`, each event at its recorded time.
pub fn schedule(run: &SessionRun) -> Schedule {
    match run.timeline.as_ref().and_then(|t| recorded(run, t)) {
        Some(s) => s,
        None => estimated(run),
    }
}

fn builder(run: &SessionRun) -> Builder {
    let mut b = Builder {
        run: Arc::from(run.record.id.as_str()),
        events: Vec::new(),
    };
    b.events.push((
        (0, 0, 0, Phase::StepStart, 0),
        RunEvent::RunStarted {
            run: b.run.clone(),
            preset: run.preset.name.clone(),
            ops: run.preset.steps.iter().map(|s| s.op()).collect(),
        },
    ));
    b
}

fn step_events(b: &mut Builder, run: &SessionRun, step: usize, start: u64, end: u64) {
    let Some(rec) = run.record.steps.get(step) else {
        return;
    };
    let op = run.preset.steps.get(step).map_or("step", |s| s.op());
    b.push(
        start,
        Stage::Step(step),
        Phase::StepStart,
        RunEvent::StepStarted {
            run: b.run.clone(),
            step,
            op,
        },
    );
    b.push(
        end,
        Stage::Step(step),
        Phase::StepEnd,
        RunEvent::StepDone {
            run: b.run.clone(),
            step,
            record: rec.clone(),
        },
    );
}

fn finish(mut b: Builder, run: &SessionRun, end_ms: u64, estimated: bool) -> Schedule {
    let end_ms = end_ms.max(b.events.iter().map(|e| e.0.0).max().unwrap_or(0));
    b.events.push((
        (end_ms, 2, 0, Phase::StepEnd, 0),
        RunEvent::RunDone {
            record: Box::new(run.record.clone()),
        },
    ));
    b.events.sort_by_key(|e| e.0);
    Schedule {
        events: b
            .events
            .into_iter()
            .map(|(k, event)| Timed { ms: k.0, event })
            .collect(),
        end_ms,
        estimated,
    }
}

/// From the timeline the session kept; None when it does not fit the record (edited, damaged).
fn recorded(run: &SessionRun, tl: &Timeline) -> Option<Schedule> {
    let mut b = builder(run);
    for line in &tl.steps {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [step, start, end] = w[..] else {
            return None;
        };
        step_events(
            &mut b,
            run,
            step.parse().ok()?,
            start.parse().ok()?,
            end.parse().ok()?,
        );
    }
    for line in &tl.calls {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 5 {
            return None;
        }
        let (stage, slot) = w[0].split_once('.')?;
        let stage = parse_stage(stage)?;
        let slot: usize = slot.parse().ok()?;
        let (start, end): (u64, u64) = (w[1].parse().ok()?, w[2].parse().ok()?);
        let ok = w[3] == "ok";
        let final_candidate = w[4] == "1";
        let points = parse_points(start, &w[5..])?;
        // A call the record does not have (the run was cut short) has nothing to show.
        let Some(record) = call_record(&run.record, stage, slot) else {
            continue;
        };
        let span = Span {
            start,
            end,
            ok,
            final_candidate,
        };
        b.call(stage, record, span, &points);
    }
    for line in &tl.agreement {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [step, t, live, value, method, slots, upper] = w[..] else {
            return None;
        };
        let slots: Vec<usize> = parse_list(slots)?;
        let upper: Vec<f64> = parse_list(upper)?;
        let n = slots.len();
        let mut matrix = vec![vec![1.0; n]; n];
        let mut it = upper.into_iter();
        for (i, j) in (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))) {
            let x = it.next()?;
            matrix[i][j] = x;
            matrix[j][i] = x;
        }
        let step: usize = step.parse().ok()?;
        b.push(
            t.parse().ok()?,
            Stage::Step(step),
            Phase::Agreement,
            RunEvent::Agreement {
                run: b.run.clone(),
                step,
                value: value.parse().ok()?,
                method: if method == "-" {
                    String::new()
                } else {
                    method.into()
                },
                slots,
                matrix,
                live: live == "live",
            },
        );
    }
    for n in &tl.notices {
        let stage = parse_stage(&n.stage)?;
        let event = match (n.slot, n.retry) {
            (Some(slot), Some((attempt, delay_ms))) => RunEvent::Retrying {
                tag: CallTag {
                    run: b.run.clone(),
                    stage,
                    slot,
                    model: Arc::from(
                        call_record(&run.record, stage, slot).map_or("", |c| c.model.as_str()),
                    ),
                },
                attempt,
                delay_ms,
                reason: n.text.clone(),
            },
            _ => RunEvent::Notice {
                run: b.run.clone(),
                stage,
                message: n.text.clone(),
            },
        };
        b.push(n.t, stage, Phase::Notice, event);
    }
    Some(finish(b, run, tl.end_ms, false))
}

/// Made up from the calls' own times: each step starts when the one before ended, each call at
/// its start time, its text at an even pace from its first token to its end.
fn estimated(run: &SessionRun) -> Schedule {
    let mut b = builder(run);
    let rec = &run.record;
    let mut at = 0u64;
    let last_llm = rec.steps.iter().rposition(|s| !s.calls.is_empty());
    for (i, step) in rec.steps.iter().enumerate() {
        let start = step
            .calls
            .iter()
            .map(|c| c.start_ms)
            .min()
            .unwrap_or(at)
            .max(at);
        let end = start + step.wall_ms;
        step_events(&mut b, run, i, start, end);
        for c in &step.calls {
            let fin = Some(i) == last_llm && step.calls.len() == 1;
            estimated_call(&mut b, Stage::Step(i), c, c.start_ms.max(start), fin);
        }
        if let (Some(value), Some(matrix)) = (step.agreement, step.agreement_matrix.as_ref()) {
            let slots = step
                .calls
                .iter()
                .filter(|c| matches!(c.status, CallStatus::Ok | CallStatus::Dropped))
                .map(|c| c.slot)
                .take(matrix.len())
                .collect();
            b.push(
                end,
                Stage::Step(i),
                Phase::Agreement,
                RunEvent::Agreement {
                    run: b.run.clone(),
                    step: i,
                    value,
                    method: step.agreement_method.clone().unwrap_or_default(),
                    slots,
                    matrix: matrix.clone(),
                    live: false,
                },
            );
        }
        at = end;
    }
    if let Some(c) = rec.baseline.as_ref() {
        estimated_call(&mut b, Stage::Baseline, c, c.start_ms, false);
    }
    finish(b, run, rec.wall_ms, true)
}

fn estimated_call(b: &mut Builder, stage: Stage, c: &CallRecord, start: u64, fin: bool) {
    let end = start + c.latency_ms;
    let first = start + c.ttft_ms.unwrap_or(c.latency_ms).min(c.latency_ms);
    let len = c.text.len();
    let mut points = Vec::new();
    if len > 0 {
        // The first chunk is about a token; the rest arrives evenly until the end.
        let mut head = len.min(4);
        while !c.text.is_char_boundary(head) {
            head += 1;
        }
        points.push((first, head));
        points.push((end, len));
    }
    let ok = matches!(
        c.status,
        CallStatus::Ok | CallStatus::Late | CallStatus::Dropped
    );
    let span = Span {
        start,
        end,
        ok,
        final_candidate: fin,
    };
    b.call(stage, c, span, &points);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tag(stage: Stage, slot: usize) -> CallTag {
        CallTag {
            run: Arc::from("r"),
            stage,
            slot,
            model: Arc::from("m"),
        }
    }

    #[test]
    fn pace_is_sampled_coarsely_and_keeps_stalls() {
        let t0 = Instant::now();
        let mut r = TimelineRecorder::new(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let tg = tag(Stage::Step(0), 0);
        r.event(
            &RunEvent::CallStarted {
                tag: tg.clone(),
                temperature: None,
                final_candidate: false,
            },
            at(10),
        );
        // 100 chunks of 10 bytes every 20 ms, then a 3 s stall, then 10 more.
        let mut t = 200;
        for _ in 0..100 {
            r.event(
                &RunEvent::Delta {
                    tag: tg.clone(),
                    text: "x".repeat(10),
                },
                at(t),
            );
            t += 20;
        }
        t += 3000;
        for _ in 0..10 {
            r.event(
                &RunEvent::Delta {
                    tag: tg.clone(),
                    text: "y".repeat(10),
                },
                at(t),
            );
            t += 20;
        }
        let tl = r.timeline(at(t + 5));
        let line = &tl.calls[0];
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&w[..5], ["0.0", "10", &(t + 5).to_string(), "failed", "0"]);
        let points = parse_points(10, &w[5..]).unwrap();
        // First token at 200 ms with its 10 bytes; then about one point per 256 bytes.
        assert_eq!(points[0], (200, 10));
        assert!(points.len() <= 1100 / 256 + 4, "{points:?}");
        // The last chunk before the stall is a point, so the stall replays as a stall.
        assert!(points.contains(&(200 + 99 * 20, 1000)), "{points:?}");
        assert_eq!(points.last().unwrap().1, 1100);
    }

    /// A 6-proposer, 3-layer run with 2,000-byte answers streamed 4 bytes every 20 ms (a slow
    /// stream, where the byte rule decides the points) and a 3,000-byte aggregation.
    fn long_run() -> SessionRun {
        use crate::engine::preset::{AgentSpec, Preset};
        use crate::engine::record::{FinalAnswer, RUN_SCHEMA, StepRecord};
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rec = TimelineRecorder::new(t0);
        let words = "Paris is the capital of France; `fn main() {}` and more words here. ";
        let answer = |n: usize| words.repeat(n / words.len() + 1)[..n].to_string();
        let mut steps = Vec::new();
        let mut t = 0u64;
        for (layer, (n_calls, len)) in [(6, 2000), (6, 2000), (6, 2000), (1, 3000)]
            .iter()
            .enumerate()
        {
            rec.event(
                &RunEvent::StepStarted {
                    run: Arc::from("r"),
                    step: layer,
                    op: "propose",
                },
                at(t),
            );
            let mut calls = Vec::new();
            let mut end = t;
            for slot in 0..*n_calls {
                let tg = tag(Stage::Step(layer), slot);
                rec.event(
                    &RunEvent::CallStarted {
                        tag: tg.clone(),
                        temperature: Some(0.7),
                        final_candidate: layer == 3,
                    },
                    at(t),
                );
                let text = answer(*len);
                let mut ct = t + 300 + slot as u64 * 7;
                for piece in text.as_bytes().chunks(4) {
                    rec.event(
                        &RunEvent::Delta {
                            tag: tg.clone(),
                            text: String::from_utf8(piece.to_vec()).unwrap(),
                        },
                        at(ct),
                    );
                    ct += 20;
                }
                let mut c =
                    CallRecord::empty(slot, "groq/llama-3.1-8b-instant", Some(0.7), CallStatus::Ok);
                c.text = text;
                c.ttft_ms = Some(300);
                c.latency_ms = ct - t;
                c.start_ms = t;
                c.tokens_in = 400;
                c.tokens_out = 500;
                c.cost_usd = Some(0.0001);
                c.finish_reason = Some("stop".into());
                rec.event(
                    &RunEvent::CallFinished {
                        tag: tg,
                        record: c.clone(),
                    },
                    at(ct),
                );
                end = end.max(ct);
                calls.push(c);
            }
            steps.push(StepRecord {
                op: if layer == 3 { "aggregate" } else { "propose" }.into(),
                agreement: Some(0.8),
                agreement_method: Some("minilm".into()),
                agreement_matrix: None,
                responses: (0..*n_calls).map(|k| [layer, k]).collect(),
                calls,
                shortened: None,
                notes: Vec::new(),
                wall_ms: end - t,
            });
            rec.event(
                &RunEvent::StepDone {
                    run: Arc::from("r"),
                    step: layer,
                    record: steps.last().unwrap().clone(),
                },
                at(end),
            );
            t = end;
        }
        let record = RunRecord {
            schema: RUN_SCHEMA.into(),
            id: "r".into(),
            created: "2026-12-02T00:00:00Z".into(),
            preset: "p".into(),
            messages: vec![crate::provider::Message::user(
                "What is the capital of France?",
            )],
            final_answer: Some(FinalAnswer {
                text: steps[3].calls[0].text.clone(),
                source: "aggregate".into(),
                status: CallStatus::Ok,
            }),
            steps,
            baseline: None,
            wall_ms: t,
            usage: Default::default(),
            cancelled: false,
        };
        let mut run = SessionRun::new(
            Preset::single("p", AgentSpec::model("groq/llama-3.1-8b-instant")),
            record,
            crate::session::RunKind::Run,
            Vec::new(),
        );
        run.timeline = Some(rec.timeline(at(t)));
        run
    }

    #[test]
    fn a_long_run_grows_its_session_by_at_most_a_tenth() {
        let run = long_run();
        let mut without = run.clone();
        without.timeline = None;
        let size = |r: &SessionRun| serde_json::to_vec_pretty(r).unwrap().len();
        let (a, b) = (size(&without), size(&run));
        let growth = b as f64 / a as f64 - 1.0;
        eprintln!(
            "session run: {a} bytes without the timeline, {b} with: +{:.1} %",
            growth * 100.0
        );
        assert!(growth <= 0.10, "+{:.1} %", growth * 100.0);
    }

    #[test]
    fn a_recorded_run_replays_in_order_with_all_its_text() {
        let run = long_run();
        let s = schedule(&run);
        assert!(!s.estimated);
        // Times never go back; every call's text arrives whole, after it started, before it ended.
        assert!(s.events.windows(2).all(|w| w[0].ms <= w[1].ms));
        let mut text: HashMap<(Stage, usize), String> = HashMap::new();
        let mut open: HashMap<(Stage, usize), bool> = HashMap::new();
        for t in &s.events {
            match &t.event {
                RunEvent::CallStarted { tag, .. } => {
                    open.insert((tag.stage, tag.slot), true);
                }
                RunEvent::Delta { tag, text: d } => {
                    assert_eq!(open.get(&(tag.stage, tag.slot)), Some(&true));
                    text.entry((tag.stage, tag.slot)).or_default().push_str(d);
                }
                RunEvent::CallFinished { tag, record } => {
                    open.insert((tag.stage, tag.slot), false);
                    assert_eq!(text[&(tag.stage, tag.slot)], record.text);
                }
                _ => {}
            }
        }
        assert_eq!(text.len(), 19);
        assert!(matches!(
            s.events.first().unwrap().event,
            RunEvent::RunStarted { .. }
        ));
        assert!(matches!(
            s.events.last().unwrap().event,
            RunEvent::RunDone { .. }
        ));
        // The first token of the first proposer comes 300 ms in, as recorded.
        let first = s
            .events
            .iter()
            .find(|t| matches!(t.event, RunEvent::Delta { .. }))
            .unwrap();
        assert_eq!(first.ms, 300);
    }
}
