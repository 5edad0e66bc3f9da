//! The help overlay: every key of the keymap, by where it applies.

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::super::keymap::{self, Action, Scope};
use super::super::state::App;
use super::super::update::Effect;
use super::Overlay;

#[derive(Default)]
pub struct HelpState {
    /// Lines scrolled down (small terminals).
    pub scroll: u16,
}

const SCOPES: &[Scope] = &[
    Scope::Global,
    Scope::Input,
    Scope::Pane,
    Scope::PromptEditor,
    Scope::Sessions,
    Scope::Compare,
    Scope::Agents,
    Scope::Picker,
    Scope::Replay,
];

/// The help's lines, from the keymap.
pub fn lines() -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for (i, scope) in SCOPES.iter().enumerate() {
        if i > 0 {
            out.push(Line::from(""));
        }
        out.push(Line::from(Span::styled(
            format!(" {}", scope.title()),
            Style::default().add_modifier(Modifier::UNDERLINED),
        )));
        for b in keymap::bindings(*scope) {
            out.push(Line::from(vec![
                Span::styled(
                    format!("   {:<22}", b.label),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help),
            ]));
        }
    }
    out.push(Line::from(""));
    out.push(Line::from(
        " Pasting (bracketed paste) puts the text in the prompt as it is: nothing is sent before Enter.",
    ));
    out
}

pub fn open(app: &mut App) {
    app.overlay = Overlay::Help;
    app.help.scroll = 0;
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match keymap::lookup(&k, Scope::Help) {
        Some(Action::Close) => {
            app.overlay = Overlay::None;
            app.help.scroll = 0;
        }
        Some(Action::Quit) => app.quit = true,
        Some(Action::ScrollUp) => app.help.scroll = app.help.scroll.saturating_sub(3),
        Some(Action::ScrollDown) => {
            let max = (lines().len() as u16).saturating_sub(4);
            app.help.scroll = (app.help.scroll + 3).min(max);
        }
        _ => {}
    }
    vec![]
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let all = lines();
    let w = 110.min(area.width.saturating_sub(4));
    let h = (all.len() as u16 + 2).min(area.height.saturating_sub(2));
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(all)
            .wrap(Wrap { trim: false })
            .scroll((app.help.scroll, 0))
            .block(super::frame(app, " keys ".into(), Scope::Help, w)),
        r,
    );
}
