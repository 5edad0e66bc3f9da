//! Aggregator variants in the workbench: every aggregation of a run's answers (the run's own, then
//! each Ctrl+A / Ctrl+E re-aggregation) is kept whole as a tab of the aggregator pane (F5/F6 switch);
//! each says which proposers it drew on (attribution); F7 runs the shown one once per proposer
//! without that proposer's answer and judges what each adds (leave-one-out). All of it is saved
//! with the session's runs and comes back when the session is opened.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use super::state::{App, RunMode, VariantView, variant_letter};
use super::update::Effect;
use crate::engine::preset::AgentSpec;
use crate::engine::record::{CallStatus, RunRecord};
use crate::session::judge::Outcome;
use crate::session::variants::{Attribution, BASELINE, LooEntry, PairJudgement, RunData};

/// What a re-aggregation under way runs with, until it ends and becomes a variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub prompt_label: String,
    pub agent: AgentSpec,
    pub prompt: String,
    pub given: Vec<(usize, String)>,
}

/// A run of the preset ended: its aggregation is variant A.
pub fn first_variant(app: &mut App) -> Vec<Effect> {
    let given = app.answers_with_slots();
    let Some((agent, prompt)) = app.aggregation() else {
        return vec![];
    };
    let Some(run) = app.run.as_mut() else {
        return vec![];
    };
    let Some(record) = run.record.as_ref() else {
        return vec![];
    };
    let Some(call) = aggregation_call(record) else {
        return vec![];
    };
    let v = VariantView {
        run_id: record.id.clone(),
        prompt_label: run
            .aggregator_prompt
            .clone()
            .unwrap_or_else(|| "edited".into()),
        agent,
        prompt,
        call,
        given,
        attribution: None,
        loo: Vec::new(),
    };
    run.variants = vec![v];
    run.variant = 0;
    attribute(run.variants.last())
}

/// The call that made a run's final answer by aggregating.
fn aggregation_call(record: &RunRecord) -> Option<crate::engine::record::CallRecord> {
    if record.final_answer.as_ref()?.source != "aggregate" {
        return None;
    }
    record
        .steps
        .iter()
        .rev()
        .find(|s| s.op == "aggregate")?
        .calls
        .last()
        .cloned()
}

/// A re-aggregation ended: it is the newest variant, and the one shown.
pub fn reaggregated(app: &mut App, record: &RunRecord) -> Vec<Effect> {
    let Some(p) = app.pending_variant.take() else {
        return vec![];
    };
    let Some(call) = record.steps.first().and_then(|s| s.calls.first()).cloned() else {
        return vec![];
    };
    let Some(run) = app.run.as_mut() else {
        return vec![];
    };
    run.variants.push(VariantView {
        run_id: record.id.clone(),
        prompt_label: p.prompt_label,
        agent: p.agent,
        prompt: p.prompt,
        call,
        given: p.given,
        attribution: None,
        loo: Vec::new(),
    });
    let i = run.variants.len() - 1;
    app.select_variant(i);
    attribute(app.run.as_ref().and_then(|r| r.variants.last()))
}

fn attribute(v: Option<&VariantView>) -> Vec<Effect> {
    match v {
        Some(v) if v.call.status == CallStatus::Ok && !v.given.is_empty() => {
            vec![Effect::Attribute {
                run_id: v.run_id.clone(),
                answer: v.call.text.clone(),
                given: v.given.clone(),
            }]
        }
        _ => vec![],
    }
}

/// F5 / F6: the previous or next variant.
pub fn step(app: &mut App, dir: i32) {
    if app.mode == RunMode::Reaggregating {
        app.status = "a re-aggregation is under way: its variant is shown when it ends".into();
        return;
    }
    let Some(run) = app.run.as_ref() else { return };
    let n = run.variants.len();
    if n < 2 {
        app.status = "one aggregation so far: Ctrl+A or Ctrl+E makes another variant".into();
        return;
    }
    let i = (run.variant as i32 + dir).rem_euclid(n as i32) as usize;
    app.select_variant(i);
    if let Some(v) = app.run.as_ref().and_then(|r| r.variants.get(i)) {
        app.status = format!("variant {}: {}", variant_letter(i), describe(v));
    }
}

fn describe(v: &VariantView) -> String {
    let t = v
        .agent
        .temperature
        .map(|t| format!(" t={t}"))
        .unwrap_or_default();
    format!(
        "{} · {}{t}",
        v.prompt_label,
        super::view::pane::short_model(&v.agent.model)
    )
}

pub fn attributed(app: &mut App, run_id: String, attribution: Attribution) -> Vec<Effect> {
    if let Some(v) = app
        .run
        .as_mut()
        .and_then(|r| r.variants.iter_mut().find(|v| v.run_id == run_id))
    {
        v.attribution = Some(attribution.clone());
        if let Some(slot) = attribution.copied {
            app.status = format!(
                "the aggregator copied proposer #{}'s answer (similarity ≥ {:.2}, the others clearly less)",
                slot + 1,
                crate::session::variants::COPY_AT
            );
        }
    }
    vec![Effect::SaveRunData {
        run_id,
        data: RunData::Attribution(attribution),
    }]
}

pub fn pair_judged(app: &mut App, run_id: String, pair: PairJudgement) -> Vec<Effect> {
    app.compare.judging = false;
    let Some(run) = app.run.as_mut() else {
        return vec![];
    };
    let name = |id: &str| side_name(run, id);
    app.status = format!(
        "judge {}: {} {} against {}{}",
        pair.judgement.judge_model,
        name(&pair.a),
        pair.judgement.outcome.as_str(),
        name(&pair.b),
        if pair.judgement.inconsistent {
            " (inconsistent: the orders disagreed)"
        } else {
            ""
        }
    );
    run.pair_judgements.push(pair.clone());
    let mut fx = Vec::new();
    // The run's own answer against the baseline is also the MoA-vs-baseline verdict that
    // `moa sessions show` and `moa sessions judge` keep.
    if pair.a == run_id && pair.b == BASELINE {
        if let Some(r) = app
            .session
            .as_mut()
            .and_then(|s| s.runs.iter_mut().find(|r| r.record.id == run_id))
        {
            r.judgements.push(pair.judgement.clone());
        }
        fx.push(Effect::StoreJudgement {
            run_id: run_id.clone(),
            judgement: Box::new(pair.judgement.clone()),
        });
    }
    fx.push(Effect::SaveRunData {
        run_id,
        data: RunData::PairJudgement(pair),
    });
    fx
}

/// How the compare view and the status line name a side: "A", "B", …, "MoA" or "baseline".
pub fn side_name(run: &super::state::RunView, id: &str) -> String {
    if id == BASELINE {
        return "baseline".into();
    }
    match run.variants.iter().position(|v| v.run_id == id) {
        Some(i) => variant_letter(i),
        None => "MoA".into(),
    }
}

/// F7: leave-one-out on the variant shown.
pub fn leave_one_out(app: &mut App) -> Vec<Effect> {
    let judge = app.judge_model.clone();
    let Some(run) = app.run.as_mut() else {
        app.status = "no run yet: run a prompt first".into();
        return vec![];
    };
    if run.loo_running.is_some() {
        app.status = "leave-one-out is already running".into();
        return vec![];
    }
    let Some(v) = run.variants.get(run.variant) else {
        app.status = "leave-one-out needs an aggregation: this preset has none".into();
        return vec![];
    };
    if v.call.status != CallStatus::Ok || v.given.len() < 2 {
        app.status = "leave-one-out needs a finished aggregation of at least two answers".into();
        return vec![];
    }
    let judge = judge.or_else(|| Some(v.agent.model.clone()));
    let messages = run
        .record
        .as_ref()
        .map(|r| r.messages.clone())
        .unwrap_or_default();
    run.loo_running = Some(v.run_id.clone());
    app.status = format!(
        "leave-one-out on variant {}: {} aggregations without one answer each, then the judge…",
        variant_letter(run.variant),
        v.given.len()
    );
    vec![Effect::LeaveOneOut {
        run_id: v.run_id.clone(),
        messages,
        agent: v.agent.clone(),
        prompt: v.prompt.clone(),
        given: v.given.clone(),
        full: v.call.text.clone(),
        judge,
    }]
}

pub fn loo_done(app: &mut App, run_id: String, mut entries: Vec<LooEntry>) -> Vec<Effect> {
    // Name each left-out proposer by its pane's model.
    if let Some(&layer) = app.layer_steps().last()
        && let Some(run) = app.run.as_ref()
    {
        for e in &mut entries {
            if let Some(p) = run.steps[layer].panes.get(e.slot) {
                e.model = p.model.clone();
            }
        }
    }
    let Some(run) = app.run.as_mut() else {
        return vec![];
    };
    run.loo_running = None;
    if let Some(v) = run.variants.iter_mut().find(|v| v.run_id == run_id) {
        v.loo = entries.clone();
    }
    let helped = entries
        .iter()
        .filter(|e| {
            e.judgement
                .as_ref()
                .is_some_and(|j| j.outcome == Outcome::Win)
        })
        .count();
    app.status = format!(
        "leave-one-out done: {helped} of {} proposers' answers helped (F3 shows the table)",
        entries.len()
    );
    vec![Effect::SaveRunData {
        run_id,
        data: RunData::LeaveOneOut(entries),
    }]
}

/// The aggregator pane's tab line: every variant, the shown one highlighted.
pub fn tabs(app: &App) -> Option<Line<'static>> {
    let run = app.run.as_ref()?;
    if run.variants.len() < 2 && app.mode != RunMode::Reaggregating {
        return None;
    }
    let mut spans = Vec::new();
    for (i, v) in run.variants.iter().enumerate() {
        let shown = i == run.variant && app.mode != RunMode::Reaggregating;
        let mark = match v.call.status {
            CallStatus::Ok => "",
            _ => " ✗",
        };
        let text = format!(
            " {} {} {:.1}s{mark} ",
            variant_letter(i),
            v.prompt_label,
            v.call.latency_ms as f64 / 1000.0
        );
        let style = if shown {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default()
        };
        spans.push(Span::styled(text, style));
    }
    if app.mode == RunMode::Reaggregating {
        spans.push(Span::styled(
            format!(" {} … ", variant_letter(run.variants.len())),
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ));
    }
    Some(Line::from(spans))
}

/// The aggregator pane's last line: which proposers the shown variant drew on.
pub fn attribution_line(app: &App) -> Option<Line<'static>> {
    let run = app.run.as_ref()?;
    if app.mode == RunMode::Reaggregating {
        return None;
    }
    let a = run.shown_variant()?.attribution.as_ref()?;
    let mut spans = vec![Span::raw("draws on ")];
    for (slot, sim) in a.slots.iter().zip(&a.similarity) {
        spans.push(Span::raw(format!("#{} {sim:.2}  ", slot + 1)));
    }
    spans.push(Span::styled(
        format!("({})", a.method),
        Style::default().add_modifier(Modifier::DIM),
    ));
    if let Some(slot) = a.copied {
        let warn = if app.color {
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        spans.push(Span::styled(format!("  ⚠ copies #{}", slot + 1), warn));
    }
    Some(Line::from(spans))
}
