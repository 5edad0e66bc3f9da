//! The compare view (F3): any two answers of the run side by side (its aggregator variants A, B, …,
//! and the baseline; `a` and `b` choose), with the words that differ marked (`d`), latency, tokens
//! and cost with their ratios; `j` asks a judge in both orders and the verdict stays with that pair.
//! Below, the shown variant's leave-one-out table (F7 fills it).

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::super::keymap::{self, Action, Scope};
use super::super::markdown::{Markdown, RLine, wrap};
use super::super::state::{App, RunView, Side, variant_letter};
use super::super::update::Effect;
use super::super::variants::side_name;
use super::{Overlay, centered, frame};
use crate::engine::preset::Step;
use crate::session::compare::{self, fmt_ratio};
use crate::session::judge::{Judgement, Outcome};
use crate::session::variants::PairJudgement;

#[derive(Default)]
pub struct CompareState {
    /// A judge is asked and has not answered yet.
    pub judging: bool,
    pub left: Option<Side>,
    pub right: Option<Side>,
    /// Plain text with the differing words marked, instead of rendered markdown.
    pub diff: bool,
}

/// F3: the shown variant against the baseline (or against the variant before it).
pub fn open(app: &mut App) {
    app.overlay = Overlay::Compare;
    let Some(run) = app.run.as_ref() else { return };
    let sides = run.sides();
    let left = if run.variants.is_empty() {
        sides.first().copied()
    } else {
        Some(Side::Variant(run.variant))
    };
    let right = if sides.contains(&Side::Baseline) {
        Some(Side::Baseline)
    } else {
        sides.iter().copied().find(|s| Some(*s) != left)
    };
    app.compare.left = left;
    app.compare.right = right;
}

fn next_side(run: &RunView, cur: Option<Side>, other: Option<Side>) -> Option<Side> {
    let sides: Vec<Side> = run
        .sides()
        .into_iter()
        .filter(|s| Some(*s) != other)
        .collect();
    if sides.is_empty() {
        return cur;
    }
    let i = cur
        .and_then(|c| sides.iter().position(|s| *s == c))
        .map_or(0, |i| (i + 1) % sides.len());
    Some(sides[i])
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match keymap::lookup(&k, Scope::Compare) {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => app.overlay = Overlay::None,
        Some(Action::Diff) => app.compare.diff = !app.compare.diff,
        Some(Action::LeftSide) => {
            if let Some(run) = app.run.as_ref() {
                app.compare.left = next_side(run, app.compare.left, app.compare.right);
            }
        }
        Some(Action::RightSide) => {
            if let Some(run) = app.run.as_ref() {
                app.compare.right = next_side(run, app.compare.right, app.compare.left);
            }
        }
        Some(Action::Judge) if !app.compare.judging => return judge(app),
        _ => {}
    }
    vec![]
}

fn judge(app: &mut App) -> Vec<Effect> {
    let model = app.judge_model.clone().or_else(|| {
        app.preset.steps.iter().rev().find_map(|s| match s {
            Step::Aggregate { agent, .. } => Some(agent.model.clone()),
            _ => None,
        })
    });
    let Some(run) = app.run.as_ref() else {
        app.status = "no finished run to judge".into();
        return vec![];
    };
    let Some(record) = run.record.as_ref() else {
        app.status = "no finished run to judge".into();
        return vec![];
    };
    let (Some(l), Some(r)) = (app.compare.left, app.compare.right) else {
        app.status = "the judge needs two answers: a variant (Ctrl+A makes another) or the baseline (Ctrl+B)".into();
        return vec![];
    };
    let (Some(a), Some(b)) = (side(run, l), side(run, r)) else {
        return vec![];
    };
    if !a.ok || !b.ok {
        app.status = "the judge needs two finished answers".into();
        return vec![];
    }
    let Some(model) = model else {
        app.status = "no judge model: set judge_model in config.toml".into();
        return vec![];
    };
    let (Some(a_id), Some(b_id)) = (run.side_id(l), run.side_id(r)) else {
        return vec![];
    };
    app.compare.judging = true;
    app.status = format!("judging with {model} (both orders)…");
    vec![Effect::JudgePair {
        run_id: record.id.clone(),
        model,
        question: crate::engine::prompts::last_user(&record.messages).to_string(),
        a: (a_id, a.text),
        b: (b_id, b.text),
    }]
}

/// A side's answer and figures. A variant is shown as the whole pipeline would have run with it.
fn side(run: &RunView, s: Side) -> Option<compare::Side> {
    let record = run.record.as_ref()?;
    match s {
        Side::Baseline => record
            .baseline
            .as_ref()
            .map(|b| compare::call_side(b, format!("baseline ({})", b.model))),
        Side::Final => Some(compare::run_side(record)),
        Side::Variant(i) => {
            let v = run.variants.get(i)?;
            let own = run.variants.first()?;
            Some(compare::variant_side(
                record,
                &own.call,
                &v.call,
                format!(
                    "{} · {} · {}{}",
                    variant_letter(i),
                    v.prompt_label,
                    super::super::view::pane::short_model(&v.agent.model),
                    v.agent
                        .temperature
                        .map(|t| format!(" t={t}"))
                        .unwrap_or_default()
                ),
            ))
        }
    }
}

/// The verdicts on the pair shown, as the left side's outcomes.
fn verdicts(run: &RunView, a: &str, b: &str) -> Vec<(Judgement, bool)> {
    run.pair_judgements
        .iter()
        .filter_map(|p: &PairJudgement| {
            if p.a == a && p.b == b {
                Some((p.judgement.clone(), false))
            } else if p.a == b && p.b == a {
                Some((p.judgement.clone(), true))
            } else {
                None
            }
        })
        .collect()
}

fn flip(o: Outcome) -> Outcome {
    match o {
        Outcome::Win => Outcome::Loss,
        Outcome::Loss => Outcome::Win,
        x => x,
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let r = centered(area, 95, 90);
    let block = frame(app, " compare ".into(), Scope::Compare, r.width);
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    let run = app.run.as_ref().filter(|r| r.record.is_some());
    let Some(run) = run else {
        f.render_widget(
            Paragraph::new(" no finished run yet: run a prompt, then compare its answers"),
            inner,
        );
        return;
    };
    let (Some(l), Some(rs)) = (app.compare.left, app.compare.right) else {
        f.render_widget(
            Paragraph::new(
                " one answer only: Ctrl+A makes another aggregator variant, Ctrl+B turns the baseline on",
            )
            .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let (Some(a), Some(b)) = (side(run, l), side(run, rs)) else {
        return;
    };
    let loo = match l {
        Side::Variant(i) => run.variants.get(i).map(|v| v.loo.as_slice()),
        _ => None,
    }
    .unwrap_or_default();
    let (a_id, b_id) = (
        run.side_id(l).unwrap_or_default(),
        run.side_id(rs).unwrap_or_default(),
    );
    let vs = verdicts(run, &a_id, &b_id);
    let verdict_lines = vs.len().clamp(1, 3) as u16;
    let loo_lines = if loo.is_empty() {
        0
    } else {
        loo.len() as u16 + 1
    };
    let [cols, stats, verdict_area, loo_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(verdict_lines),
        Constraint::Length(loo_lines),
    ])
    .areas(inner);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(cols);
    let diff = app
        .compare
        .diff
        .then(|| crate::text::diff::word_diff(&a.text, &b.text));
    for (k, (s, rect)) in [(&a, left), (&b, right)].into_iter().enumerate() {
        let block = Block::default().borders(Borders::ALL).title(format!(
            " {}{} ",
            s.label,
            if s.ok { "" } else { " (failed)" }
        ));
        let inner = block.inner(rect);
        f.render_widget(block, rect);
        let lines = match &diff {
            Some((dl, dr)) => marked(if k == 0 { dl } else { dr }, inner.width, app.color),
            // The same renderer as the panes: code keeps its indentation here too.
            None => Markdown::new(app.color).wrapped(&s.text, inner.width),
        };
        f.render_widget(Paragraph::new(lines), inner);
    }
    let [lat, tok, cost] = compare::ratios(&a, &b);
    let (a_name, b_name) = (side_name(run, &a_id), side_name(run, &b_id));
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(" {a_name}: {}", a.summary())),
            Line::from(format!(" {b_name}: {}", b.summary())),
            Line::from(Span::styled(
                format!(
                    " {a_name} / {b_name}: latency {} · tokens {} · cost {}{}",
                    fmt_ratio(lat),
                    fmt_ratio(tok),
                    fmt_ratio(cost),
                    if app.compare.diff {
                        " · differing words marked (d: markdown)"
                    } else {
                        ""
                    }
                ),
                Style::default().add_modifier(Modifier::BOLD),
            )),
        ]),
        stats,
    );
    let vlines: Vec<Line> = if vs.is_empty() {
        vec![Line::from(if app.compare.judging {
            " judging…".to_string()
        } else {
            format!(
                " no verdict on this pair yet: j asks {}",
                app.judge_model
                    .as_deref()
                    .unwrap_or("the aggregator's model (set judge_model in config.toml)")
            )
        })]
    } else {
        vs.iter()
            .rev()
            .take(3)
            .map(|(j, flipped)| {
                let outcome = if *flipped { flip(j.outcome) } else { j.outcome };
                Line::from(format!(
                    " judge {}: {a_name} {} against {b_name}{}",
                    j.judge_model,
                    outcome.as_str(),
                    if j.inconsistent {
                        " (inconsistent: the orders disagreed)"
                    } else {
                        ""
                    },
                ))
            })
            .collect()
    };
    f.render_widget(Paragraph::new(vlines), verdict_area);
    if !loo.is_empty() {
        let mut lines = vec![Line::from(Span::styled(
            format!(
                " leave-one-out on {}: the variant against itself without one answer (a win: that answer helped)",
                side_name(run, &a_id)
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ))];
        for e in loo {
            let verdict = e
                .judgement
                .as_ref()
                .map(|j| {
                    format!(
                        "{}{}",
                        j.outcome.as_str(),
                        if j.inconsistent {
                            " (inconsistent)"
                        } else {
                            ""
                        }
                    )
                })
                .unwrap_or_else(|| e.call.error.clone().unwrap_or_else(|| "not judged".into()));
            lines.push(Line::from(format!(
                "  without #{} {:<24} {verdict:<22} similarity to the full answer {}",
                e.slot + 1,
                super::super::view::pane::short_model(&e.model),
                e.similarity
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "-".into())
            )));
        }
        f.render_widget(Paragraph::new(lines), loo_area);
    }
}

/// A side's text as plain lines, the words the other side lacks marked, wrapped to `width`.
fn marked(runs: &[(String, bool)], width: u16, color: bool) -> Vec<Line<'static>> {
    let style = if color {
        Style::default()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    };
    let mut out = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let flush = |line: &mut Vec<Span<'static>>, out: &mut Vec<Line<'static>>| {
        let l = RLine {
            prefix: vec![],
            content: std::mem::take(line),
            cont: vec![],
        };
        out.extend(wrap(&l, width));
    };
    for (text, changed) in runs {
        let text = crate::text::strip_controls(text);
        for (i, piece) in text.split('\n').enumerate() {
            if i > 0 {
                flush(&mut line, &mut out);
            }
            let piece = crate::text::expand_tabs(piece, 4);
            if !piece.is_empty() {
                let s = if *changed { style } else { Style::default() };
                line.push(Span::styled(piece.to_string(), s));
            }
        }
    }
    flush(&mut line, &mut out);
    out
}
