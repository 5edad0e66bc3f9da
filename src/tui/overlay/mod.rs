//! Overlays over the workbench, one module each holding its state, its keys and its drawing (as
//! yazi-fm's `pick/` and gitui's `popups/` do). `key` and `draw` here only dispatch.

pub mod agents;
pub mod compare;
pub mod help;
pub mod picker;
pub mod prompt;
pub mod search;
pub mod sessions;

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::keymap::Scope;
use super::state::App;
use super::update::Effect;
use search::Search;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// Editing the aggregator's prompt (`App::editor`).
    PromptEditor,
    /// Saved sessions, with a search line (`App::browser`).
    Sessions,
    /// MoA's final answer against the baseline, with costs, ratios and judge verdicts.
    Compare,
    /// Every agent of the preset: model, temperature, max tokens; add and remove proposers.
    Agents,
    /// Choosing a model for the selected agent (`App::picker`).
    ModelPicker,
}

impl Overlay {
    /// The keymap scope of the overlay (None: no overlay is open).
    pub fn scope(self) -> Option<Scope> {
        Some(match self {
            Overlay::None => return None,
            Overlay::Help => Scope::Help,
            Overlay::PromptEditor => Scope::PromptEditor,
            Overlay::Sessions => Scope::Sessions,
            Overlay::Compare => Scope::Compare,
            Overlay::Agents => Scope::Agents,
            Overlay::ModelPicker => Scope::Picker,
        })
    }
}

/// A key for the open overlay; None when no overlay is open.
pub fn key(app: &mut App, k: KeyEvent) -> Option<Vec<Effect>> {
    Some(match app.overlay {
        Overlay::None => return None,
        Overlay::Help => help::key(app, k),
        Overlay::PromptEditor => prompt::key(app, k),
        Overlay::Sessions => sessions::key(app, k),
        Overlay::Compare => compare::key(app, k),
        Overlay::Agents => agents::key(app, k),
        Overlay::ModelPicker => picker::key(app, k),
    })
}

/// Pasted text for the open overlay; false when the overlay takes no text (or none is open).
pub fn paste(app: &mut App, text: &str) -> bool {
    match app.overlay {
        Overlay::PromptEditor => app.editor.paste(text),
        Overlay::Sessions => app.browser.search.paste(text),
        Overlay::ModelPicker => app.picker.search.paste(text),
        Overlay::None | Overlay::Help | Overlay::Compare | Overlay::Agents => return false,
    }
    true
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    match app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(app, f, area),
        Overlay::PromptEditor => prompt::draw(app, f, area),
        Overlay::Sessions => sessions::draw(app, f, area),
        Overlay::Compare => compare::draw(app, f, area),
        Overlay::Agents => agents::draw(app, f, area),
        Overlay::ModelPicker => picker::draw(app, f, area),
    }
}

// Widgets the overlays share.

pub(crate) fn centered(area: Rect, w_pct: u16, h_pct: u16) -> Rect {
    let w = (area.width * w_pct / 100).max(40).min(area.width);
    let h = (area.height * h_pct / 100).max(8).min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// An overlay's frame: its title, and its keys along the bottom (from the keymap, fitted).
pub(crate) fn frame(app: &App, title: String, scope: Scope, width: u16) -> Block<'static> {
    let keys = super::view::hint_line(
        super::keymap::hints(scope),
        width.saturating_sub(4) as usize,
    );
    Block::default()
        .borders(Borders::ALL)
        .title(title)
        .title_bottom(format!(" {keys} "))
        .border_style(if app.color {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default()
        })
}

pub(crate) fn selected(on: bool) -> Style {
    if on {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default()
    }
}

/// Rows `first..` that keep `selected` in view in `height` rows.
pub(crate) fn window(selected: usize, height: usize) -> usize {
    selected.saturating_sub(height.saturating_sub(1))
}

/// What a search overlay shows: its frame, the filter line, the matching rows and a note.
pub(crate) struct SearchList<'a> {
    pub size: (u16, u16),
    pub title: &'a str,
    pub scope: Scope,
    pub label: &'a str,
    pub search: &'a Search,
    pub rows: Vec<String>,
    pub empty: &'a str,
    pub note: String,
}

pub(crate) fn search_list(app: &App, f: &mut Frame, area: Rect, s: SearchList<'_>) {
    let r = centered(area, s.size.0, s.size.1);
    let block = frame(app, s.title.to_string(), s.scope, r.width);
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    let [line, list, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    f.render_widget(
        Paragraph::new(format!(" {}: {}▏", s.label, s.search.query)),
        line,
    );
    let first = window(s.search.selected, list.height as usize);
    let lines: Vec<Line> = if s.rows.is_empty() {
        vec![Line::from(s.empty)]
    } else {
        s.rows
            .into_iter()
            .enumerate()
            .skip(first)
            .take(list.height as usize)
            .map(|(i, row)| Line::styled(format!(" {row}"), selected(i == s.search.selected)))
            .collect()
    };
    f.render_widget(Paragraph::new(lines), list);
    f.render_widget(
        Paragraph::new(Span::styled(
            s.note,
            Style::default().add_modifier(Modifier::DIM),
        )),
        foot,
    );
}
