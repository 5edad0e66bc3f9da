//! The sessions browser (Ctrl+O): search the saved sessions, open one; an opened session shows its
//! last run, Alt+←/→ walk its runs, typing continues it. Listing and opening read files, so they
//! run off the UI thread and answer with a message.

use std::sync::Arc;

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;

use super::super::keymap::{self, Action, Scope};
use super::super::state::{App, Focus};
use super::super::update::Effect;
use super::search::Search;
use super::{Overlay, SearchList, search_list};
use crate::session::Session;
use crate::session::store::Summary;

/// The sessions browser's state.
#[derive(Default)]
pub struct Browser {
    pub all: Vec<Summary>,
    /// Files that could not be read (damaged, newer), shown as a count with the first reason.
    pub skipped: Vec<String>,
    pub search: Search,
    /// The list is being read.
    pub loading: bool,
}

impl Browser {
    /// Sessions whose name or id contains every word of the query (case-insensitive).
    pub fn matches(&self) -> Vec<&Summary> {
        self.all
            .iter()
            .filter(|s| {
                self.search.accepts(&format!(
                    "{} {} {}",
                    s.name,
                    s.id,
                    s.preset.as_deref().unwrap_or("")
                ))
            })
            .collect()
    }
}

pub fn open(app: &mut App) -> Vec<Effect> {
    app.overlay = Overlay::Sessions;
    app.browser.search = Default::default();
    app.browser.loading = true;
    vec![Effect::ListSessions]
}

pub fn listed(app: &mut App, sessions: Vec<Summary>, skipped: Vec<String>) {
    app.browser.all = sessions;
    app.browser.skipped = skipped;
    app.browser.search.selected = 0;
    app.browser.loading = false;
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let action = keymap::lookup(&k, Scope::Sessions);
    let n = app.browser.matches().len();
    if action.is_none() && app.browser.search.key(&k, n) {
        return vec![];
    }
    match action {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => app.overlay = Overlay::None,
        Some(Action::Up | Action::Down) => {
            app.browser.search.key(&k, n);
        }
        Some(Action::Open) => {
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

/// Show an opened session: its conversation, and its last run in the panes.
pub fn opened(app: &mut App, s: Session) {
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
pub fn show_run(app: &mut App, k: usize) {
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

/// Alt+←/→: the session's previous or next run.
pub fn step_run(app: &mut App, dir: i64) {
    let n = app.session.as_ref().map_or(0, |s| s.runs.len());
    if n == 0 {
        app.status = "no saved runs in this session yet".into();
        return;
    }
    let cur = app.shown_run.unwrap_or(n - 1) as i64;
    let next = (cur + dir).clamp(0, n as i64 - 1);
    show_run(app, next as usize);
    app.status = format!("run {} of {n} in this session", next + 1);
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let matches = app.browser.matches();
    let shown = format!("{} of {} shown", matches.len(), app.browser.all.len());
    let note = match app.browser.skipped.first() {
        Some(first) => format!(
            " {shown} · {} unreadable file(s) skipped: {first}",
            app.browser.skipped.len()
        ),
        None => format!(" {shown}"),
    };
    let rows = matches
        .iter()
        .map(|s| {
            format!(
                "{:<16} {:>2} run(s)  {:<16} {}{}",
                s.updated.get(..16).unwrap_or(&s.updated).replace('T', " "),
                s.runs,
                s.preset.as_deref().unwrap_or("-"),
                crate::text::strip_controls(&s.name),
                if s.interrupted { "  [interrupted]" } else { "" }
            )
        })
        .collect();
    search_list(
        app,
        f,
        area,
        SearchList {
            size: (85, 80),
            title: " sessions (type to search) ",
            scope: Scope::Sessions,
            label: "search",
            search: &app.browser.search,
            rows,
            empty: if app.browser.loading {
                " reading the sessions folder…"
            } else if app.browser.all.is_empty() {
                " no saved sessions yet: every run is saved as it ends"
            } else {
                " no session matches"
            },
            note,
        },
    );
}
