//! The help overlay: every key, in one place.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::super::state::App;

pub const KEYS: &[(&str, &str)] = &[
    (
        "Enter",
        "send the prompt (a follow-up turn after the first)",
    ),
    ("Alt+Enter, Ctrl+J", "insert a newline in the prompt"),
    ("Ctrl+Up / Ctrl+Down", "earlier / later prompts (history)"),
    (
        "Esc",
        "cancel the running request(s); close this overlay; un-maximize",
    ),
    (
        "Tab / Shift+Tab",
        "move the focus between the prompt and the panes",
    ),
    (
        "↑ ↓ PgUp PgDn Home End",
        "scroll the focused pane (End follows the tail again)",
    ),
    ("mouse wheel", "scroll the pane under the pointer"),
    ("F2, z", "maximize the focused pane (again to restore)"),
    ("y", "copy the focused pane's text (OSC 52 clipboard)"),
    (
        "Ctrl+← / Ctrl+→, [ ]",
        "show the previous / next layer of a multi-layer preset",
    ),
    ("Ctrl+R", "run the last prompt again"),
    (
        "Ctrl+A",
        "re-run only the aggregator on the answers shown (prompt tuning)",
    ),
    (
        "Ctrl+E",
        "edit the aggregator prompt (Ctrl+T template, Ctrl+S apply)",
    ),
    (
        "r",
        "re-run the focused proposer (Ctrl+A then re-aggregates)",
    ),
    (
        "F3",
        "MoA vs baseline: latency, tokens, cost, ratios; j asks the judge",
    ),
    (
        "F4",
        "agents: model (picker, /v1/models), temperature, max tokens, add/remove",
    ),
    (
        "Ctrl+O",
        "sessions: search, open, continue; Alt+←/→ browse a session's runs",
    ),
    ("Ctrl+P", "switch to the next preset"),
    ("Ctrl+B", "toggle the single-model baseline"),
    (
        "Ctrl+N",
        "start a new conversation (and session; runs are saved as they end)",
    ),
    (
        "F1, ?",
        "this help (? when the prompt is empty or a pane has the focus)",
    ),
    ("Ctrl+C", "quit (the terminal is restored)"),
];

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let w = 100.min(area.width.saturating_sub(4));
    let h = (KEYS.len() as u16 + 2).min(area.height.saturating_sub(2));
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                ratatui::text::Span::styled(
                    format!(" {k:<24}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                ratatui::text::Span::raw(*d),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .scroll((app.help_scroll, 0))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" keys ")
                    .title_bottom(" ↑↓ scroll · Esc, F1 or q closes this help "),
            ),
        r,
    );
}
