//! The `moa eval` report as one HTML page (`report.html` beside `report.md`): the summary, the
//! judge's win/tie/loss and win rate with its 95 % intervals, exact-match accuracy, per-prompt
//! latency of both sides, the proposers' agreement as a histogram, tokens and cost, and a table of
//! every prompt with its verdict and both answers folded. Built from the summary and the results.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::page::{REPORT_CSS, cards, document, esc, folded, progress, secs, verdict};
use super::svg::{self, Axis, IntervalRow};
use crate::engine::record::{CallStatus, RunRecord};
use crate::session::compare::fmt_cost;
use crate::session::eval::{Item, ItemResult, Summary};
use crate::session::judge::{Judgement, Verdict};
use crate::session::stats;

/// Colours shared by the charts: MoA, the baseline, and win/tie/loss/undecided.
pub const MOA: &str = "#3b6fb6";
pub const BASELINE: &str = "#c2410c";
pub const OUTCOMES: [(&str, &str); 4] = [
    ("win", "#40a060"),
    ("tie", "#b8bec8"),
    ("loss", "#d9534f"),
    ("undecided", "#f0c040"),
];
/// Prompts longer than this are cut in the table; the whole prompt is folded below the row.
const PROMPT_CUT: usize = 300;

/// The prompt as the table shows it: the last turn, earlier turns before it.
pub fn prompt_text(turns: &[String]) -> String {
    if turns.len() == 1 {
        return turns[0].clone();
    }
    turns
        .iter()
        .enumerate()
        .map(|(i, t)| format!("Turn {}: {t}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt cell (cut when long) and, when cut, the whole prompt to fold below.
pub fn prompt_cell(turns: &[String]) -> (String, Option<String>) {
    let full = prompt_text(turns);
    let cut = crate::text::truncate(&full, PROMPT_CUT);
    let whole = (cut.len() < full.len()).then(|| {
        format!(
            "<details><summary>the whole prompt</summary><blockquote class=\"q\">{}</blockquote></details>",
            esc(&full)
        )
    });
    (esc(&cut), whole)
}

/// The proposers' agreement on a prompt (the first step that has one), for its row.
pub fn agreement_cell(run: &RunRecord) -> String {
    run.steps
        .iter()
        .find_map(|s| s.agreement)
        .map(|a| format!("{a:.2}"))
        .unwrap_or_else(|| "-".into())
}

/// Each order's verdict and the judge's reasons, folded under `what` (the pair) and the outcome.
pub fn judge_fold(j: &Judgement, what: &str, names: impl Fn(&str) -> String) -> String {
    let mut text = String::new();
    for o in &j.orders {
        let _ = writeln!(
            text,
            "**{} shown first**: {}\n\n{}\n",
            names(&o.a),
            match o.verdict {
                Some(Verdict::A) => "the first is better",
                Some(Verdict::B) => "the second is better",
                Some(Verdict::C) => "a tie",
                None => "no verdict",
            },
            o.error.as_deref().unwrap_or(&o.reasoning)
        );
    }
    folded(
        &format!(
            "judge {} on {}: {}",
            esc(&j.judge_model),
            esc(what),
            verdict(j.outcome, false)
        ),
        &text,
    )
}

/// The whole page.
pub fn report(s: &Summary, items: &[Item], results: &BTreeMap<String, ItemResult>) -> String {
    let rs: Vec<&ItemResult> = items.iter().filter_map(|i| results.get(&i.key)).collect();
    let ok: Vec<&ItemResult> = rs.iter().copied().filter(|r| r.error.is_none()).collect();
    let baseline = s.baseline_model.as_deref().unwrap_or("no baseline");
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<header><h1>Evaluation: {} vs {}</h1><p class=\"meta\">{} prompts · {} done · {} errors{} · results in {} · moa {}</p></header>",
        esc(&s.preset),
        esc(baseline),
        s.prompts,
        s.done,
        s.errors,
        s.judge
            .as_ref()
            .map(|j| format!(" · judge {}", esc(&j.model)))
            .unwrap_or_default(),
        esc(&s.out.display().to_string()),
        env!("CARGO_PKG_VERSION")
    );
    let mut figures = progress(s.prompts, s.done, s.errors);
    if let Some(j) = &s.judge {
        figures.push(("MoA win rate (ties half)", format!("{:.3}", j.win_rate)));
    }
    if let Some(a) = &s.accuracy {
        figures.push(("exact match, MoA", format!("{:.3}", a.moa)));
    }
    figures.push((
        "latency p50, MoA / baseline",
        format!(
            "{} / {}",
            secs(s.latency_ms.moa_p50),
            secs(s.latency_ms.baseline_p50)
        ),
    ));
    figures.push((
        "cost per prompt, MoA",
        esc(&fmt_cost(Some(s.cost_per_prompt_usd.moa))),
    ));
    o.push_str(&cards(&figures));

    if let Some(j) = &s.judge {
        let _ = writeln!(
            o,
            "<h2>Judge: {}</h2><figure>{}",
            esc(&j.model),
            svg::stacked(
                &[(
                    "MoA against the baseline".into(),
                    vec![j.wins, j.ties, j.losses, j.errors]
                )],
                &OUTCOMES,
                "verdicts for MoA"
            )
        );
        let mut intervals = Vec::new();
        let mut legend = Vec::new();
        let mut note = format!("{:.3}", j.win_rate);
        if let Some(b) = j.ci95_bootstrap {
            intervals.push(b);
            legend.push("95 % paired bootstrap over prompts");
            let _ = write!(note, " · bootstrap {:.2}–{:.2}", b[0], b[1]);
        }
        intervals.push(j.ci95);
        legend.push("95 % Wilson interval");
        let _ = write!(note, " · Wilson {:.2}–{:.2}", j.ci95[0], j.ci95[1]);
        o.push_str(&svg::intervals(
            &[IntervalRow {
                label: "MoA win rate".into(),
                value: Some(j.win_rate),
                intervals,
                note,
            }],
            &Axis {
                lo: 0.0,
                hi: 1.0,
                reference: Some((0.5, "0.5: as good as the baseline")),
                bars: true,
            },
            &legend,
            "MoA win rate with its intervals",
        ));
        let _ = writeln!(
            o,
            "<figcaption>{} wins, {} ties, {} losses; {} of the ties are orders that disagreed (inconsistent); {} pairs undecided (not in the rate). Each pair is judged in both orders; ties count half. Answer length: MoA {} characters, baseline {} (judges favour long answers).</figcaption></figure>",
            j.wins,
            j.ties,
            j.losses,
            j.inconsistent,
            j.errors,
            s.avg_length.moa,
            s.avg_length
                .baseline
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }

    if let Some(a) = &s.accuracy {
        let row = |label: &str, v: f64| IntervalRow {
            label: label.into(),
            value: Some(v),
            intervals: stats::wilson95(v, a.n)
                .map(|(lo, hi)| vec![[lo, hi]])
                .unwrap_or_default(),
            note: format!("{v:.3}"),
        };
        let mut rows = vec![row("MoA", a.moa)];
        if let Some(b) = a.baseline {
            rows.push(row(baseline, b));
        }
        let _ = writeln!(
            o,
            "<h2>Exact match</h2><figure>{}<figcaption>Over the {} prompts with a reference: the last number for numeric references, the chosen letter for multiple choice, else the reference's words in the answer.</figcaption></figure>",
            svg::accuracy(&rows, "exact-match accuracy"),
            a.n
        );
    }

    let moa_lat: Vec<f64> = ok.iter().map(|r| r.run.wall_ms as f64).collect();
    let base_lat: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.baseline_ok().map(|b| b.latency_ms as f64))
        .collect();
    let mut groups = vec![("MoA".to_string(), moa_lat, MOA)];
    if !base_lat.is_empty() {
        groups.push((baseline.to_string(), base_lat, BASELINE));
    }
    let _ = writeln!(
        o,
        "<h2>Latency per prompt</h2><figure>{}<figcaption>One dot per prompt: MoA's whole pipeline, the baseline's answer. Solid tick p50, dashed p95.</figcaption></figure>",
        svg::strip(&groups, "latency per prompt")
    );

    if !s.agreement.is_empty() {
        let _ = writeln!(o, "<h2>Agreement of the proposers</h2>");
        for a in &s.agreement {
            let values: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.run.steps.get(a.step)?.agreement)
                .collect();
            let sp = &a.spread;
            let _ = writeln!(
                o,
                "<figure><h3>Step {}: {} ({})</h3>{}<figcaption>Per-prompt agreement of the answers at this step (1: they say the same), {} prompts: median {:.2}, p25 {:.2}, p75 {:.2}.</figcaption></figure>",
                a.step + 1,
                esc(&a.op),
                esc(&a.method),
                svg::histogram(&values, 10, (0.0, 1.0), "agreement per prompt"),
                sp.n,
                sp.median,
                sp.p25,
                sp.p75
            );
        }
    }

    let _ = writeln!(
        o,
        "<h2>Cost and tokens</h2><table class=\"grid\"><tr><th></th><th class=\"n\">MoA</th><th class=\"n\">{}</th></tr>",
        esc(baseline)
    );
    let l = &s.latency_ms;
    let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map(f).unwrap_or_else(|| "-".into());
    for (what, a, b) in [
        (
            "tokens per prompt (in + out)",
            format!("{:.0}", s.tokens_per_prompt.moa),
            opt(s.tokens_per_prompt.baseline, &|b| format!("{b:.0}")),
        ),
        (
            "cost per prompt",
            fmt_cost(Some(s.cost_per_prompt_usd.moa)),
            fmt_cost(s.cost_per_prompt_usd.baseline),
        ),
        (
            "cost in all",
            fmt_cost(Some(s.cost_usd.moa)),
            fmt_cost(s.cost_usd.baseline),
        ),
        (
            "answer length (characters)",
            format!("{:.0}", s.avg_length.moa),
            opt(s.avg_length.baseline, &|b| format!("{b:.0}")),
        ),
        ("latency p50", secs(l.moa_p50), secs(l.baseline_p50)),
        ("latency p95", secs(l.moa_p95), secs(l.baseline_p95)),
    ] {
        let _ = writeln!(
            o,
            "<tr><td>{what}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&a),
            esc(&b)
        );
    }
    o.push_str("</table>\n");
    if s.cost_incomplete {
        o.push_str("<p class=\"meta\">Some models have no price: costs are lower bounds.</p>\n");
    }
    if let Some(c) = &s.cache {
        let _ = writeln!(
            o,
            "<p class=\"meta\">Call cache: {} answers reused, {} calls made.</p>",
            c.hits, c.misses
        );
    }

    let _ = writeln!(
        o,
        "<h2>Prompts</h2><table class=\"grid prompts\"><thead><tr><th class=\"n\">line</th><th>prompt</th><th>verdict</th><th>exact match</th><th class=\"n\">MoA</th><th class=\"n\">baseline</th><th class=\"n\">agreement</th></tr></thead><tbody>"
    );
    for r in &rs {
        prompt_rows(&mut o, r, baseline);
    }
    o.push_str("</tbody></table>\n");
    document(
        &format!("Evaluation: {} vs {baseline}", s.preset),
        REPORT_CSS,
        &o,
    )
}

fn prompt_rows(o: &mut String, r: &ItemResult, baseline: &str) {
    let (prompt, whole) = prompt_cell(&r.turns);
    let verdict_cell = match (&r.error, &r.judgement) {
        (Some(e), _) => format!("<span class=\"bad\">✗ {}</span>", esc(e)),
        (None, Some(j)) => verdict(j.outcome, j.inconsistent),
        (None, None) => "-".into(),
    };
    let mark = |m: &Option<crate::session::exact::Match>| match m {
        Some(m) if m.correct => "<span class=\"ok\">✓</span>",
        Some(_) => "<span class=\"bad\">✗</span>",
        None => "-",
    };
    let exact = if r.reference.is_some() {
        format!("{} / {}", mark(&r.exact_moa), mark(&r.exact_baseline))
    } else {
        "-".into()
    };
    let agreement = agreement_cell(&r.run);
    let _ = writeln!(
        o,
        "<tr><td class=\"n\">{}</td><td class=\"p\">{prompt}</td><td>{verdict_cell}</td><td>{exact}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{agreement}</td></tr>",
        r.line,
        secs(Some(r.run.wall_ms)),
        secs(r.run.baseline.as_ref().map(|b| b.latency_ms)),
    );
    let _ = write!(o, "<tr class=\"fold\"><td colspan=\"7\">");
    if let Some(w) = whole {
        o.push_str(&w);
    }
    o.push_str("<div class=\"side\">");
    match &r.run.final_answer {
        Some(f) => o.push_str(&folded(
            &format!(
                "MoA ({}) · {} characters",
                esc(&f.source),
                f.text.chars().count()
            ),
            &f.text,
        )),
        None => o.push_str("<p class=\"bad\">MoA gave no answer</p>"),
    }
    if let Some(b) = &r.run.baseline {
        let status = if b.status == CallStatus::Ok {
            String::new()
        } else {
            format!(
                " · <span class=\"bad\">{}</span>",
                esc(b.error.as_deref().unwrap_or("failed"))
            )
        };
        o.push_str(&folded(
            &format!(
                "{} · {} characters{status}",
                esc(baseline),
                b.text.chars().count()
            ),
            &b.text,
        ));
    }
    if let Some(j) = &r.judgement {
        o.push_str(&judge_fold(j, "MoA", |a| match a {
            "moa" => "MoA".into(),
            _ => baseline.to_string(),
        }));
    }
    o.push_str("</div></td></tr>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_prompt_is_cut_in_the_table_and_folded_whole_below() {
        let long = format!("<b>{}</b> end", "x".repeat(400));
        let (cell, whole) = prompt_cell(std::slice::from_ref(&long));
        assert!(
            cell.starts_with("&lt;b&gt;") && !cell.contains(" end"),
            "{cell}"
        );
        let whole = whole.expect("a long prompt is folded whole");
        assert!(
            whole.contains("&lt;/b&gt; end") && !whole.contains("<b>"),
            "{whole}"
        );
        let (cell, whole) = prompt_cell(&["First".into(), "Then <i>".into()]);
        assert_eq!(cell, "Turn 1: First\nTurn 2: Then &lt;i&gt;");
        assert!(whole.is_none());
    }
}
