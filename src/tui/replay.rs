//! `moa replay`: the workbench plays a saved run back as it happened. The run's events come from
//! its timeline (`session::timeline::schedule`), not from any provider: no key, no network, no
//! cost. A clock of recorded time (which pauses and runs faster or slower) paces them; the loop
//! draws with that clock, so latency bars grow as they did. Space pauses, `+`/`-` change the
//! speed, End (or Esc) jumps to the finish; then the session is open as usual.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{App, RunMode};
use super::update::{Effect, Msg};
use crate::session::timeline::Schedule;

/// The speeds `+` and `-` step through.
pub const SPEEDS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// What the screen shows of a replay under way.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayView {
    /// Which run of how many in the session (1-based, for people).
    pub run: usize,
    pub runs: usize,
    pub speed: f64,
    pub paused: bool,
    /// The session had no timeline for this run: the pace is made up.
    pub estimated: bool,
    pub at_ms: u64,
    pub end_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    Pause,
    Faster,
    Slower,
    End,
}

struct ClockState {
    /// Recorded time at `anchor`.
    at_ms: f64,
    anchor: Instant,
    speed: f64,
    paused: bool,
    end_ms: u64,
    to_end: bool,
}

/// Recorded time, running at `speed` from where it was when last changed.
#[derive(Clone)]
pub struct Clock {
    state: Arc<Mutex<ClockState>>,
    changed: Arc<Notify>,
}

impl Clock {
    pub fn new(speed: f64, end_ms: u64) -> Clock {
        Clock {
            state: Arc::new(Mutex::new(ClockState {
                at_ms: 0.0,
                anchor: Instant::now(),
                speed,
                paused: false,
                end_ms,
                to_end: false,
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn at(s: &ClockState) -> f64 {
        if s.to_end {
            return s.end_ms as f64;
        }
        if s.paused {
            return s.at_ms;
        }
        (s.at_ms + s.anchor.elapsed().as_secs_f64() * 1000.0 * s.speed).min(s.end_ms as f64)
    }

    /// Milliseconds of the recorded run played so far.
    pub fn now_ms(&self) -> f64 {
        Self::at(&self.lock())
    }

    /// Pause or resume, change the speed or jump to the end; the speed and pause as they are now.
    pub fn control(&self, c: Control) -> (f64, bool) {
        let mut s = self.lock();
        s.at_ms = Self::at(&s);
        s.anchor = Instant::now();
        match c {
            Control::Pause => s.paused = !s.paused,
            Control::Faster => s.speed = step_speed(s.speed, 1),
            Control::Slower => s.speed = step_speed(s.speed, -1),
            Control::End => s.to_end = true,
        }
        let out = (s.speed, s.paused);
        drop(s);
        self.changed.notify_waiters();
        out
    }
}

/// The next speed up or down from `speed` in `SPEEDS`.
fn step_speed(speed: f64, dir: i32) -> f64 {
    let i = SPEEDS
        .iter()
        .position(|s| *s >= speed - 1e-9)
        .unwrap_or(SPEEDS.len() - 1) as i32;
    // A speed between two steps (from --speed) goes to the neighbour in that direction.
    let exact = (SPEEDS[i as usize] - speed).abs() < 1e-9;
    let j = match (dir > 0, exact) {
        (true, true) => i + 1,
        (true, false) => i,
        (false, _) => i - 1,
    };
    SPEEDS[j.clamp(0, SPEEDS.len() as i32 - 1) as usize]
}

/// Send `schedule`'s events as the clock reaches their times (all at once after End). Stops
/// early when `send` says the receiver is gone.
pub async fn play(schedule: Schedule, clock: Clock, mut send: impl FnMut(Msg) -> bool) {
    for t in schedule.events {
        loop {
            let changed = clock.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the clock, so a change in between is not missed.
            changed.as_mut().enable();
            let (now, speed, paused) = {
                let s = clock.lock();
                (Clock::at(&s), s.speed, s.paused && !s.to_end)
            };
            if now >= t.ms as f64 {
                break;
            }
            if paused {
                changed.await;
                continue;
            }
            let wait = Duration::from_secs_f64((t.ms as f64 - now) / speed.max(1e-3) / 1000.0);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut changed => {}
            }
        }
        if !send(Msg::Replayed {
            event: Box::new(t.event),
            at_ms: t.ms,
        }) {
            return;
        }
    }
    send(Msg::ReplayDone);
}

/// The app as a replay of run `k` starts at `speed`: its preset, its conversation before the
/// replayed turn, and empty panes about to fill.
pub fn start(
    app: &mut App,
    session: &crate::session::Session,
    k: usize,
    speed: f64,
    schedule: &Schedule,
) {
    let Some(run) = session.runs.get(k) else {
        return;
    };
    let view = ReplayView {
        run: k + 1,
        runs: session.runs.len(),
        speed,
        paused: false,
        estimated: schedule.estimated,
        at_ms: 0,
        end_ms: schedule.end_ms,
    };
    app.preset = Arc::new(run.preset.clone());
    app.session = Some(session.clone());
    let mut before = run.record.messages.clone();
    let prompt = before.pop().map(|m| m.content);
    app.conversation = before;
    app.pending_prompt = prompt;
    app.last_messages = run.record.messages.clone();
    app.mode = RunMode::Replaying;
    app.run = Some(app.new_run_view(run.record.id.clone()));
    app.layer = None;
    app.status = if view.estimated {
        "replaying at an even pace: this run was saved before moa kept timings".into()
    } else {
        "replaying at the recorded pace: nothing is sent to any provider".into()
    };
    app.replay = Some(view);
}

/// A replay key: the loop changes the clock.
pub fn control(app: &mut App, c: Control) -> Vec<Effect> {
    if app.replay.is_none() {
        return vec![];
    }
    vec![Effect::Replay(c)]
}

/// The loop changed the clock: show its speed and pause.
pub fn controlled(app: &mut App, speed: f64, paused: bool) {
    if let Some(r) = app.replay.as_mut() {
        r.speed = speed;
        r.paused = paused;
    }
}

/// Every event was played: the session is open as if picked in the browser, on the replayed run.
pub fn finished(app: &mut App, session: crate::session::Session, k: usize) {
    let estimated = app.replay.as_ref().is_some_and(|r| r.estimated);
    app.replay = None;
    app.mode = RunMode::Idle;
    let n = session.runs.len();
    super::overlay::sessions::opened(app, session);
    super::overlay::sessions::show_run(app, k);
    // What is typed now follows up on the conversation, as after a live run.
    app.input = super::update::fresh_input();
    app.status = format!(
        "replayed run {} of {n}{}: the session is open; a follow-up adds to it",
        k + 1,
        if estimated { " (even pace)" } else { "" }
    );
}

/// The header's words for a replay: where it is and how fast it goes.
pub fn label(r: &ReplayView) -> String {
    format!(
        "  {} replay {}× {:.1}/{:.1}s{}",
        if r.paused { "⏸" } else { "▶" },
        fmt_speed(r.speed),
        r.at_ms as f64 / 1000.0,
        r.end_ms as f64 / 1000.0,
        if r.estimated { " (even pace)" } else { "" }
    )
}

fn fmt_speed(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RunEvent;
    use crate::engine::preset::Preset;
    use crate::session::timeline::{self, Timeline};
    use crate::session::{RunKind, Session, SessionRun};
    use crate::tui::state::PaneId;
    use crate::tui::update::update;
    use tokio::sync::mpsc;

    #[test]
    fn speeds_step_through_the_list() {
        assert_eq!(step_speed(1.0, 1), 2.0);
        assert_eq!(step_speed(1.0, -1), 0.5);
        assert_eq!(step_speed(3.0, 1), 4.0);
        assert_eq!(step_speed(3.0, -1), 2.0);
        assert_eq!(step_speed(32.0, 1), 32.0);
        assert_eq!(step_speed(0.25, -1), 0.25);
    }

    /// A one-proposer, one-aggregator run whose proposer streams 1000 bytes from 0.5 s to 4.5 s
    /// (points every second), and whose aggregator streams 200 bytes from 5 s to 6 s.
    fn session() -> (Session, usize) {
        let preset_toml = r#"
name = "replayed"
[[step]]
op = "propose"
agents = [{ model = "fake/p" }]
[[step]]
op = "aggregate"
model = "fake/agg"
"#;
        let preset: Preset = crate::engine::preset::parse(
            std::path::Path::new("replayed.toml"),
            preset_toml,
            &crate::engine::prompts::Templates::builtin(),
        )
        .unwrap();
        let mut record = crate::engine::record::RunRecord {
            schema: crate::engine::record::RUN_SCHEMA.into(),
            id: "run1".into(),
            created: "2026-12-02T00:00:00Z".into(),
            preset: "replayed".into(),
            messages: vec![crate::provider::Message::user("Q?")],
            steps: Vec::new(),
            final_answer: None,
            baseline: None,
            wall_ms: 6000,
            usage: Default::default(),
            cancelled: false,
        };
        let call = |slot, model: &str, text: String, start, latency| {
            let mut c = crate::engine::record::CallRecord::empty(
                slot,
                model,
                None,
                crate::engine::record::CallStatus::Ok,
            );
            c.text = text;
            c.start_ms = start;
            c.latency_ms = latency;
            c.ttft_ms = Some(500);
            c
        };
        let step = |op: &str, calls| crate::engine::record::StepRecord {
            op: op.into(),
            agreement: None,
            agreement_method: None,
            agreement_matrix: None,
            calls,
            responses: vec![[0, 0]],
            shortened: None,
            notes: Vec::new(),
            wall_ms: 0,
        };
        record.steps.push(step(
            "propose",
            vec![call(0, "fake/p", "p".repeat(1000), 0, 4500)],
        ));
        record.steps.push(step(
            "aggregate",
            vec![call(0, "fake/agg", "a".repeat(200), 4500, 1500)],
        ));
        record.final_answer = Some(crate::engine::record::FinalAnswer {
            text: "a".repeat(200),
            source: "aggregate".into(),
            status: crate::engine::record::CallStatus::Ok,
        });
        let mut run = SessionRun::new(preset, record, RunKind::Run, Vec::new());
        run.timeline = Some(Timeline {
            v: 1,
            end_ms: 6000,
            steps: vec!["0 0 4500".into(), "1 4500 6000".into()],
            calls: vec![
                "0.0 0 4500 ok 0 500:10 1000:240 1000:250 1000:250 1000:250".into(),
                "1.0 4500 6000 ok 1 500:20 1000:180".into(),
            ],
            agreement: Vec::new(),
            notices: Vec::new(),
        });
        let mut s = Session::new(&[crate::provider::Message::user("Q?")]);
        s.push_run(run);
        (s, 0)
    }

    fn text_of(app: &App, id: PaneId) -> usize {
        app.pane(id).map_or(0, |p| p.text.len())
    }

    #[tokio::test(start_paused = true)]
    async fn panes_fill_at_the_recorded_pace_and_follow_the_controls() {
        let (s, k) = session();
        let sched = timeline::schedule(&s.runs[k]);
        assert!(!sched.estimated);
        let clock = Clock::new(1.0, sched.end_ms);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut app = App::new(Arc::new(s.runs[k].preset.clone()), vec![], false);
        start(&mut app, &s, k, 1.0, &sched);
        let player = tokio::spawn(play(sched, clock.clone(), move |m| tx.send(m).is_ok()));
        let epoch = std::time::Instant::now();
        let mut done = false;
        // Advance recorded time in 100 ms steps, feeding what arrived to `update`.
        let mut step = async |app: &mut App, rx: &mut mpsc::UnboundedReceiver<Msg>| {
            // The player's wake-up at this instant may come after ours: let it run first.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            while let Ok(m) = rx.try_recv() {
                if matches!(m, Msg::ReplayDone) {
                    done = true;
                    continue;
                }
                let now = epoch + Duration::from_millis(clock.now_ms() as u64);
                update(app, m, now);
            }
            done
        };
        let proposer = PaneId::Call(0, 0);
        let aggregator = PaneId::Final;
        tokio::time::sleep(Duration::from_millis(400)).await;
        step(&mut app, &mut rx).await;
        assert_eq!(text_of(&app, proposer), 0, "nothing before the first token");
        tokio::time::sleep(Duration::from_millis(600)).await; // t = 1.0 s
        step(&mut app, &mut rx).await;
        let at1 = text_of(&app, proposer);
        assert!((10..=300).contains(&at1), "partly filled at 1 s: {at1}");
        tokio::time::sleep(Duration::from_millis(1500)).await; // t = 2.5 s
        step(&mut app, &mut rx).await;
        let at25 = text_of(&app, proposer);
        assert!(at25 > at1 && at25 < 1000, "{at1} then {at25}");
        // Paused: nothing more arrives however long we wait.
        clock.control(Control::Pause);
        tokio::time::sleep(Duration::from_secs(10)).await;
        step(&mut app, &mut rx).await;
        assert_eq!(text_of(&app, proposer), at25);
        assert!(app.running());
        // Resumed at 4x: the remaining 3.5 s of the run take under a second.
        clock.control(Control::Pause);
        assert_eq!(clock.control(Control::Faster), (2.0, false));
        assert_eq!(clock.control(Control::Faster), (4.0, false));
        tokio::time::sleep(Duration::from_millis(500)).await; // t = 4.5 s
        step(&mut app, &mut rx).await;
        assert_eq!(text_of(&app, proposer), 1000);
        assert!(text_of(&app, aggregator) < 200);
        tokio::time::sleep(Duration::from_millis(400)).await; // t = 6.1 s
        assert!(step(&mut app, &mut rx).await, "the replay ended");
        assert_eq!(text_of(&app, aggregator), 200);
        assert!(!app.running() || app.mode == RunMode::Replaying);
        player.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn end_sends_the_rest_at_once() {
        let (s, k) = session();
        let sched = timeline::schedule(&s.runs[k]);
        let n = sched.events.len();
        let clock = Clock::new(1.0, sched.end_ms);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let player = tokio::spawn(play(sched, clock.clone(), move |m| tx.send(m).is_ok()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        clock.control(Control::End);
        player.await.unwrap();
        let mut got = 0;
        let mut last = None;
        while let Ok(m) = rx.try_recv() {
            got += 1;
            last = Some(m);
        }
        assert_eq!(got, n + 1);
        assert!(matches!(last, Some(Msg::ReplayDone)));
    }

    #[test]
    fn a_run_without_timeline_replays_at_an_even_pace() {
        let (mut s, k) = session();
        s.runs[k].timeline = None;
        let sched = timeline::schedule(&s.runs[k]);
        assert!(sched.estimated);
        let deltas: Vec<(u64, usize)> = sched
            .events
            .iter()
            .filter_map(|t| match &t.event {
                RunEvent::Delta { tag, text } if tag.stage == crate::engine::Stage::Step(0) => {
                    Some((t.ms, text.len()))
                }
                _ => None,
            })
            .collect();
        // First token at 0.5 s, the rest spread until 4.5 s.
        assert_eq!(deltas.first().unwrap().0, 500);
        assert_eq!(deltas.last().unwrap().0, 4500);
        assert_eq!(deltas.iter().map(|d| d.1).sum::<usize>(), 1000);
        assert!(deltas.len() > 40, "{}", deltas.len());
    }
}
