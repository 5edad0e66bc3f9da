//! `view(&App, &mut Frame)`: draws the workbench from the state, nothing else.

mod metrics;
pub(crate) mod pane;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::keymap::{self, Scope};
use super::state::{App, Focus, PaneId, RunMode, SaveState};
use crate::text::width;

pub use pane::{agent_label, short_model};

pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub fn view(app: &App, f: &mut Frame) {
    let area = f.area();
    app.areas.borrow_mut().clear();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "moa needs a terminal of at least {MIN_WIDTH}×{MIN_HEIGHT}; this one is {}×{}. Make it larger (Ctrl+C quits).",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let input_lines = app.input.lines().len().clamp(1, 6) as u16;
    let [header, body, input, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(input_lines + 2),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, f, header);
    match app.maximized {
        Some(id) => pane::draw(app, f, body, id),
        None => draw_body(app, f, body),
    }
    draw_input(app, f, input);
    draw_status(app, f, status);
    super::overlay::draw(app, f, area);
}

fn accent(app: &App, c: Color) -> Style {
    if app.color {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

/// The header: the preset, the run's state and totals, the agreement, the session. When the line is
/// too narrow, the least useful parts give way whole (the step chain first, then the turn, the
/// agreement's method, the layer tabs) instead of the line being cut mid-word.
fn draw_header(app: &App, f: &mut Frame, area: Rect) {
    let ops: Vec<&str> = app.preset.steps.iter().map(|s| s.op()).collect();
    // (priority: higher gives way first, spans)
    let mut parts: Vec<(u8, Vec<Span<'static>>)> = vec![
        (
            0,
            vec![
                Span::styled(
                    " moa ",
                    accent(app, Color::Black)
                        .bg(if app.color { Color::Cyan } else { Color::Reset })
                        .add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(" {}", app.preset.name)),
            ],
        ),
        (
            9,
            vec![Span::styled(
                format!(" ({})", ops.join(" → ")),
                accent(app, Color::DarkGray),
            )],
        ),
    ];
    let layers = app.layer_steps();
    if layers.len() > 1 {
        let mut spans = vec![Span::raw("  layers: ")];
        let shown = app.shown_layer();
        for (n, l) in layers.iter().enumerate() {
            let op = app.run.as_ref().map_or("", |r| r.steps[*l].op);
            let label = format!(" L{} {op} ", n + 1);
            if Some(*l) == shown {
                spans.push(Span::styled(
                    label,
                    Style::default().add_modifier(Modifier::REVERSED),
                ));
            } else {
                spans.push(Span::raw(label));
            }
        }
        parts.push((6, spans));
    }
    if let Some(a) = app
        .shown_layer()
        .and_then(|l| app.run.as_ref()?.steps[l].agreement.as_ref())
    {
        parts.push((
            2,
            vec![
                Span::raw("  agreement "),
                Span::styled(
                    format!("{:.2}", a.value),
                    accent(app, agreement_color(a.value)).add_modifier(Modifier::BOLD),
                ),
            ],
        ));
        parts.push((
            7,
            vec![Span::styled(
                format!(" ({}{})", a.method, if a.live { ", live" } else { "" }),
                accent(app, Color::DarkGray),
            )],
        ));
    }
    parts.push((1, vec![run_state(app)]));
    if !app.conversation.is_empty() {
        parts.push((
            8,
            vec![Span::styled(
                format!("  turn {}", app.conversation.len() / 2 + 1),
                accent(app, Color::DarkGray),
            )],
        ));
    }
    if let Some(s) = &app.session {
        let run = match app.shown_run {
            Some(k) => format!(" · run {}/{}", k + 1, s.runs.len()),
            None => String::new(),
        };
        parts.push((
            3,
            vec![Span::styled(
                format!("  session: {}{run}", crate::text::strip_controls(&s.name)),
                accent(app, Color::DarkGray),
            )],
        ));
    }
    let w = |parts: &[(u8, Vec<Span>)]| -> usize {
        parts
            .iter()
            .flat_map(|(_, s)| s)
            .map(|s| width(&s.content))
            .sum()
    };
    while w(&parts) > area.width as usize && parts.len() > 1 {
        let Some(i) = parts
            .iter()
            .enumerate()
            .max_by_key(|(_, (p, _))| *p)
            .map(|(i, _)| i)
            .filter(|&i| parts[i].0 > 0)
        else {
            break;
        };
        parts.remove(i);
    }
    let spans: Vec<Span> = parts.into_iter().flat_map(|(_, s)| s).collect();
    f.render_widget(Paragraph::new(fit_words(spans, area.width as usize)), area);
}

/// The run's state and totals for the header: what runs, for how long, and what it has cost.
fn run_state(app: &App) -> Span<'static> {
    let run = app.run.as_ref();
    let text = match (app.mode, run.and_then(|r| r.record.as_ref())) {
        (RunMode::Idle, None) if run.is_none() => String::new(),
        (RunMode::Idle, Some(r)) => {
            let cost = if r.usage.cost_usd > 0.0 {
                format!(
                    " ${:.4}{}",
                    r.usage.cost_usd,
                    if r.usage.cost_incomplete { "+" } else { "" }
                )
            } else {
                String::new()
            };
            let state = if r.cancelled {
                "cancelled"
            } else if r
                .final_answer
                .as_ref()
                .is_some_and(|f| f.status == crate::engine::record::CallStatus::Ok)
            {
                "done"
            } else {
                "no answer"
            };
            format!(
                "  {state} {:.1}s · {}→{} tok{cost}",
                r.wall_ms as f64 / 1000.0,
                r.usage.tokens_in,
                r.usage.tokens_out
            )
        }
        (RunMode::Idle, None) => "  stopped".into(),
        (RunMode::Replaying, _) if app.replay.is_some() => app
            .replay
            .as_ref()
            .map(super::replay::label)
            .unwrap_or_default(),
        (mode, _) => {
            let secs = run.map_or(0.0, |r| {
                app.now.saturating_duration_since(r.started).as_secs_f64()
            });
            let tokens: u64 = run.map_or(0, |r| {
                r.steps
                    .iter()
                    .flat_map(|s| &s.panes)
                    .map(|p| p.tokens_out)
                    .sum()
            });
            if tokens > 0 {
                format!("  ● {} {secs:.1}s · {tokens} tok out", mode.label())
            } else {
                format!("  ● {} {secs:.1}s", mode.label())
            }
        }
    };
    Span::styled(
        text,
        accent(
            app,
            if app.running() {
                Color::Cyan
            } else {
                Color::Gray
            },
        ),
    )
}

/// Key hints that fit in `max` columns, whole hints only, most useful first.
pub fn hint_line(hints: Vec<(&'static str, &'static str)>, max: usize) -> String {
    let mut out = String::new();
    for (key, what) in hints {
        let item = format!("{key} {what}");
        let need = if out.is_empty() {
            width(&item)
        } else {
            width(&item) + 3
        };
        if width(&out) + need > max {
            continue;
        }
        if !out.is_empty() {
            out.push_str(" · ");
        }
        out.push_str(&item);
    }
    out
}

pub fn agreement_color(v: f64) -> Color {
    if v >= 0.8 {
        Color::Green
    } else if v >= 0.5 {
        Color::Yellow
    } else {
        Color::Red
    }
}

fn draw_body(app: &App, f: &mut Frame, area: Rect) {
    let Some(run) = &app.run else {
        let text = vec![
            Line::from(""),
            Line::from(Span::styled(
                format!("  {}", app.preset.description),
                accent(app, Color::Gray),
            )),
            Line::from(""),
            Line::from(format!(
                "  Models: {}",
                app.preset.models(app.baseline_on).join(", ")
            )),
            Line::from(""),
            Line::from(
                "  Type a prompt below and press Enter. Proposers stream side by side here; the",
            ),
            Line::from(
                "  aggregator's answer, the baseline and the latency bars appear underneath.",
            ),
            Line::from(
                "  Ctrl+P switches preset, Ctrl+B toggles the baseline, F1 lists every key.",
            ),
        ];
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" workbench ")),
            area,
        );
        return;
    };
    let layer = app.shown_layer();
    let has_layer = layer.is_some_and(|l| !run.steps[l].panes.is_empty());
    let [top, bottom] = if has_layer {
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area)
    } else {
        [Rect::default(), area]
    };
    if let Some(l) = layer.filter(|_| has_layer) {
        let n = run.steps[l].panes.len();
        // Side by side while each column keeps ~26 characters; more proposers wrap into a grid.
        let cols = (top.width as usize / 26).clamp(1, 4).min(n);
        let rows = n.div_ceil(cols);
        let row_areas = Layout::vertical(vec![Constraint::Ratio(1, rows as u32); rows]).split(top);
        for (r, row) in row_areas.iter().enumerate() {
            let in_row = (n - r * cols).min(cols);
            let cells =
                Layout::horizontal(vec![Constraint::Ratio(1, in_row as u32); in_row]).split(*row);
            for (c, cell) in cells.iter().enumerate() {
                pane::draw(app, f, *cell, PaneId::Call(l, r * cols + c));
            }
        }
    }
    let has_final = run.final_step.is_some();
    let has_base = run.baseline.is_some();
    let mut constraints = Vec::new();
    if has_final {
        constraints.push(Constraint::Percentage(if has_base { 40 } else { 60 }));
    }
    if has_base {
        constraints.push(Constraint::Percentage(if has_final { 30 } else { 60 }));
    }
    constraints.push(Constraint::Min(28));
    let parts = Layout::horizontal(constraints).split(bottom);
    let mut i = 0;
    if has_final {
        pane::draw(app, f, parts[i], PaneId::Final);
        i += 1;
    }
    if has_base {
        pane::draw(app, f, parts[i], PaneId::Baseline);
        i += 1;
    }
    metrics::draw(app, f, parts[i]);
}

fn draw_input(app: &App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Focus::Input;
    let lines = app.input.lines().len();
    let title = match (app.running(), lines) {
        (true, _) => " prompt (running: Esc cancels) ".to_string(),
        (false, n) if n > 1 => format!(" prompt ({n} lines: Enter sends) "),
        _ => " prompt ".to_string(),
    };
    let mut block = Block::default().borders(Borders::ALL).title(title);
    if focused {
        block = block.border_style(accent(app, Color::Cyan).add_modifier(Modifier::BOLD));
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    f.render_widget(&app.input, inner);
}

/// The status line: a failed save first (it must be seen), then the message, then as many whole key
/// hints as fit. Words are never cut: a message too long for the line ends in "…" at a word.
fn draw_status(app: &App, f: &mut Frame, area: Rect) {
    let w = area.width as usize;
    let mut spans: Vec<Span<'static>> = Vec::new();
    match &app.save {
        SaveState::Failed { path, reason } => spans.push(Span::styled(
            format!(
                "✗ not saved: {} ({}; retried at the next snapshot) ",
                path.display(),
                crate::text::strip_controls(reason)
            ),
            accent(app, Color::Red).add_modifier(Modifier::BOLD),
        )),
        // The session's name is in the header; its id would crowd out the message.
        SaveState::Saved { .. } if !app.running() => spans.push(Span::styled(
            "✓ saved · ".to_string(),
            accent(app, Color::Green),
        )),
        _ => {}
    }
    if !app.status.is_empty() {
        spans.push(Span::raw(
            crate::text::strip_controls(&app.status).into_owned(),
        ));
    }
    let used: usize = spans.iter().map(|s| width(&s.content)).sum();
    let scope = app.overlay.scope().unwrap_or(match app.focus {
        _ if app.mode == RunMode::Replaying => Scope::Replay,
        Focus::Input => Scope::Input,
        Focus::Pane(_) => Scope::Pane,
    });
    let room = w.saturating_sub(used + 3);
    let hints = hint_line(keymap::hints(scope), room);
    if !hints.is_empty() {
        if used > 0 {
            spans.push(Span::raw(" │ "));
        }
        spans.push(Span::styled(hints, accent(app, Color::DarkGray)));
    }
    let line = fit_words(spans, w);
    f.render_widget(Paragraph::new(line), area);
}

/// Spans cut to `max` columns: whole spans first; the one that does not fit ends at a word, with "…".
fn fit_words(spans: Vec<Span<'static>>, max: usize) -> Line<'static> {
    let total: usize = spans.iter().map(|s| width(&s.content)).sum();
    if total <= max {
        return Line::from(spans);
    }
    let mut out = Vec::new();
    let mut used = 0;
    for s in spans {
        let w = width(&s.content);
        if used + w <= max {
            used += w;
            out.push(s);
            continue;
        }
        let room = max.saturating_sub(used + 1);
        let mut cut = String::new();
        for word in s.content.split_inclusive(' ') {
            if width(&cut) + width(word.trim_end()) > room {
                break;
            }
            cut.push_str(word);
        }
        let cut = cut.trim_end();
        if !cut.is_empty() {
            out.push(Span::styled(format!("{cut}…"), s.style));
        }
        break;
    }
    Line::from(out)
}
