//! `update(&mut App, Msg) -> Vec<Effect>`: every key, mouse event and run event changes the state
//! here, and anything that needs IO comes back as an effect for the loop to perform. No IO here.

use std::sync::Arc;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::state::{
    AgentRef, AgreementView, App, Focus, Overlay, PaneId, PaneStatus, agent_in_mut,
};
use crate::engine::RunEvent;
use crate::engine::preset::{AgentSpec, Preset, Step};
use crate::provider::Message;
use crate::session::Session;
use crate::session::judge::Judgement;
use crate::session::store::Summary;

pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize,
    Run(Box<RunEvent>),
    /// Progress of fetching the embedded models (first use).
    Fetch(String),
    FetchDone(Result<(), String>),
    PresetLoaded(Result<Arc<Preset>, String>),
    SessionsListed {
        sessions: Vec<Summary>,
        skipped: Vec<String>,
    },
    SessionOpened(Result<Box<Session>, String>),
    /// The session as saved after a run ended (the loop's recorder owns the file).
    SessionSaved(Box<Session>),
    /// Models for the picker; `done` when every provider has answered.
    ModelsListed {
        models: Vec<String>,
        errors: Vec<String>,
        done: bool,
    },
    Judged {
        run_id: String,
        judgement: Box<Judgement>,
    },
}

#[derive(Debug, PartialEq)]
pub enum Effect {
    StartRun {
        messages: Vec<Message>,
        baseline: bool,
    },
    /// Run only the aggregator again on these answers (with this prompt, when given).
    Reaggregate {
        messages: Vec<Message>,
        responses: Vec<String>,
        prompt: Option<String>,
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
    Judge {
        run_id: String,
        model: String,
        question: String,
        moa: String,
        baseline: String,
    },
    StoreJudgement {
        run_id: String,
        judgement: Box<Judgement>,
    },
}

pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    app.dirty = true;
    match msg {
        Msg::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Msg::Key(_) => {
            app.dirty = false;
            vec![]
        }
        Msg::Mouse(m) => mouse(app, m),
        Msg::Resize => vec![],
        Msg::Run(ev) => {
            run_event(app, *ev);
            vec![]
        }
        Msg::Fetch(line) => {
            app.status = line;
            vec![]
        }
        Msg::FetchDone(Ok(())) => {
            app.running = false;
            app.status = "models ready: type a prompt".into();
            vec![]
        }
        Msg::FetchDone(Err(e)) => {
            app.running = false;
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
            app.status = e;
            vec![]
        }
        Msg::SessionsListed { sessions, skipped } => {
            app.browser.all = sessions;
            app.browser.skipped = skipped;
            app.browser.search.selected = 0;
            vec![]
        }
        Msg::SessionOpened(Ok(s)) => {
            open_session(app, *s);
            vec![]
        }
        Msg::SessionOpened(Err(e)) => {
            app.status = e;
            vec![]
        }
        Msg::SessionSaved(s) => {
            if !app.status.contains("saved in session") {
                app.status = format!("{} · saved in session {}", app.status, s.id);
            }
            app.shown_run = None;
            app.session = Some(*s);
            vec![]
        }
        Msg::ModelsListed {
            models,
            errors,
            done,
        } => {
            for m in models {
                if !app.picker.models.contains(&m) {
                    app.picker.models.push(m);
                }
            }
            app.picker.errors.extend(errors);
            app.picker.loading = !done;
            vec![]
        }
        Msg::Judged { run_id, judgement } => {
            app.judging = false;
            app.status = format!(
                "judge {}: MoA {}{}",
                judgement.judge_model,
                judgement.outcome.as_str(),
                if judgement.inconsistent {
                    " (inconsistent: the orders disagreed)"
                } else {
                    ""
                }
            );
            if let Some(r) = app
                .session
                .as_mut()
                .and_then(|s| s.runs.iter_mut().find(|r| r.record.id == run_id))
            {
                r.judgements.push((*judgement).clone());
            }
            vec![Effect::StoreJudgement { run_id, judgement }]
        }
    }
}

/// Show an opened session: its conversation, and its last run in the panes.
fn open_session(app: &mut App, s: Session) {
    app.conversation = s.messages.clone();
    app.status = format!(
        "opened session {:?}: {} run(s) · Alt+←/→ browse runs · type to continue · Ctrl+A re-aggregates",
        s.name,
        s.runs.len()
    );
    let n = s.runs.len();
    app.session = Some(s);
    app.overlay = Overlay::None;
    app.layer = None;
    if n > 0 {
        show_run(app, n - 1);
    } else {
        app.run = None;
    }
}

/// Show run `k` of the session in the panes; later re-aggregation works on its answers.
fn show_run(app: &mut App, k: usize) {
    let Some(run) = app.session.as_ref().and_then(|s| s.runs.get(k)).cloned() else {
        return;
    };
    app.preset = Arc::new(run.preset.clone());
    app.run = Some(app.run_view_from(&run));
    app.last_messages = run.record.messages.clone();
    app.shown_run = Some(k);
    app.layer = None;
    app.focus = Focus::Input;
}

fn ctrl(k: &KeyEvent, c: char) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char(c)
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if ctrl(&k, 'c') {
        app.quit = true;
        return vec![];
    }
    match app.overlay {
        Overlay::PromptEditor => return editor_key(app, k),
        Overlay::Sessions => return browser_key(app, k),
        Overlay::Compare => return compare_key(app, k),
        Overlay::Agents => return agents_key(app, k),
        Overlay::ModelPicker => return picker_key(app, k),
        Overlay::None | Overlay::Help => {}
    }
    if app.overlay == Overlay::Help {
        match k.code {
            KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q') | KeyCode::Char('?') => {
                app.overlay = Overlay::None;
                app.help_scroll = 0;
            }
            KeyCode::Up | KeyCode::PageUp => app.help_scroll = app.help_scroll.saturating_sub(3),
            KeyCode::Down | KeyCode::PageDown => {
                let max = super::view::help_lines().saturating_sub(4);
                app.help_scroll = (app.help_scroll + 3).min(max);
            }
            _ => {}
        }
        return vec![];
    }
    let input_empty = app.input.is_empty();
    let on_pane = matches!(app.focus, Focus::Pane(_));
    match k.code {
        KeyCode::F(1) => {
            app.overlay = Overlay::Help;
            return vec![];
        }
        KeyCode::Char('?') if on_pane || input_empty => {
            app.overlay = Overlay::Help;
            return vec![];
        }
        KeyCode::Esc => {
            if app.running {
                app.status = "cancelling…".into();
                return vec![Effect::Cancel];
            }
            if app.maximized.is_some() {
                app.maximized = None;
            } else {
                app.focus = Focus::Input;
            }
            return vec![];
        }
        KeyCode::Tab => {
            cycle_focus(app, 1);
            return vec![];
        }
        KeyCode::BackTab => {
            cycle_focus(app, -1);
            return vec![];
        }
        KeyCode::F(2) => {
            toggle_maximize(app);
            return vec![];
        }
        KeyCode::F(3) => {
            app.overlay = Overlay::Compare;
            return vec![];
        }
        KeyCode::F(4) => {
            app.overlay = Overlay::Agents;
            app.agent_row = app.agent_row.min(app.agent_refs().len().saturating_sub(1));
            return vec![];
        }
        KeyCode::Left | KeyCode::Right
            if k.modifiers.contains(KeyModifiers::ALT) && !app.running =>
        {
            let n = app.session.as_ref().map_or(0, |s| s.runs.len());
            if n == 0 {
                app.status = "no saved runs in this session yet".into();
                return vec![];
            }
            let cur = app.shown_run.unwrap_or(n - 1) as i64;
            let next = (cur + if k.code == KeyCode::Left { -1 } else { 1 }).clamp(0, n as i64 - 1);
            show_run(app, next as usize);
            app.status = format!("run {} of {n} in this session", next + 1);
            return vec![];
        }
        KeyCode::Left if k.modifiers.contains(KeyModifiers::CONTROL) => {
            switch_layer(app, -1);
            return vec![];
        }
        KeyCode::Right if k.modifiers.contains(KeyModifiers::CONTROL) => {
            switch_layer(app, 1);
            return vec![];
        }
        _ => {}
    }
    if ctrl(&k, 'a') && !app.running {
        return reaggregate(app, None);
    }
    if ctrl(&k, 'e') {
        match app.aggregate_prompt() {
            Some(p) => {
                app.editor =
                    ratatui_textarea::TextArea::new(p.lines().map(str::to_string).collect());
                app.overlay = Overlay::PromptEditor;
            }
            None => app.status = format!("preset {} has no aggregate step", app.preset.name),
        }
        return vec![];
    }
    if ctrl(&k, 'b') {
        app.baseline_on = !app.baseline_on;
        app.status = format!("baseline {}", if app.baseline_on { "on" } else { "off" });
        return vec![];
    }
    if ctrl(&k, 'n') && !app.running {
        app.conversation.clear();
        app.run = None;
        app.session = None;
        app.shown_run = None;
        app.status = "new conversation (a new session is saved with its first run)".into();
        return vec![Effect::NewSession];
    }
    if ctrl(&k, 'o') && !app.running {
        app.overlay = Overlay::Sessions;
        app.browser.search = Default::default();
        return vec![Effect::ListSessions];
    }
    if ctrl(&k, 'p') && !app.running {
        let i = app
            .presets
            .iter()
            .position(|p| *p == app.preset.name)
            .map_or(0, |i| i + 1);
        if let Some(name) = app.presets.get(i % app.presets.len().max(1)).cloned() {
            return vec![Effect::LoadPreset(name)];
        }
        return vec![];
    }
    if ctrl(&k, 'r') && !app.running {
        // Run the last prompt again (same conversation before it).
        if let Some(last) = app.history.last().cloned() {
            if app
                .conversation
                .last()
                .is_some_and(|m| m.role == crate::provider::Role::Assistant)
            {
                app.conversation
                    .truncate(app.conversation.len().saturating_sub(2));
            }
            return start(app, last);
        }
        return vec![];
    }
    match app.focus {
        Focus::Pane(id) => pane_key(app, id, k),
        Focus::Input => input_key(app, k),
    }
}

/// Keys in the aggregator prompt editor: Ctrl+S applies (and re-aggregates when there are answers),
/// Ctrl+T loads the next template, Esc leaves it unchanged.
fn editor_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if k.code == KeyCode::Esc {
        app.overlay = Overlay::None;
        app.status = "prompt unchanged".into();
        return vec![];
    }
    if ctrl(&k, 't') {
        let current = app.editor.lines().join("\n");
        let i = app
            .templates
            .iter()
            .position(|(_, t)| *t == current)
            .map_or(0, |i| i + 1);
        if let Some((name, text)) = app.templates.get(i % app.templates.len().max(1)).cloned() {
            app.editor =
                ratatui_textarea::TextArea::new(text.lines().map(str::to_string).collect());
            app.status = format!("template {name}");
        }
        return vec![];
    }
    if ctrl(&k, 's') {
        let prompt = app.editor.lines().join("\n");
        app.overlay = Overlay::None;
        app.preset = Arc::new(with_aggregate_prompt(&app.preset, prompt.clone()));
        app.status = "aggregator prompt updated".into();
        if !app.running && !app.answers_to_aggregate().is_empty() {
            return reaggregate(app, Some(prompt));
        }
        return vec![];
    }
    if k.code == KeyCode::Enter {
        app.editor.insert_newline();
        return vec![];
    }
    app.editor.input(k);
    vec![]
}

fn with_aggregate_prompt(p: &Preset, prompt: String) -> Preset {
    let mut p = p.clone();
    if let Some(crate::engine::preset::Step::Aggregate { prompt: old, .. }) = p
        .steps
        .iter_mut()
        .rev()
        .find(|s| matches!(s, crate::engine::preset::Step::Aggregate { .. }))
    {
        *old = prompt;
    }
    p
}

fn reaggregate(app: &mut App, prompt: Option<String>) -> Vec<Effect> {
    let responses = app.answers_to_aggregate();
    let has_final = app.run.as_ref().is_some_and(|r| r.final_step.is_some());
    if responses.is_empty() || !has_final || app.last_messages.is_empty() {
        app.status = "nothing to re-aggregate yet: run a prompt first".into();
        return vec![];
    }
    if let Some(p) = app.pane_by_id_mut(PaneId::Final) {
        p.reset();
    }
    if let Some(r) = app.run.as_mut() {
        r.record = None;
    }
    app.running = true;
    app.reaggregating = true;
    app.status = format!("re-running the aggregator on {} answers…", responses.len());
    vec![Effect::Reaggregate {
        messages: app.last_messages.clone(),
        responses,
        prompt,
    }]
}

fn input_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let newline = (k.code == KeyCode::Enter
        && k.modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SHIFT))
        || ctrl(&k, 'j');
    if newline {
        app.input.insert_newline();
        return vec![];
    }
    if k.code == KeyCode::Enter {
        if app.running {
            app.status = "a run is in progress: wait, or Esc to cancel it".into();
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
        return start(app, text);
    }
    if k.modifiers.contains(KeyModifiers::CONTROL) && matches!(k.code, KeyCode::Up | KeyCode::Down)
    {
        history(app, if k.code == KeyCode::Up { -1 } else { 1 });
        return vec![];
    }
    app.input.input(k);
    vec![]
}

fn fresh_input() -> ratatui_textarea::TextArea<'static> {
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
    app.reaggregating = false;
    app.running = true;
    app.run = Some(app.new_run_view(String::new()));
    app.layer = None;
    app.status = format!("running {}…", app.preset.name);
    vec![Effect::StartRun {
        messages,
        baseline: app.baseline_on,
    }]
}

fn pane_key(app: &mut App, id: PaneId, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Up | KeyCode::Char('k') => scroll(app, id, 1),
        KeyCode::Down | KeyCode::Char('j') => scroll(app, id, -1),
        KeyCode::PageUp => scroll(app, id, 10),
        KeyCode::PageDown => scroll(app, id, -10),
        KeyCode::Home | KeyCode::Char('g') => scroll(app, id, 1_000_000),
        KeyCode::End | KeyCode::Char('G') => {
            if let Some(p) = app.pane_by_id_mut(id) {
                p.scroll_from_end = None;
            }
        }
        KeyCode::Char('z') | KeyCode::Enter => toggle_maximize(app),
        KeyCode::Char('[') => switch_layer(app, -1),
        KeyCode::Char(']') => switch_layer(app, 1),
        KeyCode::Char('y') => {
            if let Some(p) = app.pane(id) {
                let text = p.text.clone();
                app.status = format!(
                    "copied {} characters to the clipboard",
                    text.chars().count()
                );
                return vec![Effect::Copy(text)];
            }
        }
        KeyCode::Char('i') => app.focus = Focus::Input,
        KeyCode::Char('r') => return rerun_proposer(app, id),
        _ => {}
    }
    vec![]
}

/// Run one proposer of the first layer again, on the same conversation; its pane shows the new
/// answer and a re-aggregation (Ctrl+A) then uses it.
fn rerun_proposer(app: &mut App, id: PaneId) -> Vec<Effect> {
    let PaneId::Call(step, slot) = id else {
        app.status = "r re-runs a proposer: focus a proposer pane (Tab)".into();
        return vec![];
    };
    if app.running {
        app.status = "a run is in progress: wait, or Esc to cancel it".into();
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
    app.running = true;
    app.rerun = Some((step, slot));
    app.status = format!("re-running {} …", agent.model);
    vec![Effect::RerunCall {
        agent,
        messages: app.last_messages.clone(),
    }]
}

fn browser_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let n = app.browser.matches().len();
    if app.browser.search.key(&k, n) {
        return vec![];
    }
    match k.code {
        KeyCode::Esc => app.overlay = Overlay::None,
        KeyCode::Enter => {
            let id = app
                .browser
                .matches()
                .get(app.browser.search.selected)
                .map(|s| s.id.clone());
            if let Some(id) = id {
                app.status = format!("opening {id}…");
                return vec![Effect::OpenSession(id)];
            }
        }
        _ => {}
    }
    vec![]
}

fn compare_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Esc | KeyCode::F(3) | KeyCode::Char('q') => app.overlay = Overlay::None,
        KeyCode::Char('j') if !app.judging => {
            let Some(r) = app.run.as_ref().and_then(|r| r.record.as_ref()) else {
                app.status = "no finished run to judge".into();
                return vec![];
            };
            let (Some(f), Some(b)) = (&r.final_answer, &r.baseline) else {
                app.status = "the judge needs a final answer and a baseline answer (Ctrl+B turns the baseline on)".into();
                return vec![];
            };
            let model = app.judge_model.clone().or_else(|| {
                app.preset.steps.iter().rev().find_map(|s| match s {
                    Step::Aggregate { agent, .. } => Some(agent.model.clone()),
                    _ => None,
                })
            });
            let Some(model) = model else {
                app.status = "no judge model: set judge_model in config.toml".into();
                return vec![];
            };
            app.judging = true;
            app.status = format!("judging with {model} (both orders)…");
            return vec![Effect::Judge {
                run_id: r.id.clone(),
                model,
                question: crate::engine::prompts::last_user(&r.messages).to_string(),
                moa: f.text.clone(),
                baseline: b.text.clone(),
            }];
        }
        _ => {}
    }
    vec![]
}

fn agents_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let refs = app.agent_refs();
    let Some(&sel) = refs.get(app.agent_row) else {
        app.overlay = Overlay::None;
        return vec![];
    };
    let edit = |app: &mut App, f: &mut dyn FnMut(&mut AgentSpec)| {
        if let Some(a) = agent_in_mut(Arc::make_mut(&mut app.preset), sel) {
            f(a);
        }
    };
    match k.code {
        KeyCode::Esc | KeyCode::F(4) | KeyCode::Char('q') => {
            app.overlay = Overlay::None;
            app.status =
                "agents: changes apply to the next run (Ctrl+R runs the last prompt again)".into();
        }
        KeyCode::Up => app.agent_row = app.agent_row.saturating_sub(1),
        KeyCode::Down => app.agent_row = (app.agent_row + 1).min(refs.len() - 1),
        KeyCode::Char('+') | KeyCode::Char('=') | KeyCode::Char('-') => {
            let d = if k.code == KeyCode::Char('-') {
                -0.1
            } else {
                0.1
            };
            edit(app, &mut |a| {
                let t = a.temperature.unwrap_or(0.7) + d;
                // One decimal, as a person would type it (and as it is sent).
                a.temperature = Some(((t.clamp(0.0, 2.0)) * 10.0).round() / 10.0);
            });
        }
        KeyCode::Char(']') | KeyCode::Char('[') => {
            let up = k.code == KeyCode::Char(']');
            edit(app, &mut |a| {
                let m = a.max_tokens.unwrap_or(512);
                a.max_tokens = Some(
                    if up {
                        m.saturating_mul(2)
                    } else {
                        (m / 2).max(16)
                    }
                    .min(32_768),
                );
            });
        }
        KeyCode::Char('m') | KeyCode::Enter => {
            app.overlay = Overlay::ModelPicker;
            app.picker = super::state::Picker {
                models: app.preset.models(true),
                loading: true,
                ..Default::default()
            };
            return vec![Effect::ListModels];
        }
        KeyCode::Char('a') => {
            if let AgentRef::Many(i, kk) = sel
                && let Some(
                    Step::Propose { agents, .. }
                    | Step::Synthesize { agents, .. }
                    | Step::Refine { agents, .. },
                ) = Arc::make_mut(&mut app.preset).steps.get_mut(i)
            {
                let copy = agents[kk].clone();
                agents.insert(kk + 1, copy);
                app.agent_row += 1;
            } else {
                app.status =
                    "only steps with several agents take more (propose, synthesize, refine)".into();
            }
        }
        KeyCode::Char('d') | KeyCode::Delete => {
            if let AgentRef::Many(i, kk) = sel
                && let Some(
                    Step::Propose { agents, .. }
                    | Step::Synthesize { agents, .. }
                    | Step::Refine { agents, .. },
                ) = Arc::make_mut(&mut app.preset).steps.get_mut(i)
                && agents.len() > 1
            {
                agents.remove(kk);
                app.agent_row = app.agent_row.min(refs.len() - 2);
            } else {
                app.status = "a step keeps at least one agent".into();
            }
        }
        _ => {}
    }
    vec![]
}

fn picker_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let n = app.picker.matches().len();
    if app.picker.search.key(&k, n) {
        return vec![];
    }
    match k.code {
        KeyCode::Esc => app.overlay = Overlay::Agents,
        KeyCode::Enter => {
            let typed = app.picker.search.query.trim().to_string();
            let model = app
                .picker
                .matches()
                .get(app.picker.search.selected)
                .map(|m| m.to_string())
                .or_else(|| typed.contains('/').then_some(typed));
            let Some(model) = model else {
                app.status = "pick a model from the list, or type PROVIDER/MODEL".into();
                return vec![];
            };
            let refs = app.agent_refs();
            if let Some(&sel) = refs.get(app.agent_row)
                && let Some(a) = agent_in_mut(Arc::make_mut(&mut app.preset), sel)
            {
                a.model = model.clone();
            }
            app.status = format!("model {model}: used from the next run");
            app.overlay = Overlay::Agents;
        }
        _ => {}
    }
    vec![]
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

fn run_event(app: &mut App, ev: RunEvent) {
    // A re-aggregation is a one-step run: its step 0 is the aggregator shown in the final pane.
    let ev = if app.reaggregating {
        remap_to_final(app, ev)
    } else if let Some((step, slot)) = app.rerun {
        remap(ev, step, Some(slot))
    } else {
        ev
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
                p.started_at = Some(std::time::Instant::now());
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
                p.first_token_at.get_or_insert_with(std::time::Instant::now);
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
        RunEvent::RunDone { record } if app.rerun.is_some() => {
            app.running = false;
            app.rerun = None;
            let ok = record
                .steps
                .first()
                .and_then(|s| s.calls.first())
                .is_some_and(|c| c.status == crate::engine::record::CallStatus::Ok);
            app.status = if ok {
                "proposer re-run: Ctrl+A re-aggregates with its new answer".into()
            } else {
                "the proposer's re-run failed: see its pane".into()
            };
        }
        RunEvent::RunDone { record } if app.reaggregating => {
            app.running = false;
            app.reaggregating = false;
            match &record.final_answer {
                Some(f) if f.status == crate::engine::record::CallStatus::Ok => {
                    // The new answer replaces the old one as this turn's reply.
                    if let Some(last) = app
                        .conversation
                        .last_mut()
                        .filter(|m| m.role == crate::provider::Role::Assistant)
                    {
                        last.content = f.text.clone();
                    }
                    app.status = format!(
                        "re-aggregated in {:.1} s ({})",
                        record.wall_ms as f64 / 1000.0,
                        f.source
                    );
                }
                _ => app.status = "re-aggregation produced no answer".into(),
            }
        }
        RunEvent::RunDone { record } => {
            app.running = false;
            let prompt = app.pending_prompt.take();
            match (&record.final_answer, prompt) {
                (Some(f), Some(p)) if f.status == crate::engine::record::CallStatus::Ok => {
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
                r.record = Some(*record);
            }
        }
    }
}

fn remap_to_final(app: &App, ev: RunEvent) -> RunEvent {
    match app.run.as_ref().and_then(|r| r.final_step) {
        Some(fs) => remap(ev, fs, None),
        None => ev,
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
