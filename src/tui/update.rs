//! `update(&mut App, Msg) -> Vec<Effect>`: every key, mouse event and run event changes the state
//! here, and anything that needs IO comes back as an effect for the loop to perform. No IO here.

use std::sync::Arc;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::state::{AgreementView, App, Focus, Overlay, PaneId, PaneStatus};
use crate::engine::RunEvent;
use crate::engine::preset::Preset;
use crate::provider::Message;

pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize,
    Run(Box<RunEvent>),
    /// Progress of fetching the embedded models (first use).
    Fetch(String),
    FetchDone(Result<(), String>),
    PresetLoaded(Result<Arc<Preset>, String>),
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
    }
}

fn ctrl(k: &KeyEvent, c: char) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char(c)
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if ctrl(&k, 'c') {
        app.quit = true;
        return vec![];
    }
    if app.overlay == Overlay::PromptEditor {
        return editor_key(app, k);
    }
    if app.overlay == Overlay::Help {
        if matches!(
            k.code,
            KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q') | KeyCode::Char('?')
        ) {
            app.overlay = Overlay::None;
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
        app.status = "new conversation".into();
        return vec![];
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
        p.text.clear();
        p.error = None;
        p.status = PaneStatus::Waiting;
        p.latency_ms = None;
        p.ttft_ms = None;
        p.started_at = None;
        p.first_token_at = None;
        p.scroll_from_end = None;
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
    use crate::engine::Stage;
    let Some(fs) = app.run.as_ref().and_then(|r| r.final_step) else {
        return ev;
    };
    let map = |stage: Stage| match stage {
        Stage::Step(0) => Stage::Step(fs),
        other => other,
    };
    match ev {
        RunEvent::CallStarted {
            mut tag,
            temperature,
            final_candidate,
        } => {
            tag.stage = map(tag.stage);
            RunEvent::CallStarted {
                tag,
                temperature,
                final_candidate,
            }
        }
        RunEvent::Delta { mut tag, text } => {
            tag.stage = map(tag.stage);
            RunEvent::Delta { tag, text }
        }
        RunEvent::CallFinished { mut tag, record } => {
            tag.stage = map(tag.stage);
            RunEvent::CallFinished { tag, record }
        }
        RunEvent::CallFailed { mut tag, record } => {
            tag.stage = map(tag.stage);
            RunEvent::CallFailed { tag, record }
        }
        RunEvent::Retrying {
            mut tag,
            attempt,
            delay_ms,
            reason,
        } => {
            tag.stage = map(tag.stage);
            RunEvent::Retrying {
                tag,
                attempt,
                delay_ms,
                reason,
            }
        }
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
