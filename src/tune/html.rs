//! The `moa tune` report as one HTML page (`report.html` beside `report.md`): per variant its
//! win/tie/loss and win rate with the 95 % bootstrap interval, the Bradley–Terry ranking with its
//! intervals, leave-one-out, latency per variant, accuracy, length, tokens, cost and the call cache,
//! and a table of every prompt with the proposers' answers and each variant's answer folded.
//! Built from the summary and the folder's results with the pieces of `session::html`.

use std::fmt::Write;

use super::report::Summary;
use super::{Against, Results, Variant};
use crate::session::compare::fmt_cost;
use crate::session::eval::Item;
use crate::session::html::eval::{OUTCOMES, agreement_cell, judge_fold, prompt_cell};
use crate::session::html::page::{
    REPORT_CSS, cards, document, esc, folded, progress, secs, verdict,
};
use crate::session::html::svg::{self, Axis, IntervalRow};
use crate::session::stats;

/// One colour per variant (repeating after eight).
const PALETTE: [&str; 8] = [
    "#3b6fb6", "#c2410c", "#2f9e44", "#7048e8", "#d6336c", "#0c8599", "#e67700", "#5c7cfa",
];
const PROPOSERS: &str = "#868e96";

fn dash<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// What the page is made from besides the summary: the tuning's set-up and its results.
pub struct Inputs<'a> {
    pub variants: &'a [Variant],
    pub judge: Option<&'a str>,
    pub against: &'a Against,
    pub items: &'a [Item],
    pub results: &'a Results,
}

/// The whole page.
pub fn report(s: &Summary, inp: &Inputs<'_>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<header><h1>Tuning the aggregator: {}</h1><p class=\"meta\">{} variants · {} prompts · {} done · {} errors · judge {} · against {} · results in {} · moa {}</p></header>",
        esc(&s.preset),
        s.variants.len(),
        s.prompts,
        s.done,
        s.errors,
        esc(s.judge.as_deref().unwrap_or("none")),
        esc(s.against.as_deref().unwrap_or("-")),
        esc(&s.out.display().to_string()),
        env!("CARGO_PKG_VERSION")
    );
    let mut figures = progress(s.prompts, s.done, s.errors);
    figures.push(("variants", s.variants.len().to_string()));
    if let Some(best) = s.ranking.first() {
        figures.push(("first by Bradley–Terry", esc(&best.name)));
    }
    figures.push((
        "proposers per prompt (paid once)",
        esc(&fmt_cost(Some(s.frozen.cost_usd))),
    ));
    figures.push(("call cache hits", s.cache.hits.to_string()));
    o.push_str(&cards(&figures));

    variants_table(&mut o, s);
    judged(&mut o, s);
    leave_one_out(&mut o, s);
    latency(&mut o, s, inp);
    accuracy(&mut o, s, inp);
    if s.cost_incomplete {
        o.push_str("<p class=\"meta\">Some models have no price: costs are lower bounds.</p>\n");
    }
    prompts(&mut o, inp);
    document(&format!("Tuning: {}", s.preset), REPORT_CSS, &o)
}

fn variants_table(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "<h2>Variants</h2><table class=\"grid\"><tr><th>variant</th><th>setup</th><th class=\"n\">W</th><th class=\"n\">T</th><th class=\"n\">L</th><th class=\"n\">inconsistent</th><th class=\"n\">undecided</th><th class=\"n\">win rate</th><th>95 % CI</th><th class=\"n\">length</th><th class=\"n\">accuracy</th><th class=\"n\">p50</th><th class=\"n\">p95</th><th class=\"n\">tokens</th><th class=\"n\">cost</th><th class=\"n\">no answer</th></tr>"
    );
    for v in &s.variants {
        let j = v.judged.as_ref();
        let n = |f: fn(&super::report::Judged) -> usize| dash(j.map(f));
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"ci\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&v.name),
            esc(&v.setup),
            n(|j| j.wins),
            n(|j| j.ties),
            n(|j| j.losses),
            n(|j| j.inconsistent),
            n(|j| j.errors),
            match j {
                Some(j) => dash(j.win_rate.map(|w| format!("{w:.3}"))),
                None if s.judge.is_some() && s.variants.len() > 1 => "anchor".into(),
                None => "-".into(),
            },
            j.and_then(|j| j.ci95)
                .map(|c| format!("{:.3}–{:.3}", c[0], c[1]))
                .unwrap_or_default(),
            dash(v.avg_length),
            dash(v.accuracy.map(|a| format!("{a:.3}"))),
            secs(v.latency_ms.p50),
            secs(v.latency_ms.p95),
            v.tokens,
            esc(&fmt_cost(Some(v.cost_usd))),
            v.errors
        );
    }
    let _ = writeln!(
        o,
        "</table><p class=\"meta\">Tokens and cost: the aggregation's, per prompt. The proposers' answers are made once per prompt and shared by every variant: {} tokens, {} and p50 {} per prompt. Call cache: {} answers reused, {} calls made.</p>",
        s.frozen.tokens,
        esc(&fmt_cost(Some(s.frozen.cost_usd))),
        secs(s.frozen.latency_ms.p50),
        s.cache.hits,
        s.cache.misses
    );
}

fn judged(o: &mut String, s: &Summary) {
    let (Some(judge), Some(against)) = (&s.judge, &s.against) else {
        let _ = writeln!(
            o,
            "<p class=\"meta\">No judge: --judge MODEL compares the variants.</p>"
        );
        return;
    };
    let rows: Vec<(String, Vec<usize>)> = s
        .variants
        .iter()
        .filter_map(|v| {
            let j = v.judged.as_ref()?;
            Some((v.name.clone(), vec![j.wins, j.ties, j.losses, j.errors]))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let against_text = if against == "round-robin" {
        "every other variant (round-robin)".to_string()
    } else {
        against.clone()
    };
    let _ = writeln!(
        o,
        "<h2>Judged by {}, against {}</h2><figure>{}",
        esc(judge),
        esc(&against_text),
        svg::stacked(&rows, &OUTCOMES, "verdicts per variant")
    );
    let rates: Vec<IntervalRow> = s
        .variants
        .iter()
        .map(|v| match &v.judged {
            Some(j) => IntervalRow {
                label: v.name.clone(),
                value: j.win_rate,
                intervals: j.ci95.into_iter().collect(),
                note: match (j.win_rate, j.ci95) {
                    (Some(w), Some(c)) => format!("{w:.3} [{:.2}–{:.2}]", c[0], c[1]),
                    (Some(w), None) => format!("{w:.3}"),
                    _ => "no verdict".into(),
                },
            },
            None => IntervalRow {
                label: v.name.clone(),
                value: None,
                intervals: Vec::new(),
                note: "anchor: the others are judged against it".into(),
            },
        })
        .collect();
    o.push_str(&svg::intervals(
        &rates,
        &Axis {
            lo: 0.0,
            hi: 1.0,
            reference: Some((0.5, "0.5: as good as what it is judged against")),
            bars: true,
        },
        &["95 % paired bootstrap over prompts"],
        "win rate per variant",
    ));
    let _ = writeln!(
        o,
        "<figcaption>Each pair judged in both orders; orders that disagree count as a tie (inconsistent); ties count half; undecided pairs count nowhere.</figcaption></figure>"
    );
    if !s.ranking.is_empty() {
        let reach = s
            .ranking
            .iter()
            .flat_map(|r| [r.score, r.ci95[0], r.ci95[1]])
            .filter(|x| x.is_finite())
            .fold(0.0f64, |m, x| m.max(x.abs()))
            .max(0.25);
        // Up to a multiple of 0.5, so that the gridlines (quarters of the axis) fall on round values.
        let reach = (reach * 1.1 * 2.0).ceil() / 2.0;
        let rows: Vec<IntervalRow> = s
            .ranking
            .iter()
            .enumerate()
            .map(|(i, r)| IntervalRow {
                label: format!("{}. {}", i + 1, r.name),
                value: Some(r.score),
                intervals: vec![r.ci95],
                note: format!("{:+.2} ({:+.2} to {:+.2})", r.score, r.ci95[0], r.ci95[1]),
            })
            .collect();
        let _ = writeln!(
            o,
            "<h2>Ranking</h2><figure>{}<figcaption>Bradley–Terry log-strength from all judged pairs, centred on 0; intervals from refitting on prompts resampled with replacement.</figcaption></figure>",
            svg::intervals(
                &rows,
                &Axis {
                    lo: -reach,
                    hi: reach,
                    reference: Some((0.0, "0: the average variant")),
                    bars: false,
                },
                &["95 % bootstrap interval"],
                "Bradley–Terry ranking"
            )
        );
    }
}

fn leave_one_out(o: &mut String, s: &Summary) {
    let Some(loo) = s.leave_one_out.as_ref().filter(|l| !l.is_empty()) else {
        return;
    };
    let rows: Vec<(String, Vec<usize>)> = loo
        .iter()
        .map(|e| {
            (
                format!("{} without #{}", e.variant, e.slot + 1),
                vec![e.wins, e.ties, e.losses, e.errors],
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "<h2>Leave-one-out</h2><figure>{}<figcaption>Each variant judged against itself without one proposer's answer: a win means that answer helped.</figcaption></figure>",
        svg::stacked(&rows, &OUTCOMES, "leave-one-out verdicts")
    );
    let _ = writeln!(
        o,
        "<table class=\"grid\"><tr><th>variant</th><th>proposer left out</th><th>model</th><th class=\"n\">W</th><th class=\"n\">T</th><th class=\"n\">L</th><th class=\"n\">undecided</th><th class=\"n\">win rate</th></tr>"
    );
    for e in loo {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>#{} (step {})</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&e.variant),
            e.slot + 1,
            e.step + 1,
            esc(&e.model),
            e.wins,
            e.ties,
            e.losses,
            e.errors,
            dash(e.win_rate.map(|w| format!("{w:.3}")))
        );
    }
    o.push_str("</table>\n");
}

fn frozen_ok<'a>(inp: &'a Inputs<'_>) -> Vec<&'a super::Frozen> {
    inp.items
        .iter()
        .filter_map(|i| inp.results.frozen.get(&i.key))
        .filter(|f| f.error.is_none())
        .collect()
}

fn latency(o: &mut String, _s: &Summary, inp: &Inputs<'_>) {
    let frozen = frozen_ok(inp);
    let mut groups: Vec<(String, Vec<f64>, &str)> = vec![(
        "proposers (once per prompt)".into(),
        frozen.iter().map(|f| f.run.wall_ms as f64).collect(),
        PROPOSERS,
    )];
    for (i, v) in inp.variants.iter().enumerate() {
        groups.push((
            v.name.clone(),
            frozen
                .iter()
                .filter_map(|f| inp.results.answer(&f.key, v, None))
                .map(|c| c.latency_ms as f64)
                .collect(),
            PALETTE[i % PALETTE.len()],
        ));
    }
    let _ = writeln!(
        o,
        "<h2>Latency per prompt</h2><figure>{}<figcaption>One dot per prompt: the proposers' run, then each variant's aggregation. Solid tick p50, dashed p95.</figcaption></figure>",
        svg::strip(&groups, "latency per prompt and variant")
    );
}

fn accuracy(o: &mut String, s: &Summary, inp: &Inputs<'_>) {
    if s.variants.iter().all(|v| v.accuracy.is_none()) {
        return;
    }
    let frozen = frozen_ok(inp);
    let rows: Vec<IntervalRow> = s
        .variants
        .iter()
        .zip(inp.variants)
        .map(|(vs, v)| {
            let n = frozen
                .iter()
                .filter(|f| f.reference.is_some() && inp.results.answer(&f.key, v, None).is_some())
                .count();
            IntervalRow {
                label: vs.name.clone(),
                value: vs.accuracy,
                intervals: vs
                    .accuracy
                    .and_then(|a| stats::wilson95(a, n))
                    .map(|(lo, hi)| vec![[lo, hi]])
                    .unwrap_or_default(),
                note: vs
                    .accuracy
                    .map(|a| format!("{a:.3} (n={n})"))
                    .unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    let _ = writeln!(
        o,
        "<h2>Exact match</h2><figure>{}<figcaption>Over the prompts with a reference.</figcaption></figure>",
        svg::accuracy(&rows, "exact-match accuracy per variant")
    );
}

fn prompts(o: &mut String, inp: &Inputs<'_>) {
    let pairs = inp
        .judge
        .map(|_| inp.against.pairs(inp.variants.len()))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "<h2>Prompts</h2><table class=\"grid prompts\"><thead><tr><th class=\"n\">line</th><th>prompt</th><th>verdicts</th><th>latency</th><th class=\"n\">agreement</th></tr></thead><tbody>"
    );
    let names = |n: &str| n.to_string();
    for item in inp.items {
        let Some(f) = inp.results.frozen.get(&item.key) else {
            continue;
        };
        let (prompt, whole) = prompt_cell(&f.turns);
        let mut verdicts = Vec::new();
        let mut judge_folds = String::new();
        if let Some(e) = &f.error {
            verdicts.push(format!("<span class=\"bad\">✗ {}</span>", esc(e)));
        }
        for &(a, b) in &pairs {
            let (va, vb) = (&inp.variants[a], &inp.variants[b]);
            let key = (
                f.key.clone(),
                va.fingerprint.clone(),
                vb.fingerprint.clone(),
                inp.judge.unwrap_or_default().to_string(),
            );
            if let Some(j) = inp.results.judged.get(&key) {
                verdicts.push(format!(
                    "{} {} against {}",
                    esc(&va.name),
                    verdict(j.outcome, j.inconsistent),
                    esc(&vb.name)
                ));
                judge_folds.push_str(&judge_fold(
                    j,
                    &format!("{} against {}", va.name, vb.name),
                    names,
                ));
            }
        }
        let latency: Vec<String> = inp
            .variants
            .iter()
            .filter_map(|v| {
                let c = inp.results.answer(&f.key, v, None)?;
                Some(format!("{} {}", esc(&v.name), secs(Some(c.latency_ms))))
            })
            .collect();
        let agreement = agreement_cell(&f.run);
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{}</td><td class=\"p\">{prompt}</td><td>{}</td><td>{}</td><td class=\"n\">{agreement}</td></tr>",
            f.line,
            if verdicts.is_empty() {
                "-".into()
            } else {
                verdicts.join("<br>")
            },
            latency.join("<br>")
        );
        let _ = write!(o, "<tr class=\"fold\"><td colspan=\"5\">");
        if let Some(w) = whole {
            o.push_str(&w);
        }
        if !f.answers.is_empty() {
            let mut inner = String::new();
            for a in &f.answers {
                let _ = write!(
                    inner,
                    "<h4>#{} {} (step {})</h4>{}",
                    a.slot + 1,
                    esc(&a.model),
                    a.step + 1,
                    crate::session::html::markdown(&a.text)
                );
            }
            let _ = write!(
                o,
                "<details><summary>the proposers' answers ({}), as every variant saw them</summary>{inner}</details>",
                f.answers.len()
            );
        }
        o.push_str("<div class=\"side\">");
        for v in inp.variants {
            match inp
                .results
                .answers
                .get(&(f.key.clone(), v.fingerprint.clone(), None))
            {
                Some(c) if c.status == crate::engine::record::CallStatus::Ok => {
                    o.push_str(&folded(
                        &format!("{} · {} characters", esc(&v.name), c.text.chars().count()),
                        &c.text,
                    ));
                }
                Some(c) => {
                    let _ = write!(
                        o,
                        "<p class=\"bad\">{}: {}</p>",
                        esc(&v.name),
                        esc(c.error.as_deref().unwrap_or("no answer"))
                    );
                }
                None => {}
            }
        }
        o.push_str(&judge_folds);
        o.push_str("</div></td></tr>\n");
    }
    o.push_str("</tbody></table>\n");
}
