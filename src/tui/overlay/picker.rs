//! The model picker (m in the agents editor): the configured models and what each reachable
//! provider lists at /v1/models, filtered as you type; or a whole PROVIDER/MODEL typed in.

use std::sync::Arc;

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;

use super::super::keymap::{self, Action, Scope};
use super::super::state::{App, agent_in_mut};
use super::super::update::Effect;
use super::search::Search;
use super::{Overlay, SearchList, search_list};

#[derive(Default)]
pub struct Picker {
    pub models: Vec<String>,
    /// Providers that could not be asked (/v1/models failed), with why.
    pub errors: Vec<String>,
    pub loading: bool,
    pub search: Search,
}

impl Picker {
    pub fn matches(&self) -> Vec<&str> {
        self.models
            .iter()
            .filter(|m| self.search.accepts(m))
            .map(String::as_str)
            .collect()
    }
}

pub fn open(app: &mut App) -> Vec<Effect> {
    app.overlay = Overlay::ModelPicker;
    app.picker = Picker {
        models: app.preset.models(true),
        loading: true,
        ..Default::default()
    };
    vec![Effect::ListModels]
}

pub fn listed(app: &mut App, models: Vec<String>, errors: Vec<String>, done: bool) {
    for m in models {
        if !app.picker.models.contains(&m) {
            app.picker.models.push(m);
        }
    }
    app.picker.errors.extend(errors);
    app.picker.loading = !done;
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let action = keymap::lookup(&k, Scope::Picker);
    let n = app.picker.matches().len();
    if action.is_none() && app.picker.search.key(&k, n) {
        return vec![];
    }
    match action {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => app.overlay = Overlay::Agents,
        Some(Action::Up | Action::Down) => {
            app.picker.search.key(&k, n);
        }
        Some(Action::Choose) => {
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
            if let Some(&sel) = refs.get(app.agents.row)
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

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let matches = app.picker.matches();
    let mut note = format!(" {} of {} models", matches.len(), app.picker.models.len());
    if app.picker.loading {
        note.push_str(" · asking providers (/v1/models)…");
    }
    if let Some(e) = app.picker.errors.first() {
        note.push_str(&format!(" · {}", crate::text::strip_controls(e)));
    }
    search_list(
        app,
        f,
        area,
        SearchList {
            size: (70, 70),
            title: " model (type to filter, or a whole PROVIDER/MODEL) ",
            scope: Scope::Picker,
            label: "model",
            search: &app.picker.search,
            rows: matches
                .iter()
                .map(|m| crate::text::strip_controls(m).into_owned())
                .collect(),
            empty: " no listed model matches: Enter uses what you typed if it is PROVIDER/MODEL",
            note,
        },
    );
}
