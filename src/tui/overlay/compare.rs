//! The compare view (F3): MoA's final answer and the baseline side by side, with latency, tokens,
//! cost and their ratios; `j` asks a judge in both orders and the verdict is kept with the run.

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::super::keymap::{self, Action, Scope};
use super::super::markdown::Markdown;
use super::super::state::App;
use super::super::update::Effect;
use super::{Overlay, centered, frame};
use crate::engine::preset::Step;
use crate::session::compare::{compare, fmt_ratio};

#[derive(Default)]
pub struct CompareState {
    /// A judge is asked and has not answered yet.
    pub judging: bool,
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match keymap::lookup(&k, Scope::Compare) {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => app.overlay = Overlay::None,
        Some(Action::Judge) if !app.compare.judging => {
            let Some(r) = app.run.as_ref().and_then(|r| r.record.as_ref()) else {
                app.status = "no finished run to judge".into();
                return vec![];
            };
            let (Some(f), Some(b)) = (&r.final_answer, &r.baseline) else {
                app.status = "the judge needs a final answer and a baseline answer (Ctrl+B turns the baseline on)".into();
                return vec![];
            };
            let model = app.judge_model.clone().or_else(|| {
                app.preset.steps.iter().rev().find_map(|s| match s {
                    Step::Aggregate { agent, .. } => Some(agent.model.clone()),
                    _ => None,
                })
            });
            let Some(model) = model else {
                app.status = "no judge model: set judge_model in config.toml".into();
                return vec![];
            };
            app.compare.judging = true;
            app.status = format!("judging with {model} (both orders)…");
            return vec![Effect::Judge {
                run_id: r.id.clone(),
                model,
                question: crate::engine::prompts::last_user(&r.messages).to_string(),
                moa: f.text.clone(),
                baseline: b.text.clone(),
            }];
        }
        _ => {}
    }
    vec![]
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let r = centered(area, 95, 90);
    let block = frame(app, " MoA vs baseline ".into(), Scope::Compare, r.width);
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
        let block = Block::default().borders(Borders::ALL).title(format!(
            " {}{} ",
            side.label,
            if side.ok { "" } else { " (failed)" }
        ));
        let inner = block.inner(rect);
        f.render_widget(block, rect);
        // The same renderer as the panes: code keeps its indentation here too.
        let lines = Markdown::new(app.color).wrapped(&side.text, inner.width);
        f.render_widget(Paragraph::new(lines), inner);
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
        vec![Line::from(if app.compare.judging {
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
