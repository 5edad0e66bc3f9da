//! Overlays over the workbench: the sessions browser, the MoA-vs-baseline compare view, the agents
//! editor and the model picker.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::super::state::{AgentRef, App, Search};
use crate::session::compare::{compare, fmt_ratio};

fn centered(area: Rect, w_pct: u16, h_pct: u16) -> Rect {
    let w = (area.width * w_pct / 100).max(40).min(area.width);
    let h = (area.height * h_pct / 100).max(8).min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn frame<'a>(app: &App, title: &'a str, bottom: &'a str) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .title(title)
        .title_bottom(bottom)
        .border_style(if app.color {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default()
        })
}

fn selected(on: bool) -> Style {
    if on {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default()
    }
}

/// Rows `first..` that keep `selected` in view in `height` rows.
fn window(selected: usize, height: usize) -> usize {
    selected.saturating_sub(height.saturating_sub(1))
}

/// What a search overlay shows: its frame, the filter line, the matching rows and a note.
struct SearchList<'a> {
    size: (u16, u16),
    title: &'a str,
    keys: &'a str,
    label: &'a str,
    search: &'a Search,
    rows: Vec<String>,
    empty: &'a str,
    note: String,
}

fn search_list(app: &App, f: &mut Frame, area: Rect, s: SearchList<'_>) {
    let r = centered(area, s.size.0, s.size.1);
    let block = frame(app, s.title, s.keys);
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

pub fn sessions(app: &App, f: &mut Frame, area: Rect) {
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
                s.name,
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
            title: " sessions ",
            keys: " type to search · ↑↓ select · Enter open (then Alt+←/→ browse its runs) · Esc close ",
            label: "search",
            search: &app.browser.search,
            rows,
            empty: if app.browser.all.is_empty() {
                " no saved sessions yet: every run is saved as it ends"
            } else {
                " no session matches"
            },
            note,
        },
    );
}

pub fn compare_view(app: &App, f: &mut Frame, area: Rect) {
    let r = centered(area, 95, 90);
    let block = frame(
        app,
        " MoA vs baseline ",
        " j ask the judge (both orders) · Esc close ",
    );
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    let record = app.run.as_ref().and_then(|v| v.record.as_ref());
    let Some(record) = record else {
        f.render_widget(
            Paragraph::new(" no finished run yet: run a prompt, then compare it with the baseline"),
            inner,
        );
        return;
    };
    let saved = app
        .session
        .as_ref()
        .and_then(|s| s.runs.iter().find(|r| r.record.id == record.id));
    let run = crate::session::SessionRun {
        preset: app.preset.as_ref().clone(),
        record: record.clone(),
        kind: Default::default(),
        given_responses: Vec::new(),
        judgements: saved.map(|s| s.judgements.clone()).unwrap_or_default(),
    };
    let c = compare(&run);
    let Some(b) = &c.baseline else {
        f.render_widget(
            Paragraph::new(" this run has no baseline: Ctrl+B turns it on, then run again (or use a preset with [baseline])")
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let verdict_lines = run.judgements.len().min(3) as u16;
    let [cols, stats, verdicts] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(verdict_lines.max(1)),
    ])
    .areas(inner);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(cols);
    for (side, rect) in [(&c.moa, left), (b, right)] {
        f.render_widget(
            Paragraph::new(side.text.as_str())
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(format!(
                    " {}{} ",
                    side.label,
                    if side.ok { "" } else { " (failed)" }
                ))),
            rect,
        );
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(" MoA: {}", c.moa.summary())),
            Line::from(format!(" baseline: {}", b.summary())),
            Line::from(Span::styled(
                format!(
                    " MoA / baseline: latency {} · tokens {} · cost {}",
                    fmt_ratio(c.latency_ratio),
                    fmt_ratio(c.tokens_ratio),
                    fmt_ratio(c.cost_ratio)
                ),
                Style::default().add_modifier(Modifier::BOLD),
            )),
        ]),
        stats,
    );
    let vs: Vec<Line> = if run.judgements.is_empty() {
        vec![Line::from(if app.judging {
            " judging…".to_string()
        } else {
            format!(
                " no verdict yet: j asks {}",
                app.judge_model
                    .as_deref()
                    .unwrap_or("the aggregator's model (set judge_model in config.toml)")
            )
        })]
    } else {
        run.judgements
            .iter()
            .rev()
            .take(3)
            .map(|j| {
                let detail: Vec<String> = j
                    .orders
                    .iter()
                    .map(|o| {
                        format!(
                            "A={}: {}",
                            o.a,
                            o.verdict
                                .map(|v| format!("{v:?}"))
                                .or(o.error.clone())
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                Line::from(format!(
                    " judge {}: MoA {}{} ({})",
                    j.judge_model,
                    j.outcome.as_str(),
                    if j.inconsistent { ", inconsistent" } else { "" },
                    detail.join("; ")
                ))
            })
            .collect()
    };
    f.render_widget(Paragraph::new(vs), verdicts);
}

pub fn agents(app: &App, f: &mut Frame, area: Rect) {
    let r = centered(area, 80, 70);
    let block = frame(
        app,
        " agents (used from the next run) ",
        " ↑↓ select · +/- temperature · [ ] max tokens ½×/2× · m model · a add · d remove · Esc close ",
    );
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    let refs = app.agent_refs();
    let first = window(app.agent_row, inner.height as usize);
    let lines: Vec<Line> = refs
        .iter()
        .enumerate()
        .skip(first)
        .take(inner.height as usize)
        .map(|(row, r)| {
            let where_ = match r {
                AgentRef::Many(i, k) => {
                    format!("{} {} #{}", i + 1, app.preset.steps[*i].op(), k + 1)
                }
                AgentRef::One(i) => format!("{} {}", i + 1, app.preset.steps[*i].op()),
                AgentRef::Baseline => "baseline".into(),
            };
            let a = app.agent(*r);
            let text = match a {
                Some(a) => format!(
                    " {where_:<16} {:<40} t={:<5} max_tokens={}",
                    a.model,
                    a.temperature.map(|t| t.to_string()).unwrap_or("-".into()),
                    a.max_tokens.map(|t| t.to_string()).unwrap_or("-".into())
                ),
                None => format!(" {where_}"),
            };
            Line::styled(text, selected(row == app.agent_row))
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from(" this preset has no agents to edit")]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(lines), inner);
}

pub fn picker(app: &App, f: &mut Frame, area: Rect) {
    let matches = app.picker.matches();
    let mut note = format!(" {} of {} models", matches.len(), app.picker.models.len());
    if app.picker.loading {
        note.push_str(" · asking providers (/v1/models)…");
    }
    if let Some(e) = app.picker.errors.first() {
        note.push_str(&format!(" · {e}"));
    }
    search_list(
        app,
        f,
        area,
        SearchList {
            size: (70, 70),
            title: " model ",
            keys: " type to filter (or a whole PROVIDER/MODEL) · ↑↓ select · Enter use · Esc back ",
            label: "model",
            search: &app.picker.search,
            rows: matches.iter().map(|m| m.to_string()).collect(),
            empty: " no listed model matches: Enter uses what you typed if it is PROVIDER/MODEL",
            note,
        },
    );
}
