//! Latency bars (time to first token, then generation, against the step's critical path, so the
//! slowest call stands out), the agreement matrix, and token and cost totals.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::state::{App, Pane};
use super::{agreement_color, short_model};

/// A row label `n` columns wide (its last column a space), shortened with "…" when longer.
fn fit(label: &str, n: usize) -> String {
    let cut = crate::text::truncate(label, n.saturating_sub(1));
    format!(
        "{cut}{}",
        " ".repeat(n.saturating_sub(crate::text::width(&cut)))
    )
}

/// Row labels for a group's calls: the model's name, or, when models repeat in the group, the slot
/// and temperature that tell them apart ("#2 t=0.7"), as the pane titles do.
fn labels(panes: &[&Pane], slots: bool) -> Vec<String> {
    let repeated = panes.iter().enumerate().any(|(i, p)| {
        panes[..i]
            .iter()
            .any(|q| short_model(&q.model) == short_model(&p.model))
    });
    panes
        .iter()
        .map(|p| {
            let slot = if slots {
                format!("#{} ", p.slot + 1)
            } else {
                String::new()
            };
            if repeated {
                let t = p.temperature.map(|t| format!("t={t}")).unwrap_or_default();
                format!("{slot}{t}")
            } else {
                format!("{slot}{}", short_model(&p.model))
            }
        })
        .collect()
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
    let mut groups: Vec<(String, Vec<&Pane>, bool)> = Vec::new();
    if let Some(l) = app.shown_layer() {
        groups.push((
            format!("L {}", run.steps[l].op),
            run.steps[l].panes.iter().collect(),
            true,
        ));
    }
    if let Some(s) = run.final_step {
        groups.push(("final".into(), run.steps[s].panes.iter().collect(), false));
    }
    if let Some(b) = &run.baseline {
        groups.push(("baseline".into(), vec![b], false));
    }
    let all_labels: Vec<Vec<String>> = groups.iter().map(|(_, p, s)| labels(p, *s)).collect();
    let longest = all_labels
        .iter()
        .flatten()
        .map(|l| crate::text::width(l))
        .max()
        .unwrap_or(8);
    let label_w = (longest + 1).clamp(6, (inner.width as usize / 3).max(6));
    // Room after the bar for " 12.3s 123t/s".
    let bar_w = (inner.width as usize).saturating_sub(label_w + 14).max(4);
    for ((name, panes, _), labels) in groups.into_iter().zip(all_labels) {
        // Each bar is drawn against the slowest call of its group: the group's critical path.
        let spans_ms: Vec<(u64, u64)> = panes
            .iter()
            .map(|p| {
                // Calls in flight: measured from when they started, on the clock of the last
                // message (a clock that went backwards or a first token "before" the start counts 0).
                let since = |at: std::time::Instant| {
                    app.now.saturating_duration_since(at).as_millis() as u64
                };
                let total = p
                    .latency_ms
                    .or_else(|| p.started_at.map(since))
                    .unwrap_or(0);
                let first = p.ttft_ms.or_else(|| {
                    let (s, t) = (p.started_at?, p.first_token_at?);
                    Some(t.saturating_duration_since(s).as_millis() as u64)
                });
                (first.unwrap_or(total).min(total), total)
            })
            .collect();
        let worst = spans_ms.iter().map(|s| s.1).max().unwrap_or(1).max(1);
        lines.push(Line::from(Span::styled(
            name,
            Style::default().add_modifier(Modifier::BOLD),
        )));
        for ((p, (ttft, total)), label) in panes.iter().zip(spans_ms).zip(&labels) {
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
                Span::raw(fit(label, label_w)),
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
        head.extend(a.slots.iter().map(|s| Span::raw(format!("  #{} ", s + 1))));
        lines.push(Line::from(head));
        for (i, row) in a.matrix.iter().enumerate() {
            let mut spans = vec![Span::raw(format!(
                " #{:<2}",
                a.slots.get(i).copied().unwrap_or(i) + 1
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
