//! One answer pane: model, temperature and status in the title; markdown body following the
//! tail while streaming; the error, when there is one, at the bottom in place.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::state::{App, Focus, PaneId, PaneStatus};
use crate::text::width;
use crate::tui::markdown::{RLine, wrap};

/// The model's own name, without its provider: "smollm2-135m" from "local/smollm2-135m",
/// "Qwen1.5-110B-Chat" from "together/Qwen/Qwen1.5-110B-Chat".
pub fn short_model(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

/// Who answered: "#2 smollm2-135m t=0.7" (the slot as the agreement matrix numbers it).
pub fn agent_label(slot: Option<usize>, model: &str, temperature: Option<f64>) -> String {
    let slot = slot.map(|s| format!("#{} ", s + 1)).unwrap_or_default();
    let temp = temperature.map(|t| format!(" t={t}")).unwrap_or_default();
    format!("{slot}{}{temp}", short_model(model))
}

/// The title's left part within `room` columns. What gives way first: the role's details (the
/// template), the temperature, then the model's name (shortened with "…"); the slot stays as long
/// as anything does.
fn fit_title(
    role: &str,
    slot: Option<usize>,
    model: &str,
    temp: Option<f64>,
    room: usize,
) -> String {
    let name = short_model(model);
    let slot_s = slot.map(|s| format!("#{} ", s + 1)).unwrap_or_default();
    let temp_s = temp.map(|t| format!(" t={t}")).unwrap_or_default();
    // "aggregator · together · " shortens to "agg · ", "baseline · " to "base · ".
    let short_role = match role {
        "" => "",
        r if r.starts_with("aggregator") => "agg · ",
        _ => "base · ",
    };
    let tries = [
        (role, temp_s.as_str(), false),
        (short_role, temp_s.as_str(), false),
        (short_role, "", false),
        (short_role, "", true),
        ("", "", true),
    ];
    for (role, temp_s, cut) in tries {
        let fixed = width(role) + width(&slot_s) + width(temp_s);
        if !cut && fixed + width(name) <= room {
            return format!("{role}{slot_s}{name}{temp_s}");
        }
        if cut && fixed + 4 <= room {
            let name = crate::text::truncate(name, room - fixed);
            return format!("{role}{slot_s}{name}{temp_s}");
        }
    }
    slot_s.trim_end().to_string()
}

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
    let timing = match p.latency_ms {
        Some(ms) => format!(" {:.1}s", ms as f64 / 1000.0),
        None => String::new(),
    };
    let styled = |c: Color| {
        if app.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    let role = match id {
        PaneId::Final => {
            let prompt = app
                .run
                .as_ref()
                .and_then(|r| r.aggregator_prompt.clone())
                .map(|t| format!("{t} · "))
                .unwrap_or_default();
            format!("aggregator · {prompt}")
        }
        PaneId::Baseline => "baseline · ".into(),
        PaneId::Call(..) => String::new(),
    };
    let slot = matches!(id, PaneId::Call(..)).then_some(p.slot);
    let status = format!("{icon}{timing}");
    let left = fit_title(
        &role,
        slot,
        &p.model,
        p.temperature,
        (area.width as usize).saturating_sub(5 + crate::text::width(&status)),
    );
    let title = Line::from(vec![
        Span::raw(format!(" {left} ")),
        Span::styled(format!("{status} "), styled(color)),
    ]);
    let focused = app.focus == Focus::Pane(id);
    let mut block = Block::default().borders(Borders::ALL).title(title);
    if focused {
        block = block.border_style(styled(Color::Cyan).add_modifier(Modifier::BOLD));
    }
    let mut inner = block.inner(area);
    f.render_widget(block, area);
    if inner.width == 0 || inner.height == 0 {
        return;
    }
    // The aggregator pane: its variants as tabs on top, what the shown one drew on at the bottom.
    if id == PaneId::Final && inner.height >= 4 {
        if let Some(tabs) = crate::tui::variants::tabs(app) {
            f.render_widget(Paragraph::new(tabs), Rect { height: 1, ..inner });
            inner.y += 1;
            inner.height -= 1;
        }
        if let Some(line) = crate::tui::variants::attribution_line(app) {
            inner.height -= 1;
            f.render_widget(
                Paragraph::new(line),
                Rect {
                    y: inner.y + inner.height,
                    height: 1,
                    ..inner
                },
            );
        }
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
            extra.extend(wrap(
                &RLine {
                    prefix: vec![],
                    content: l.spans,
                    cont: vec![],
                },
                inner.width,
            ));
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
