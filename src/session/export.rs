//! Exports of a session: Markdown for people (each final answer, with every proposer's answer folded
//! under it) and JSON for scripts (the session file itself).

use std::fmt::Write;

use super::compare::{compare, fmt_cost, fmt_ratio};
use super::{Session, SessionRun};
use crate::provider::Role;

pub fn json(s: &Session) -> String {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_string_pretty(s).unwrap_or_default()
}

pub fn markdown(s: &Session) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", s.name);
    let _ = writeln!(
        out,
        "Session `{}`, created {}, {} run(s).\n",
        s.id,
        s.created,
        s.runs.len()
    );
    for (i, run) in s.runs.iter().enumerate() {
        run_markdown(&mut out, i + 1, run, s);
    }
    if let Some(p) = &s.in_progress {
        let _ = writeln!(out, "## Interrupted run\n");
        let _ = writeln!(
            out,
            "This run was under way when moa stopped; the calls below are what it had.\n"
        );
        calls_markdown(&mut out, p);
    }
    out
}

fn run_markdown(out: &mut String, n: usize, run: &SessionRun, session: &super::Session) {
    let r = &run.record;
    let question = r
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let _ = writeln!(
        out,
        "## Run {n}: {}{}\n",
        r.preset,
        if run.kind == crate::session::RunKind::Reaggregate {
            " (re-aggregated)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "{}\n", quote(question));
    match &r.final_answer {
        Some(f) => {
            let _ = writeln!(
                out,
                "**Final answer** ({}):\n\n{}\n",
                f.source,
                f.text.trim()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "**No final answer** (every proposer failed, or cancelled).\n"
            );
        }
    }
    let c = compare(run);
    let _ = writeln!(
        out,
        "MoA: {} ms, {} tokens, {}.",
        c.moa.latency_ms,
        c.moa.tokens(),
        fmt_cost(c.moa.cost_usd)
    );
    if let Some(b) = &c.baseline {
        let _ = writeln!(
            out,
            "{}: {} ms, {} tokens, {}. MoA/baseline: latency {}, tokens {}, cost {}.",
            b.label,
            b.latency_ms,
            b.tokens(),
            fmt_cost(b.cost_usd),
            fmt_ratio(c.latency_ratio),
            fmt_ratio(c.tokens_ratio),
            fmt_ratio(c.cost_ratio)
        );
    }
    out.push('\n');
    for j in &run.judgements {
        let _ = writeln!(
            out,
            "Judge {}: MoA **{}**{}.\n",
            j.judge_model,
            j.outcome.as_str(),
            if j.inconsistent {
                " (the two orders disagreed)"
            } else {
                ""
            }
        );
    }
    let lines = super::variants::describe(session, run);
    if !lines.is_empty() {
        for l in lines {
            let _ = writeln!(out, "- {l}");
        }
        out.push('\n');
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            out,
            "<details><summary>Baseline: {} ({:?})</summary>\n\n{}\n\n</details>\n",
            b.model,
            b.status,
            b.text.trim()
        );
    }
    calls_markdown(out, run);
}

fn calls_markdown(out: &mut String, run: &SessionRun) {
    for (i, step) in run.record.steps.iter().enumerate() {
        let agreement = match (step.agreement, &step.agreement_method) {
            (Some(a), Some(m)) => format!(", agreement {a:.2} ({m})"),
            _ => String::new(),
        };
        for call in &step.calls {
            let _ = writeln!(
                out,
                "<details><summary>Step {} {}{agreement}: slot {} {}{} ({:?}, {} ms)</summary>\n\n{}\n{}\n</details>\n",
                i + 1,
                step.op,
                call.slot,
                call.model,
                call.temperature
                    .map(|t| format!(" t={t}"))
                    .unwrap_or_default(),
                call.status,
                call.latency_ms,
                call.text.trim(),
                call.error
                    .as_ref()
                    .map(|e| format!("\n> error: {e}\n"))
                    .unwrap_or_default()
            );
        }
    }
}

fn quote(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
