//! A session as one self-contained HTML page (`moa sessions export ID --format html`): what the
//! workbench shows, to send to someone. Everything a model or provider wrote is untrusted: it goes
//! through `esc` and `markdown` (see those modules).

use std::fmt::Write;

use super::markdown::markdown;
use super::page::{document, esc};
use super::svg;
use crate::engine::record::{CallRecord, CallStatus, StepRecord};
use crate::session::compare::fmt_cost;
use crate::session::variants::letter;
use crate::session::{RunKind, Session, SessionRun};

/// The calls of a run, as the workbench labels them: `propose #2 model t=0.7`.
fn call_label(c: &CallRecord) -> String {
    let t = c.temperature.map(|t| format!(" t={t}")).unwrap_or_default();
    format!("#{} {}{t}", c.slot + 1, c.model)
}

fn status(c: &CallRecord) -> String {
    let (class, word) = match c.status {
        CallStatus::Ok => ("ok", "✓"),
        CallStatus::Late => ("warn", "✓ late"),
        CallStatus::Cancelled => ("warn", "■ cancelled"),
        CallStatus::Dropped => ("warn", "dropped"),
        CallStatus::Failed => ("bad", "✗ failed"),
        CallStatus::Timeout => ("bad", "✗ timed out"),
    };
    format!(
        "<span class=\"{class}\">{word}</span> {:.1}s · {} tok{}",
        c.latency_ms as f64 / 1000.0,
        c.tokens_out,
        if c.cached { " · cached" } else { "" }
    )
}

fn call_html(c: &CallRecord, title: &str) -> String {
    let mut s = format!(
        "<article class=\"call\"><h4>{} · {}</h4>",
        esc(title),
        status(c)
    );
    s.push_str(&markdown(&c.text));
    if let Some(e) = c.error.as_ref().filter(|_| c.status != CallStatus::Ok) {
        let _ = write!(s, "<p class=\"bad\">✗ {}</p>", esc(e));
    }
    s.push_str("</article>\n");
    s
}

/// Latency bars: per call, waiting for the first token (light) then generating (dark), on the
/// run's clock; the slowest call of each step (the critical path) outlined.
fn latency_svg(steps: &[StepRecord], baseline: Option<&CallRecord>) -> String {
    let mut rows: Vec<(String, &CallRecord, bool)> = Vec::new();
    for s in steps {
        let slowest = s
            .calls
            .iter()
            .map(|c| c.start_ms + c.latency_ms)
            .max()
            .unwrap_or(0);
        for c in &s.calls {
            let crit = c.start_ms + c.latency_ms == slowest;
            rows.push((format!("{} {}", s.op, call_label(c)), c, crit));
        }
    }
    if let Some(b) = baseline {
        rows.push((format!("baseline {}", call_label(b)), b, false));
    }
    let end = rows
        .iter()
        .map(|(_, c, _)| c.start_ms + c.latency_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (label_w, bar_w, row_h) = (260.0, 620.0, 18.0);
    let h = rows.len() as f64 * row_h + 24.0;
    let mut s = svg::open(label_w + bar_w + 70.0, h, "latency per call");
    for (i, (label, c, crit)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let x0 = label_w + c.start_ms as f64 / end * bar_w;
        let ttft = c.ttft_ms.unwrap_or(c.latency_ms).min(c.latency_ms) as f64 / end * bar_w;
        let gen_w = (c.latency_ms as f64 / end * bar_w - ttft).max(0.0);
        let color = if c.status == CallStatus::Ok {
            "#3b6fb6"
        } else {
            "#b42318"
        };
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{x0:.1}\" y=\"{y}\" width=\"{ttft:.1}\" height=\"12\" fill=\"#c9d7ee\"/><rect x=\"{:.1}\" y=\"{y}\" width=\"{gen_w:.1}\" height=\"12\" fill=\"{color}\"{}/><text x=\"{:.1}\" y=\"{}\">{:.1}s</text>",
            y + 10.0,
            esc(&crate::text::truncate(label, 42)),
            x0 + ttft,
            if *crit {
                " stroke=\"#111\" stroke-width=\"1.5\""
            } else {
                ""
            },
            x0 + ttft + gen_w + 4.0,
            y + 10.0,
            c.latency_ms as f64 / 1000.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{label_w}\" y=\"{}\">light: waiting for the first token · dark: generating · outlined: the critical path</text></svg>",
        h - 4.0
    );
    s
}

/// The agreement matrix as a heatmap: darker is more alike.
fn heatmap(step: &StepRecord) -> String {
    let Some(m) = step.agreement_matrix.as_ref().filter(|m| m.len() > 1) else {
        return String::new();
    };
    let ok: Vec<&CallRecord> = step
        .calls
        .iter()
        .filter(|c| c.status == CallStatus::Ok)
        .collect();
    let mut s = String::from("<table class=\"grid\"><tr><th></th>");
    for c in ok.iter().take(m.len()) {
        let _ = write!(s, "<th>#{}</th>", c.slot + 1);
    }
    s.push_str("</tr>");
    for (i, row) in m.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><th>#{}</th>",
            ok.get(i).map_or(i + 1, |c| c.slot + 1)
        );
        for (j, v) in row.iter().enumerate() {
            let v = if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let light = (97.0 - v * 55.0).round();
            let _ = write!(
                s,
                "<td style=\"background:hsl(215,60%,{light}%);color:{}\">{}</td>",
                if light < 60.0 { "#fff" } else { "#111" },
                if i == j {
                    "·".into()
                } else {
                    format!("{v:.2}")
                }
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn run_html(out: &mut String, n: usize, session: &Session, run: &SessionRun) {
    let r = &run.record;
    let _ = writeln!(
        out,
        "<section class=\"run\"><h2>Run {n}: {}{}</h2>",
        esc(&r.preset),
        match run.kind {
            RunKind::Reaggregate => " (re-aggregated)",
            RunKind::Rerun => " (one proposer again)",
            RunKind::Run => "",
        }
    );
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} · {:.1} s · {} tokens in, {} out · {}</p>",
        esc(&r.created),
        r.wall_ms as f64 / 1000.0,
        r.usage.tokens_in,
        r.usage.tokens_out,
        fmt_cost((!r.usage.cost_incomplete).then_some(r.usage.cost_usd))
    );
    let _ = writeln!(
        out,
        "<blockquote class=\"q\">{}</blockquote>",
        esc(crate::engine::prompts::last_user(&r.messages))
    );
    let family = session.variants(&r.id);
    let last_llm = r.steps.iter().rposition(|s| !s.calls.is_empty());
    for (k, st) in r.steps.iter().enumerate() {
        if st.calls.is_empty() || (Some(k) == last_llm && !family.is_empty()) {
            continue;
        }
        let agreement = match (st.agreement, &st.agreement_method) {
            (Some(a), Some(m)) => format!(" · agreement {a:.2} ({})", esc(m)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<h3>Step {}: {}{agreement}</h3><div class=\"cols\">",
            k + 1,
            esc(&st.op)
        );
        for c in &st.calls {
            out.push_str(&call_html(c, &call_label(c)));
        }
        out.push_str("</div>\n");
        out.push_str(&heatmap(st));
    }
    if !family.is_empty() {
        let _ = writeln!(out, "<h3>Aggregator: {} variant(s)</h3>", family.len());
        for (i, v) in family.iter().enumerate() {
            let call = if i == 0 {
                v.aggregated()
            } else {
                v.record.steps.first().and_then(|s| s.calls.first())
            };
            let Some(c) = call else { continue };
            let _ = write!(
                out,
                "<details{}><summary>{} · {} · {}</summary>",
                if i + 1 == family.len() { " open" } else { "" },
                letter(i),
                esc(&call_label(c)),
                status(c)
            );
            out.push_str(&markdown(&c.text));
            if let Some(a) = &v.attribution {
                let sims: Vec<String> = a
                    .slots
                    .iter()
                    .zip(&a.similarity)
                    .map(|(s, x)| format!("#{} {x:.2}", s + 1))
                    .collect();
                let _ = write!(
                    out,
                    "<p class=\"attr\">draws on {} ({}){}</p>",
                    sims.join(" · "),
                    esc(&a.method),
                    a.copied
                        .map(|s| format!(" <span class=\"warn\">⚠ copies #{}</span>", s + 1))
                        .unwrap_or_default()
                );
            }
            if !v.leave_one_out.is_empty() {
                out.push_str("<table class=\"grid\"><tr><th>left out</th><th>verdict for the full answer</th><th>similarity to it</th></tr>");
                for e in &v.leave_one_out {
                    let _ = write!(
                        out,
                        "<tr><td>#{} {}</td><td>{}</td><td>{}</td></tr>",
                        e.slot + 1,
                        esc(&e.model),
                        e.judgement
                            .as_ref()
                            .map(|j| j.outcome.as_str())
                            .unwrap_or("not judged"),
                        e.similarity
                            .map(|s| format!("{s:.2}"))
                            .unwrap_or_else(|| "-".into())
                    );
                }
                out.push_str("</table>");
            }
            out.push_str("</details>\n");
        }
    } else if let Some(f) = &r.final_answer {
        let _ = writeln!(
            out,
            "<h3>Final answer ({})</h3><article class=\"call\">{}</article>",
            esc(&f.source),
            markdown(&f.text)
        );
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(out, "<h3>Baseline</h3>");
        out.push_str(&call_html(b, &b.model));
    }
    let name = |id: &str| crate::session::variants::variant_name(&family, id);
    let verdicts: Vec<String> = run
        .judgements
        .iter()
        .map(|j| {
            format!(
                "judge {}: MoA {}{}",
                esc(&j.judge_model),
                j.outcome.as_str(),
                if j.inconsistent {
                    " (the two orders disagreed)"
                } else {
                    ""
                }
            )
        })
        .chain(run.pair_judgements.iter().map(|p| {
            format!(
                "judge {}: {} {} against {}{}",
                esc(&p.judgement.judge_model),
                name(&p.a),
                p.judgement.outcome.as_str(),
                name(&p.b),
                if p.judgement.inconsistent {
                    " (the two orders disagreed)"
                } else {
                    ""
                }
            )
        }))
        .collect();
    if !verdicts.is_empty() {
        let _ = writeln!(out, "<h3>Verdicts</h3><ul>");
        for v in verdicts {
            let _ = writeln!(out, "<li>{v}</li>");
        }
        out.push_str("</ul>\n");
    }
    if r.steps.iter().any(|s| !s.calls.is_empty()) {
        let _ = writeln!(out, "<h3>Latency</h3>");
        out.push_str(&latency_svg(&r.steps, r.baseline.as_ref()));
    }
    out.push_str("</section>\n");
}

/// The whole session as one HTML page.
pub fn html(s: &Session) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><p class=\"meta\">session {} · created {} · {} run(s) · exported by moa {}</p></header>",
        esc(&s.name),
        esc(&s.id),
        esc(&s.created),
        s.runs.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (i, run) in s.runs.iter().enumerate() {
        // A re-aggregation is shown with its parent, as one of its variants.
        if run.kind == RunKind::Reaggregate
            && run
                .parent
                .as_ref()
                .is_some_and(|p| s.runs.iter().any(|r| &r.record.id == p))
        {
            continue;
        }
        run_html(&mut out, i + 1, s, run);
    }
    document(&format!("{} · moa session", s.name), "", &out)
}
