//! `update(&mut App, Msg, now) -> Vec<Effect>`: every key, paste, mouse event and run event changes
//! the state here, and anything that needs IO comes back as an effect for the loop to perform. No
//! IO and no clock here: the time comes in with the message, so tests drive it.

use std::sync::Arc;
use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, MouseEvent, MouseEventKind};

use super::keymap::{self, Action, Scope};
use super::overlay::{self, Overlay, agents, help, picker, prompt, sessions};
use super::state::{AgreementView, App, Focus, PaneId, PaneStatus, RunMode, SaveState};
use crate::engine::RunEvent;
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::engine::record::CallStatus;
use crate::provider::{Message, Role};
use crate::session::Session;
use crate::session::judge::Judgement;
use crate::session::recorder::SaveReport;
use crate::session::store::Summary;
use crate::session::variants::{Attribution, LooEntry, PairJudgement, RunData};

pub enum Msg {
    Key(KeyEvent),
    /// Text the terminal pasted (bracketed paste): it goes where typing goes, newlines included,
    /// and nothing in it acts as a key.
    Paste(String),
    Mouse(MouseEvent),
    Resize,
    /// The clock moved (latency bars of calls in flight grow).
    Tick,
    Run(Box<RunEvent>),
    /// The run's events stopped before it said it was done (the engine failed).
    RunLost(String),
    /// Progress of fetching the embedded models (first use).
    Fetch(String),
    FetchDone(Result<(), crate::fetch::FetchError>),
    PresetLoaded(Result<Arc<Preset>, crate::app::AppError>),
    SessionsListed {
        sessions: Vec<Summary>,
        skipped: Vec<String>,
    },
    SessionOpened(Result<Box<Session>, crate::session::store::StoreError>),
    /// The session as the recorder holds it after a run ended (not a claim that it is on disk).
    SessionUpdated(Box<Session>),
    /// The session writer finished a write: saved, or why not.
    Saved(SaveReport),
    /// Models for the picker; `done` when every provider has answered.
    ModelsListed {
        models: Vec<String>,
        errors: Vec<String>,
        done: bool,
    },
    /// A verdict between two answers of run `run_id` (its variants, or one and the baseline).
    PairJudged {
        run_id: String,
        pair: Box<PairJudgement>,
    },
    /// Which proposers a variant (by its run id) drew on.
    Attributed {
        run_id: String,
        attribution: Attribution,
    },
    /// Leave-one-out finished for the variant made by run `run_id`.
    LooDone {
        run_id: String,
        entries: Vec<LooEntry>,
    },
    /// An event of a replayed run (`moa replay`), `at_ms` into the recorded run.
    Replayed {
        event: Box<RunEvent>,
        at_ms: u64,
    },
    /// Every event of the replay was played (the loop then opens the session).
    ReplayDone,
    /// The replay's clock changed (pause, speed).
    ReplayClock {
        speed: f64,
        paused: bool,
    },
}

#[derive(Debug, PartialEq)]
pub enum Effect {
    StartRun {
        messages: Vec<Message>,
        baseline: bool,
    },
    /// Run only the aggregator again on these answers (with this prompt, when given): a new
    /// variant of run `parent`'s aggregation.
    Reaggregate {
        messages: Vec<Message>,
        responses: Vec<String>,
        prompt: Option<String>,
        parent: Option<String>,
    },
    Cancel,
    /// Put text on the clipboard (OSC 52).
    Copy(String),
    LoadPreset(String),
    /// Run one proposer again (its events go to pane `step`/`slot`).
    RerunCall {
        agent: AgentSpec,
        messages: Vec<Message>,
    },
    ListSessions,
    OpenSession(String),
    /// The next run starts a new session.
    NewSession,
    ListModels,
    /// Judge two answers of run `run_id` in both orders; `a` and `b` name them (variant run ids,
    /// or `baseline`).
    JudgePair {
        run_id: String,
        model: String,
        question: String,
        a: (String, String),
        b: (String, String),
    },
    /// A MoA-vs-baseline verdict, kept with the run as `moa sessions judge` keeps it.
    StoreJudgement {
        run_id: String,
        judgement: Box<Judgement>,
    },
    /// Similarity of a variant's answer to each answer it aggregated (off the UI thread).
    Attribute {
        run_id: String,
        answer: String,
        given: Vec<(usize, String)>,
    },
    /// Aggregate again once per proposer without that proposer's answer (concurrently), and
    /// judge each against the full answer when there is a judge.
    LeaveOneOut {
        run_id: String,
        messages: Vec<Message>,
        agent: AgentSpec,
        prompt: String,
        given: Vec<(usize, String)>,
        full: String,
        judge: Option<String>,
    },
    /// Keep what was learnt about a saved run with it in the session file.
    SaveRunData {
        run_id: String,
        data: RunData,
    },
    /// Pause, speed up, slow down or finish the replay.
    Replay(super::replay::Control),
}

pub fn update(app: &mut App, msg: Msg, now: Instant) -> Vec<Effect> {
    app.now = now;
    app.dirty = true;
    match msg {
        Msg::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Msg::Key(_) => {
            app.dirty = false;
            vec![]
        }
        Msg::Paste(text) => {
            paste(app, &text);
            vec![]
        }
        Msg::Mouse(m) => mouse(app, m),
        Msg::Resize | Msg::Tick => vec![],
        Msg::Run(ev) => run_event(app, *ev, now),
        Msg::RunLost(why) => {
            app.mode = RunMode::Idle;
            app.pending_prompt = None;
            app.status = format!("the run stopped: {why} (what arrived is kept in the panes)");
            vec![]
        }
        Msg::Fetch(line) => {
            app.status = line;
            vec![]
        }
        Msg::FetchDone(Ok(())) => {
            app.mode = RunMode::Idle;
            app.status = "models ready: type a prompt".into();
            vec![]
        }
        Msg::FetchDone(Err(e)) => {
            app.mode = RunMode::Idle;
            app.status = format!("cannot fetch the embedded model: {e}");
            vec![]
        }
        Msg::PresetLoaded(Ok(p)) => {
            app.status = format!("preset {}: {}", p.name, p.description);
            app.preset = p;
            app.run = None;
            app.layer = None;
            vec![]
        }
        Msg::PresetLoaded(Err(e)) => {
            app.status = e.to_string();
            vec![]
        }
        Msg::SessionsListed { sessions, skipped } => {
            sessions::listed(app, sessions, skipped);
            vec![]
        }
        Msg::SessionOpened(Ok(s)) => {
            app.save = SaveState::Nothing;
            sessions::opened(app, *s);
            vec![]
        }
        Msg::SessionOpened(Err(e)) => {
            app.status = e.to_string();
            vec![]
        }
        Msg::SessionUpdated(s) => {
            app.shown_run = None;
            app.session = Some(*s);
            vec![]
        }
        Msg::Saved(r) => {
            app.save = match r.result {
                Ok(()) => SaveState::Saved {
                    id: r.session,
                    path: r.path,
                },
                Err(e) => SaveState::Failed {
                    path: r.path,
                    reason: e.reason(),
                },
            };
            vec![]
        }
        Msg::ModelsListed {
            models,
            errors,
            done,
        } => {
            picker::listed(app, models, errors, done);
            vec![]
        }
        Msg::PairJudged { run_id, pair } => super::variants::pair_judged(app, run_id, *pair),
        Msg::Attributed {
            run_id,
            attribution,
        } => super::variants::attributed(app, run_id, attribution),
        Msg::LooDone { run_id, entries } => super::variants::loo_done(app, run_id, entries),
        Msg::Replayed { event, at_ms } => {
            if let Some(r) = app.replay.as_mut() {
                r.at_ms = at_ms;
            }
            run_event(app, *event, now)
        }
        // The loop turns it into the opened session (it holds the session).
        Msg::ReplayDone => vec![],
        Msg::ReplayClock { speed, paused } => {
            super::replay::controlled(app, speed, paused);
            vec![]
        }
    }
}

/// Pasted text as the editors take it: terminals send newlines as CR in a bracketed paste.
pub fn paste_text(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn paste(app: &mut App, text: &str) {
    if overlay::paste(app, text) || app.overlay != Overlay::None {
        return;
    }
    app.focus = Focus::Input;
    app.history_pos = None;
    let text = paste_text(text);
    app.input.insert_str(&text);
    let lines = text.lines().count();
    if lines > 1 {
        app.status = format!(
            "pasted {lines} lines, {} characters: Enter sends",
            text.chars().count()
        );
    }
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if let Some(effects) = overlay::key(app, k) {
        return effects;
    }
    if app.mode == RunMode::Replaying
        && let Some(action) = keymap::lookup(&k, Scope::Replay).filter(|a| {
            matches!(
                a,
                Action::ReplayPause
                    | Action::ReplayFaster
                    | Action::ReplaySlower
                    | Action::ReplayEnd
            )
        })
    {
        return act(app, action);
    }
    let scope = match app.focus {
        Focus::Input => Scope::Input,
        Focus::Pane(_) => Scope::Pane,
    };
    match keymap::lookup(&k, scope) {
        // `?` opens the help only from an empty prompt; otherwise it is typed.
        Some(Action::Help) if scope == Scope::Input && k.code != KeyCode::F(1) => {
            if app.input.is_empty() {
                help::open(app);
            } else {
                app.input.input(k);
            }
            vec![]
        }
        Some(action) => act(app, action),
        None if scope == Scope::Input => {
            app.input.input(k);
            vec![]
        }
        None => vec![],
    }
}

/// What an action of the main screen does.
fn act(app: &mut App, action: Action) -> Vec<Effect> {
    let busy = app.running();
    let focused = match app.focus {
        Focus::Pane(id) => Some(id),
        Focus::Input => None,
    };
    match action {
        Action::Quit => app.quit = true,
        Action::Help => help::open(app),
        Action::Cancel => {
            if busy && app.mode != RunMode::Fetching {
                app.status = "cancelling…".into();
                return vec![Effect::Cancel];
            }
            if app.maximized.is_some() {
                app.maximized = None;
            } else {
                app.focus = Focus::Input;
            }
        }
        Action::FocusNext => cycle_focus(app, 1),
        Action::FocusPrev => cycle_focus(app, -1),
        Action::Maximize => toggle_maximize(app),
        Action::Compare => overlay::compare::open(app),
        Action::Agents => agents::open(app),
        Action::Sessions if !busy => return sessions::open(app),
        Action::RunPrev if !busy => sessions::step_run(app, -1),
        Action::RunNext if !busy => sessions::step_run(app, 1),
        Action::LayerPrev => switch_layer(app, -1),
        Action::LayerNext => switch_layer(app, 1),
        Action::Reaggregate if !busy => return reaggregate(app, None),
        Action::VariantPrev => super::variants::step(app, -1),
        Action::VariantNext => super::variants::step(app, 1),
        Action::LeaveOneOut => return super::variants::leave_one_out(app),
        Action::EditPrompt => prompt::open(app),
        Action::ToggleBaseline => {
            app.baseline_on = !app.baseline_on;
            app.status = format!("baseline {}", if app.baseline_on { "on" } else { "off" });
        }
        Action::NewConversation if !busy => {
            app.conversation.clear();
            app.run = None;
            app.session = None;
            app.shown_run = None;
            app.save = SaveState::Nothing;
            app.status = "new conversation (a new session is saved with its first run)".into();
            return vec![Effect::NewSession];
        }
        Action::NextPreset if !busy => {
            let i = app
                .presets
                .iter()
                .position(|p| *p == app.preset.name)
                .map_or(0, |i| i + 1);
            if let Some(name) = app.presets.get(i % app.presets.len().max(1)).cloned() {
                return vec![Effect::LoadPreset(name)];
            }
        }
        Action::Rerun if !busy => {
            // Run the last prompt again (same conversation before it).
            if let Some(last) = app.history.last().cloned() {
                if app
                    .conversation
                    .last()
                    .is_some_and(|m| m.role == Role::Assistant)
                {
                    app.conversation
                        .truncate(app.conversation.len().saturating_sub(2));
                }
                return start(app, last);
            }
        }
        Action::Send => return send(app),
        Action::Newline => app.input.insert_newline(),
        Action::HistoryPrev => history(app, -1),
        Action::HistoryNext => history(app, 1),
        Action::ScrollUp => scroll_focused(app, 1),
        Action::ScrollDown => scroll_focused(app, -1),
        Action::PageUp => scroll_focused(app, 10),
        Action::PageDown => scroll_focused(app, -10),
        Action::Top => scroll_focused(app, 1_000_000),
        Action::Bottom => {
            if let Some(p) = focused.and_then(|id| app.pane_by_id_mut(id)) {
                p.scroll_from_end = None;
            }
        }
        Action::Copy => {
            if let Some(p) = focused.and_then(|id| app.pane(id)) {
                let text = p.text.clone();
                app.status = format!(
                    "copied {} characters to the clipboard",
                    text.chars().count()
                );
                return vec![Effect::Copy(text)];
            }
        }
        Action::RerunProposer => {
            if let Some(id) = focused {
                return rerun_proposer(app, id);
            }
        }
        Action::FocusInput => app.focus = Focus::Input,
        Action::ReplayPause => return super::replay::control(app, super::replay::Control::Pause),
        Action::ReplayFaster => return super::replay::control(app, super::replay::Control::Faster),
        Action::ReplaySlower => return super::replay::control(app, super::replay::Control::Slower),
        Action::ReplayEnd => return super::replay::control(app, super::replay::Control::End),
        Action::Sessions
        | Action::RunPrev
        | Action::RunNext
        | Action::Reaggregate
        | Action::NewConversation
        | Action::NextPreset
        | Action::Rerun => {
            app.status = format!(
                "{} is under way: wait, or Esc to cancel it",
                app.mode.label()
            );
        }
        // Overlay actions do not reach the main screen.
        _ => {}
    }
    vec![]
}

fn send(app: &mut App) -> Vec<Effect> {
    if app.running() {
        app.status = format!(
            "{} is under way: wait, or Esc to cancel it",
            app.mode.label()
        );
        return vec![];
    }
    let text = app.input.lines().join("\n");
    if text.trim().is_empty() {
        app.status = "type a prompt first".into();
        return vec![];
    }
    app.input = fresh_input();
    app.history.push(text.clone());
    app.history_pos = None;
    start(app, text)
}

/// Re-run only the aggregator on the answers shown, with `prompt` when given.
pub fn reaggregate(app: &mut App, prompt: Option<String>) -> Vec<Effect> {
    let responses = app.answers_to_aggregate();
    let has_final = app.run.as_ref().is_some_and(|r| r.final_step.is_some());
    if responses.is_empty() || !has_final || app.last_messages.is_empty() {
        app.status = "nothing to re-aggregate yet: run a prompt first".into();
        return vec![];
    }
    let label = app.aggregate_prompt_label(prompt.as_deref());
    // The answer shown stays whole as its variant; the new one becomes the next.
    if let Some(p) = app.pane_by_id_mut(PaneId::Final) {
        p.reset();
    }
    let given = app.answers_with_slots();
    let pending = app
        .aggregation()
        .map(|(agent, base_prompt)| super::variants::Pending {
            prompt_label: label.clone().unwrap_or_else(|| "edited".into()),
            agent,
            prompt: prompt.clone().unwrap_or(base_prompt),
            given,
        });
    let parent = app
        .run
        .as_ref()
        .and_then(|r| r.record.as_ref())
        .map(|r| r.id.clone());
    if let Some(r) = app.run.as_mut() {
        r.aggregator_prompt = label;
    }
    app.pending_variant = pending;
    app.mode = RunMode::Reaggregating;
    app.status = format!("re-running the aggregator on {} answers…", responses.len());
    vec![Effect::Reaggregate {
        messages: app.last_messages.clone(),
        responses,
        prompt,
        parent,
    }]
}

pub(crate) fn fresh_input() -> ratatui_textarea::TextArea<'static> {
    let mut t = ratatui_textarea::TextArea::default();
    t.set_placeholder_text("Follow up, or Ctrl+N for a new conversation. F1 lists every key.");
    t
}

fn history(app: &mut App, dir: i32) {
    if app.history.is_empty() {
        return;
    }
    let n = app.history.len() as i32;
    let pos = match app.history_pos {
        None if dir < 0 => n - 1,
        None => return,
        Some(p) => p as i32 + dir,
    };
    if pos >= n {
        app.history_pos = None;
        app.input = fresh_input();
        return;
    }
    let pos = pos.clamp(0, n - 1) as usize;
    app.history_pos = Some(pos);
    let lines: Vec<String> = app.history[pos].lines().map(str::to_string).collect();
    app.input = ratatui_textarea::TextArea::new(lines);
}

fn start(app: &mut App, prompt: String) -> Vec<Effect> {
    let mut messages = app.conversation.clone();
    messages.push(Message::user(prompt.clone()));
    app.pending_prompt = Some(prompt);
    app.last_messages = messages.clone();
    app.mode = RunMode::Running;
    app.run = Some(app.new_run_view(String::new()));
    app.layer = None;
    app.status = format!("running {}…", app.preset.name);
    vec![Effect::StartRun {
        messages,
        baseline: app.baseline_on,
    }]
}

/// Run one proposer of the first layer again, on the same conversation; its pane shows the new
/// answer and a re-aggregation (Ctrl+A) then uses it.
fn rerun_proposer(app: &mut App, id: PaneId) -> Vec<Effect> {
    let PaneId::Call(step, slot) = id else {
        app.status = "r re-runs a proposer: focus a proposer pane (Tab)".into();
        return vec![];
    };
    if app.running() {
        app.status = format!(
            "{} is under way: wait, or Esc to cancel it",
            app.mode.label()
        );
        return vec![];
    }
    let agent = match app.preset.steps.get(step) {
        Some(Step::Propose { agents, .. }) => agents.get(slot).cloned(),
        _ => None,
    };
    let Some(agent) = agent.filter(|_| !app.last_messages.is_empty()) else {
        app.status = "only a first-layer proposer of the current preset can be re-run".into();
        return vec![];
    };
    if let Some(p) = app.pane_by_id_mut(id) {
        p.reset();
        p.model = agent.model.clone();
        p.temperature = agent.temperature;
    }
    app.mode = RunMode::RerunProposer { step, slot };
    app.status = format!("re-running {} …", agent.model);
    vec![Effect::RerunCall {
        agent,
        messages: app.last_messages.clone(),
    }]
}

fn scroll_focused(app: &mut App, up: i64) {
    if let Focus::Pane(id) = app.focus {
        scroll(app, id, up);
    }
}

fn scroll(app: &mut App, id: PaneId, up: i64) {
    if let Some(p) = app.pane_by_id_mut(id) {
        let cur = p.scroll_from_end.unwrap_or(0) as i64;
        let next = (cur + up).max(0);
        // Scrolling back to the bottom resumes following the tail.
        p.scroll_from_end = if next == 0 { None } else { Some(next as usize) };
    }
}

fn mouse(app: &mut App, m: MouseEvent) -> Vec<Effect> {
    let up = match m.kind {
        MouseEventKind::ScrollUp => 3,
        MouseEventKind::ScrollDown => -3,
        _ => {
            app.dirty = false;
            return vec![];
        }
    };
    let hit = app
        .areas
        .borrow()
        .iter()
        .find(|(_, r)| r.contains(ratatui::layout::Position::new(m.column, m.row)))
        .map(|(id, _)| *id);
    if let Some(id) = hit {
        scroll(app, id, up);
    }
    vec![]
}

fn cycle_focus(app: &mut App, dir: i32) {
    let order = app.focusable();
    let mut all: Vec<Focus> = vec![Focus::Input];
    all.extend(order.into_iter().map(Focus::Pane));
    let i = all.iter().position(|f| *f == app.focus).unwrap_or(0) as i32;
    let n = all.len() as i32;
    app.focus = all[((i + dir).rem_euclid(n)) as usize];
}

fn toggle_maximize(app: &mut App) {
    app.maximized = match (app.maximized, app.focus) {
        (Some(_), _) => None,
        (None, Focus::Pane(id)) => Some(id),
        (None, Focus::Input) => app.focusable().first().copied(),
    };
}

fn switch_layer(app: &mut App, dir: i32) {
    let layers = app.layer_steps();
    if layers.len() < 2 {
        return;
    }
    let cur = app
        .shown_layer()
        .and_then(|l| layers.iter().position(|x| *x == l))
        .unwrap_or(0) as i32;
    let next = (cur + dir).clamp(0, layers.len() as i32 - 1) as usize;
    app.layer = Some(layers[next]);
    if let Focus::Pane(PaneId::Call(..)) = app.focus {
        app.focus = Focus::Pane(PaneId::Call(layers[next], 0));
    }
}

fn run_event(app: &mut App, ev: RunEvent, now: Instant) -> Vec<Effect> {
    // A re-aggregation is a one-step run: its step 0 is the aggregator shown in the final pane.
    let ev = match app.mode {
        RunMode::Reaggregating => match app.run.as_ref().and_then(|r| r.final_step) {
            Some(fs) => remap(ev, fs, None),
            None => ev,
        },
        RunMode::RerunProposer { step, slot } => remap(ev, step, Some(slot)),
        _ => ev,
    };
    match ev {
        RunEvent::RunStarted { run, .. } => {
            if let Some(r) = app.run.as_mut() {
                r.id = run.to_string();
            }
        }
        RunEvent::StepStarted { .. } => {}
        RunEvent::CallStarted {
            tag, temperature, ..
        } => {
            if let Some(p) = app.pane_mut(tag.stage, tag.slot) {
                p.status = PaneStatus::Streaming;
                p.started_at = Some(now);
                if p.model.is_empty() {
                    p.model = tag.model.to_string();
                    p.temperature = temperature;
                }
            }
        }
        RunEvent::Retrying {
            tag,
            attempt,
            delay_ms,
            reason,
        } => {
            app.status = format!(
                "{}: retry {attempt} in {:.1} s ({reason})",
                tag.model,
                delay_ms as f64 / 1000.0
            );
            if let Some(p) = app.pane_mut(tag.stage, tag.slot) {
                p.status = PaneStatus::Retrying;
                p.retries = attempt;
            }
        }
        RunEvent::Delta { tag, text } => {
            if let Some(p) = app.pane_mut(tag.stage, tag.slot) {
                p.status = PaneStatus::Streaming;
                p.first_token_at.get_or_insert(now);
                p.text.push_str(&text);
            }
        }
        RunEvent::CallFinished { tag, record } | RunEvent::CallFailed { tag, record } => {
            if let Some(p) = app.pane_mut(tag.stage, tag.slot) {
                p.finish(&record);
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
            if let Some(s) = app.run.as_mut().and_then(|r| r.steps.get_mut(step)) {
                // A late live value never replaces the final one.
                if !(live && s.agreement.as_ref().is_some_and(|a| !a.live)) {
                    s.agreement = Some(AgreementView {
                        value,
                        method,
                        slots,
                        matrix,
                        live,
                    });
                }
            }
        }
        RunEvent::Notice { message, .. } if !message.is_empty() => app.status = message,
        RunEvent::Notice { .. } => {}
        RunEvent::StepDone { .. } => {}
        RunEvent::RunDone { record } => {
            let mode = std::mem::replace(&mut app.mode, RunMode::Idle);
            return run_done(app, mode, *record);
        }
    }
    vec![]
}

fn run_done(app: &mut App, mode: RunMode, record: crate::engine::record::RunRecord) -> Vec<Effect> {
    match mode {
        // The session already holds this run: nothing is added to the conversation or computed
        // again; the loop opens the session when the replay ends.
        RunMode::Replaying => {
            app.status = format!("replayed: done in {:.1} s", record.wall_ms as f64 / 1000.0);
            if let Some(r) = app.run.as_mut() {
                r.record = Some(record);
            }
        }
        RunMode::RerunProposer { .. } => {
            let ok = record
                .steps
                .first()
                .and_then(|s| s.calls.first())
                .is_some_and(|c| c.status == CallStatus::Ok);
            app.status = if ok {
                "proposer re-run: Ctrl+A re-aggregates with its new answer".into()
            } else {
                "the proposer's re-run failed: see its pane".into()
            };
        }
        RunMode::Reaggregating => {
            let fx = super::variants::reaggregated(app, &record);
            reaggregation_done(app, &record);
            return fx;
        }
        _ => {
            let prompt = app.pending_prompt.take();
            match (&record.final_answer, prompt) {
                (Some(f), Some(p)) if f.status == CallStatus::Ok => {
                    app.conversation.push(Message::user(p));
                    app.conversation.push(Message::assistant(f.text.clone()));
                    app.status = format!(
                        "done in {:.1} s ({}), {} tokens in, {} out",
                        record.wall_ms as f64 / 1000.0,
                        f.source,
                        record.usage.tokens_in,
                        record.usage.tokens_out
                    );
                }
                _ if record.cancelled => {
                    app.status = "cancelled: partial answers are kept in the panes".into()
                }
                _ => app.status = "the run produced no answer: see the failed panes".into(),
            }
            if let Some(r) = app.run.as_mut() {
                r.record = Some(record);
            }
            return super::variants::first_variant(app);
        }
    }
    vec![]
}

fn reaggregation_done(app: &mut App, record: &crate::engine::record::RunRecord) {
    match &record.final_answer {
        Some(f) if f.status == CallStatus::Ok => {
            // The new answer replaces the old one as this turn's reply.
            if let Some(last) = app
                .conversation
                .last_mut()
                .filter(|m| m.role == Role::Assistant)
            {
                last.content = f.text.clone();
            }
            app.status = format!(
                "re-aggregated in {:.1} s ({}): F5/F6 switch variants, F3 compares two",
                record.wall_ms as f64 / 1000.0,
                f.source
            );
        }
        _ => app.status = "re-aggregation produced no answer".into(),
    }
}

/// A one-step run's events (a re-aggregation, a re-run proposer) belong to step `fs` of the view
/// (and to pane `slot`, when given).
fn remap(ev: RunEvent, fs: usize, slot: Option<usize>) -> RunEvent {
    use crate::engine::Stage;
    let map = |stage: Stage| match stage {
        Stage::Step(0) => Stage::Step(fs),
        other => other,
    };
    let mut ev = ev;
    if let Some(tag) = ev.tag_mut() {
        tag.stage = map(tag.stage);
        tag.slot = slot.unwrap_or(tag.slot);
        return ev;
    }
    match ev {
        // The one-step run's step and agreement events would land on the proposers' step 0.
        RunEvent::StepStarted { run, .. }
        | RunEvent::StepDone { run, .. }
        | RunEvent::Agreement { run, .. } => RunEvent::Notice {
            run,
            stage: Stage::Step(fs),
            message: String::new(),
        },
        other => other,
    }
}
