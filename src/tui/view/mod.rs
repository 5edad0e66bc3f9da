//! `view(&App, &mut Frame)`: draws the workbench from the state, nothing else.

mod help;
mod metrics;
mod overlays;
mod pane;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::state::{App, Focus, Overlay, PaneId};

/// How many lines the help overlay has (for scrolling it).
pub fn help_lines() -> u16 {
    help::KEYS.len() as u16
}

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
    if app.overlay == Overlay::Help {
        help::draw(app, f, area);
    }
    match app.overlay {
        Overlay::PromptEditor => draw_prompt_editor(app, f, area),
        Overlay::Sessions => overlays::sessions(app, f, area),
        Overlay::Compare => overlays::compare_view(app, f, area),
        Overlay::Agents => overlays::agents(app, f, area),
        Overlay::ModelPicker => overlays::picker(app, f, area),
        Overlay::None | Overlay::Help => {}
    }
}

fn accent(app: &App, c: Color) -> Style {
    if app.color {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

fn draw_header(app: &App, f: &mut Frame, area: Rect) {
    let ops: Vec<&str> = app.preset.steps.iter().map(|s| s.op()).collect();
    let mut spans = vec![
        Span::styled(
            " moa ",
            accent(app, Color::Black)
                .bg(if app.color { Color::Cyan } else { Color::Reset })
                .add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" {} ", app.preset.name)),
        Span::styled(
            format!("({})", ops.join(" → ")),
            accent(app, Color::DarkGray),
        ),
    ];
    let layers = app.layer_steps();
    if layers.len() > 1 {
        spans.push(Span::raw("  layers: "));
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
    }
    if let Some(a) = app
        .shown_layer()
        .and_then(|l| app.run.as_ref()?.steps[l].agreement.as_ref())
    {
        spans.push(Span::raw("  agreement "));
        spans.push(Span::styled(
            format!("{:.2}", a.value),
            accent(app, agreement_color(a.value)).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::styled(
            format!(" ({}{})", a.method, if a.live { ", live" } else { "" }),
            accent(app, Color::DarkGray),
        ));
    }
    if !app.conversation.is_empty() {
        spans.push(Span::styled(
            format!("  turn {}", app.conversation.len() / 2 + 1),
            accent(app, Color::DarkGray),
        ));
    }
    if let Some(s) = &app.session {
        let run = match app.shown_run {
            Some(k) => format!(" · run {}/{}", k + 1, s.runs.len()),
            None => String::new(),
        };
        spans.push(Span::styled(
            format!("  session: {}{run}", s.name),
            accent(app, Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
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
    let title = if app.running {
        " prompt (running: Esc cancels) "
    } else {
        " prompt "
    };
    let mut block = Block::default().borders(Borders::ALL).title(title);
    if focused {
        block = block.border_style(accent(app, Color::Cyan).add_modifier(Modifier::BOLD));
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    f.render_widget(&app.input, inner);
}

/// The aggregator prompt, editable: {query} {responses} {n} are filled in at run time.
fn draw_prompt_editor(app: &App, f: &mut Frame, area: Rect) {
    let w = (area.width * 4 / 5).max(40).min(area.width);
    let h = (area.height * 3 / 4).max(8).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" aggregator prompt ({query} {responses} {n}) ")
        .title_bottom(" Ctrl+S apply and re-aggregate · Ctrl+T next template · Esc cancel ")
        .border_style(accent(app, Color::Cyan));
    let inner = block.inner(r);
    f.render_widget(ratatui::widgets::Clear, r);
    f.render_widget(block, r);
    f.render_widget(&app.editor, inner);
}

fn draw_status(app: &App, f: &mut Frame, area: Rect) {
    let keys = "Enter send · Esc cancel · Tab panes · F2 maximize · F3 compare · F4 agents · Ctrl+E aggregator prompt · Ctrl+A re-aggregate · Ctrl+O sessions · F1 help · Ctrl+C quit";
    let text = if app.status.is_empty() {
        keys.to_string()
    } else {
        format!("{} │ {keys}", app.status)
    };
    f.render_widget(
        Paragraph::new(Span::styled(text, accent(app, Color::DarkGray))),
        area,
    );
}
