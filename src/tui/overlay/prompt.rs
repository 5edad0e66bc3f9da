//! The aggregator prompt editor (Ctrl+E): edit the prompt, cycle the templates, apply it and
//! re-aggregate the answers shown.

use std::sync::Arc;

use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::widgets::Clear;
use ratatui_textarea::TextArea;

use super::super::keymap::{self, Action, Scope};
use super::super::state::App;
use super::super::update::{Effect, reaggregate};
use super::Overlay;
use crate::engine::preset::{Preset, Step};

#[derive(Default)]
pub struct PromptEditor {
    pub text: TextArea<'static>,
}

impl PromptEditor {
    pub fn set(&mut self, text: &str) {
        self.text = TextArea::new(text.lines().map(str::to_string).collect());
    }

    pub fn content(&self) -> String {
        self.text.lines().join("\n")
    }

    pub fn paste(&mut self, text: &str) {
        self.text.insert_str(super::super::update::paste_text(text));
    }
}

/// Ctrl+E: open the editor on the preset's aggregator prompt.
pub fn open(app: &mut App) {
    match app.aggregate_prompt().map(str::to_string) {
        Some(p) => {
            app.editor.set(&p);
            app.overlay = Overlay::PromptEditor;
        }
        None => app.status = format!("preset {} has no aggregate step", app.preset.name),
    }
}

/// Ctrl+S applies (and re-aggregates when there are answers), Ctrl+T loads the next template, Esc
/// leaves the prompt unchanged; every other key edits.
pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match keymap::lookup(&k, Scope::PromptEditor) {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => {
            app.overlay = Overlay::None;
            app.status = "prompt unchanged".into();
        }
        Some(Action::NextTemplate) => {
            let current = app.editor.content();
            let i = app
                .templates
                .iter()
                .position(|(_, t)| *t == current)
                .map_or(0, |i| i + 1);
            if let Some((name, text)) = app.templates.get(i % app.templates.len().max(1)).cloned() {
                app.editor.set(&text);
                app.status = format!("template {name}");
            }
        }
        Some(Action::Apply) => {
            let prompt = app.editor.content();
            app.overlay = Overlay::None;
            app.preset = Arc::new(with_aggregate_prompt(&app.preset, prompt.clone()));
            app.status = format!(
                "aggregator prompt: {}",
                app.aggregate_prompt_label(Some(&prompt))
                    .unwrap_or_default()
            );
            if !app.running() && !app.answers_to_aggregate().is_empty() {
                return reaggregate(app, Some(prompt));
            }
        }
        _ if k.code == KeyCode::Enter => app.editor.text.insert_newline(),
        _ => {
            app.editor.text.input(k);
        }
    }
    vec![]
}

fn with_aggregate_prompt(p: &Preset, prompt: String) -> Preset {
    let mut p = p.clone();
    if let Some(Step::Aggregate { prompt: old, .. }) = p
        .steps
        .iter_mut()
        .rev()
        .find(|s| matches!(s, Step::Aggregate { .. }))
    {
        *old = prompt;
    }
    p
}

/// The aggregator prompt, editable: {query} {responses} {n} are filled in at run time.
pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let r = super::centered(area, 80, 75);
    let label = app
        .aggregate_prompt_label(Some(&app.editor.content()))
        .unwrap_or_default();
    let block = super::frame(
        app,
        format!(" aggregator prompt: {label} ({{query}} {{responses}} {{n}}) "),
        Scope::PromptEditor,
        r.width,
    );
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    f.render_widget(&app.editor.text, inner);
}
