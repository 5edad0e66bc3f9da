//! One answer pane: model, temperature and status in the title; markdown body following the
//! tail while streaming; the error, when there is one, at the bottom in place.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::state::{App, Focus, PaneId, PaneStatus};
use crate::tui::markdown::wrap;

pub fn draw(app: &App, f: &mut Frame, area: Rect, id: PaneId) {
    let Some(p) = app.pane(id) else { return };
    app.areas.borrow_mut().push((id, area));
    let (icon, color) = match p.status {
        PaneStatus::Waiting => ("○ waiting", Color::DarkGray),
        PaneStatus::Streaming => ("● streaming", Color::Cyan),
        PaneStatus::Retrying => ("↻ retrying", Color::Yellow),
        PaneStatus::Done => ("✓", Color::Green),
        PaneStatus::Late => ("✓ late", Color::Yellow),
        PaneStatus::Failed => ("✗ failed", Color::Red),
        PaneStatus::TimedOut => ("✗ timed out", Color::Red),
        PaneStatus::Cancelled => ("■ cancelled", Color::Yellow),
    };
    let role = match id {
        PaneId::Final => "aggregator · ",
        PaneId::Baseline => "baseline · ",
        PaneId::Call(..) => "",
    };
    let temp = p
        .temperature
        .map(|t| format!(" · t={t}"))
        .unwrap_or_default();
    let timing = match (p.latency_ms, p.status) {
        (Some(ms), _) => format!(" {:.1}s", ms as f64 / 1000.0),
        _ => String::new(),
    };
    let styled = |c: Color| {
        if app.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    let title = Line::from(vec![
        Span::raw(format!(" {role}{}{temp} ", p.model)),
        Span::styled(format!("{icon}{timing} "), styled(color)),
    ]);
    let focused = app.focus == Focus::Pane(id);
    let mut block = Block::default().borders(Borders::ALL).title(title);
    if focused {
        block = block.border_style(styled(Color::Cyan).add_modifier(Modifier::BOLD));
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.width == 0 || inner.height == 0 {
        return;
    }
    let mut md = p.md.borrow_mut();
    let (cached, mut extra) = md.render(&p.text, inner.width);
    if let Some(err) = &p.error {
        let mut e = vec![
            Line::from(""),
            Line::from(Span::styled(
                format!("✗ {err}"),
                styled(Color::Red).add_modifier(Modifier::BOLD),
            )),
        ];
        if !p.text.is_empty() {
            e.push(Line::from(Span::styled(
                "(the text above is what arrived before the error; it is kept)",
                styled(Color::DarkGray),
            )));
        }
        for l in e {
            extra.extend(wrap(&l, inner.width));
        }
    }
    if cached.is_empty() && extra.is_empty() && p.status == PaneStatus::Waiting {
        extra = vec![Line::from(Span::styled("…", styled(Color::DarkGray)))];
    }
    // Only the visible window is copied out of the cache.
    let total = cached.len() + extra.len();
    let height = inner.height as usize;
    let max_scroll = total.saturating_sub(height);
    let from_end = p.scroll_from_end.unwrap_or(0).min(max_scroll);
    let start = total.saturating_sub(height + from_end);
    let visible: Vec<Line> = cached
        .iter()
        .chain(extra.iter())
        .skip(start)
        .take(height)
        .cloned()
        .collect();
    f.render_widget(Paragraph::new(visible), inner);
    if from_end > 0 {
        let tag = format!(" ↑{from_end} (End follows) ");
        let x = inner.x + inner.width.saturating_sub(tag.len() as u16);
        f.render_widget(
            Paragraph::new(Span::styled(
                tag,
                Style::default().add_modifier(Modifier::REVERSED),
            )),
            Rect::new(x, area.y + area.height - 1, inner.width.min(22), 1),
        );
    }
}
