//! The agents editor (F4): every agent of the preset with its model, temperature and max tokens;
//! change them, add or remove proposers. Changes apply from the next run.

use std::sync::Arc;

use ratatui::Frame;
use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph};

use super::super::keymap::{self, Action, Scope};
use super::super::state::{AgentRef, App, agent_in_mut};
use super::super::update::Effect;
use super::{Overlay, selected, window};
use crate::engine::preset::{AgentSpec, Step};

#[derive(Default)]
pub struct AgentsState {
    /// The selected row.
    pub row: usize,
}

pub fn open(app: &mut App) {
    app.overlay = Overlay::Agents;
    app.agents.row = app.agents.row.min(app.agent_refs().len().saturating_sub(1));
}

pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let refs = app.agent_refs();
    let Some(&sel) = refs.get(app.agents.row) else {
        app.overlay = Overlay::None;
        return vec![];
    };
    let edit = |app: &mut App, f: &mut dyn FnMut(&mut AgentSpec)| {
        if let Some(a) = agent_in_mut(Arc::make_mut(&mut app.preset), sel) {
            f(a);
        }
    };
    match keymap::lookup(&k, Scope::Agents) {
        Some(Action::Quit) => app.quit = true,
        Some(Action::Close) => {
            app.overlay = Overlay::None;
            app.status =
                "agents: changes apply to the next run (Ctrl+R runs the last prompt again)".into();
        }
        Some(Action::Up) => app.agents.row = app.agents.row.saturating_sub(1),
        Some(Action::Down) => app.agents.row = (app.agents.row + 1).min(refs.len() - 1),
        Some(a @ (Action::TempUp | Action::TempDown)) => {
            let d = if a == Action::TempDown { -0.1 } else { 0.1 };
            edit(app, &mut |a| {
                let t = a.temperature.unwrap_or(0.7) + d;
                // One decimal, as a person would type it (and as it is sent).
                a.temperature = Some(((t.clamp(0.0, 2.0)) * 10.0).round() / 10.0);
            });
        }
        Some(a @ (Action::TokensUp | Action::TokensDown)) => {
            let up = a == Action::TokensUp;
            edit(app, &mut |a| {
                let m = a.max_tokens.unwrap_or(512);
                a.max_tokens = Some(
                    if up {
                        m.saturating_mul(2)
                    } else {
                        (m / 2).max(16)
                    }
                    .min(32_768),
                );
            });
        }
        Some(Action::PickModel) => return super::picker::open(app),
        Some(Action::AddAgent) => {
            if let Some((agents, kk)) = agent_list(app, sel) {
                let copy = agents[kk].clone();
                agents.insert(kk + 1, copy);
                app.agents.row += 1;
            } else {
                app.status =
                    "only steps with several agents take more (propose, synthesize, refine)".into();
            }
        }
        Some(Action::RemoveAgent) => {
            if let Some((agents, kk)) = agent_list(app, sel)
                && agents.len() > 1
            {
                agents.remove(kk);
                app.agents.row = app.agents.row.min(refs.len() - 2);
            } else {
                app.status = "a step keeps at least one agent".into();
            }
        }
        _ => {}
    }
    vec![]
}

/// The list of agents `sel` is in, and its place there (steps with several agents only).
fn agent_list(app: &mut App, sel: AgentRef) -> Option<(&mut Vec<AgentSpec>, usize)> {
    let AgentRef::Many(i, k) = sel else {
        return None;
    };
    match Arc::make_mut(&mut app.preset).steps.get_mut(i)? {
        Step::Propose { agents, .. }
        | Step::Synthesize { agents, .. }
        | Step::Refine { agents, .. } => Some((agents, k)),
        _ => None,
    }
}

pub fn draw(app: &App, f: &mut Frame, area: Rect) {
    let r = super::centered(area, 80, 70);
    let block = super::frame(
        app,
        " agents (used from the next run) ".into(),
        Scope::Agents,
        r.width,
    );
    let inner = block.inner(r);
    f.render_widget(Clear, r);
    f.render_widget(block, r);
    let refs = app.agent_refs();
    let first = window(app.agents.row, inner.height as usize);
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
            let text = match app.agent(*r) {
                Some(a) => format!(
                    " {where_:<16} {:<40} t={:<5} max_tokens={}",
                    a.model,
                    a.temperature.map(|t| t.to_string()).unwrap_or("-".into()),
                    a.max_tokens.map(|t| t.to_string()).unwrap_or("-".into())
                ),
                None => format!(" {where_}"),
            };
            Line::styled(text, selected(row == app.agents.row))
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from(" this preset has no agents to edit")]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(lines), inner);
}
