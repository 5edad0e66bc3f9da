//! Latency bars (time to first token, then generation, against the step's critical path, so the
//! slowest call stands out), the agreement matrix, and token and cost totals.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::state::{App, Pane};
use super::agreement_color;

fn short(model: &str, n: usize) -> String {
    let m = model.rsplit('/').next().unwrap_or(model);
    if m.chars().count() > n {
        format!("{}…", m.chars().take(n - 1).collect::<String>())
    } else {
        format!("{m:<n$}")
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" latency · agreement · cost ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(run) = &app.run else { return };
    let styled = |c: Color| {
        if app.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    let mut lines: Vec<Line> = Vec::new();
    let label_w = 10usize;
    // Room after the bar for " 12.3s 123t/s".
    let bar_w = (inner.width as usize).saturating_sub(label_w + 14).max(4);
    let mut groups: Vec<(String, Vec<&Pane>)> = Vec::new();
    if let Some(l) = app.shown_layer() {
        groups.push((
            format!("L {}", run.steps[l].op),
            run.steps[l].panes.iter().collect(),
        ));
    }
    if let Some(s) = run.final_step {
        groups.push(("final".into(), run.steps[s].panes.iter().collect()));
    }
    if let Some(b) = &run.baseline {
        groups.push(("baseline".into(), vec![b]));
    }
    for (name, panes) in groups {
        // Each bar is drawn against the slowest call of its group: the group's critical path.
        let spans_ms: Vec<(u64, u64)> = panes
            .iter()
            .map(|p| {
                // Calls in flight: measured from when they started, on this clock.
                let live =
                    |at: Option<std::time::Instant>| at.map(|t| t.elapsed().as_millis() as u64);
                let total = p.latency_ms.or_else(|| live(p.started_at)).unwrap_or(0);
                let first = p.ttft_ms.or_else(|| {
                    Some(p.started_at?.elapsed().as_millis() as u64 - live(p.first_token_at)?)
                });
                (first.unwrap_or(total).min(total), total)
            })
            .collect();
        let worst = spans_ms.iter().map(|s| s.1).max().unwrap_or(1).max(1);
        lines.push(Line::from(Span::styled(
            name,
            Style::default().add_modifier(Modifier::BOLD),
        )));
        for (p, (ttft, total)) in panes.iter().zip(spans_ms) {
            let wait = (ttft as usize * bar_w).div_ceil(worst as usize).min(bar_w);
            let busy = ((total as usize * bar_w) / worst as usize)
                .saturating_sub(wait)
                .min(bar_w - wait);
            let slowest = total == worst && total > 0;
            let tps = match p.latency_ms {
                Some(ms) if ms > ttft && p.tokens_out > 0 => format!(
                    " {:.0}t/s",
                    p.tokens_out as f64 * 1000.0 / (ms - ttft) as f64
                ),
                _ => String::new(),
            };
            lines.push(Line::from(vec![
                Span::raw(short(&p.model, label_w)),
                Span::styled("░".repeat(wait), styled(Color::DarkGray)),
                Span::styled(
                    "█".repeat(busy),
                    styled(if slowest { Color::Red } else { Color::Cyan }),
                ),
                Span::raw(format!(" {:.1}s{tps}", total as f64 / 1000.0)),
            ]));
        }
    }
    if let Some(a) = app
        .shown_layer()
        .and_then(|l| run.steps[l].agreement.as_ref())
    {
        lines.push(Line::from(""));
        lines.push(Line::from(vec![
            Span::styled("agreement ", Style::default().add_modifier(Modifier::BOLD)),
            Span::styled(format!("{:.2}", a.value), styled(agreement_color(a.value))),
            Span::styled(format!(" {}", a.method), styled(Color::DarkGray)),
        ]));
        let mut head = vec![Span::raw("    ")];
        head.extend(a.slots.iter().map(|s| Span::raw(format!("  #{s} "))));
        lines.push(Line::from(head));
        for (i, row) in a.matrix.iter().enumerate() {
            let mut spans = vec![Span::raw(format!(
                " #{:<2}",
                a.slots.get(i).copied().unwrap_or(i)
            ))];
            for (j, v) in row.iter().enumerate() {
                spans.push(if i == j {
                    Span::styled("   · ", styled(Color::DarkGray))
                } else {
                    Span::styled(format!(" {v:.2}"), styled(agreement_color(*v)))
                });
            }
            lines.push(Line::from(spans));
        }
    }
    if let Some(r) = &run.record {
        lines.push(Line::from(""));
        let cost = |c: f64, incomplete: bool| {
            if incomplete {
                format!("${c:.4}+")
            } else {
                format!("${c:.4}")
            }
        };
        lines.push(Line::from(format!(
            "MoA  {:.1}s {}→{} tok {}",
            r.wall_ms as f64 / 1000.0,
            r.usage.tokens_in,
            r.usage.tokens_out,
            cost(r.usage.cost_usd, r.usage.cost_incomplete)
        )));
        if let Some(b) = &r.baseline {
            lines.push(Line::from(format!(
                "base {:.1}s {}→{} tok {}",
                b.latency_ms as f64 / 1000.0,
                b.tokens_in,
                b.tokens_out,
                b.cost_usd.map_or("$?".to_string(), |c| format!("${c:.4}"))
            )));
            if b.tokens() > 0 {
                lines.push(Line::from(Span::styled(
                    format!(
                        "MoA used {:.1}× the tokens, {:.1}× the time",
                        r.usage.tokens() as f64 / (b.tokens()) as f64,
                        r.wall_ms as f64 / b.latency_ms.max(1) as f64
                    ),
                    styled(Color::DarkGray),
                )));
            }
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}
