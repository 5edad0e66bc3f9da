//! Evaluation reports as text (terminal, with bar charts) and Markdown. Pure strings: the CLI prints.

use std::fmt::Write;

use super::compare::{fmt_cost, fmt_ratio};
use super::eval::Summary;
use super::stats::bar;

const BAR: usize = 24;

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn ms(x: Option<u64>) -> String {
    x.map(|v| format!("{v}")).unwrap_or_else(|| "-".into())
}

pub fn text(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "moa eval: {} vs {} · {} prompts · {} done, {} errors{}",
        s.preset,
        s.baseline_model.as_deref().unwrap_or("no baseline"),
        s.prompts,
        s.done,
        s.errors,
        if s.skipped_done > 0 {
            format!(" ({} already done before this run)", s.skipped_done)
        } else {
            String::new()
        }
    );
    if let Some(j) = &s.judge {
        let n = (j.wins + j.ties + j.losses).max(1) as f64;
        let _ = writeln!(o, "\nJudge {} (each pair in both orders):", j.model);
        for (label, k) in [("win", j.wins), ("tie", j.ties), ("loss", j.losses)] {
            let _ = writeln!(
                o,
                "  {label:<5} {:<BAR$} {k:>4}  {}",
                bar(k as f64, n, BAR),
                pct(k as f64 / n)
            );
        }
        let _ = writeln!(
            o,
            "  MoA win rate {:.3} (ties count half), 95% CI {:.3}–{:.3} · inconsistent {} · undecided {}",
            j.win_rate, j.ci95[0], j.ci95[1], j.inconsistent, j.errors
        );
        if let Some(b) = j.ci95_bootstrap {
            let _ = writeln!(
                o,
                "  paired bootstrap over prompts: 95% CI {:.3}–{:.3} (Wilson's above)",
                b[0], b[1]
            );
        }
        if let Some(bl) = s.avg_length.baseline {
            let _ = writeln!(
                o,
                "  answer length: MoA {} characters, baseline {bl} (judges favour long answers)",
                s.avg_length.moa
            );
        }
    }
    if let Some(a) = &s.accuracy {
        let _ = writeln!(o, "\nExact match ({} prompts with a reference):", a.n);
        let _ = writeln!(o, "  MoA       {:<BAR$} {:.3}", bar(a.moa, 1.0, BAR), a.moa);
        if let Some(b) = a.baseline {
            let _ = writeln!(o, "  baseline  {:<BAR$} {b:.3}", bar(b, 1.0, BAR));
        }
    }
    let l = &s.latency_ms;
    let top = [l.moa_p95, l.baseline_p95]
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let _ = writeln!(o, "\nLatency per prompt (ms)   p50      p95");
    let _ = writeln!(
        o,
        "  MoA                 {:>7}  {:>7}  {}",
        ms(l.moa_p50),
        ms(l.moa_p95),
        bar(l.moa_p50.unwrap_or(0) as f64, top, BAR)
    );
    if s.baseline_model.is_some() {
        let _ = writeln!(
            o,
            "  baseline            {:>7}  {:>7}  {}",
            ms(l.baseline_p50),
            ms(l.baseline_p95),
            bar(l.baseline_p50.unwrap_or(0) as f64, top, BAR)
        );
    }
    let t = &s.tokens_per_prompt;
    let c = &s.cost_per_prompt_usd;
    let ratio = |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map(|b| a / b);
    let _ = writeln!(
        o,
        "\nPer prompt: tokens MoA {:.0} / baseline {} ({}); cost MoA {} / baseline {} ({}){}",
        t.moa,
        t.baseline.map(|b| format!("{b:.0}")).unwrap_or("-".into()),
        fmt_ratio(ratio(t.moa, t.baseline)),
        fmt_cost(Some(c.moa)),
        fmt_cost(c.baseline),
        fmt_ratio(ratio(c.moa, c.baseline)),
        if s.cost_incomplete {
            " (some prices unknown: lower bounds)"
        } else {
            ""
        }
    );
    if !s.agreement.is_empty() {
        let _ = writeln!(o, "\nAgreement per step      min   p25   med   p75   max");
        for a in &s.agreement {
            let sp = &a.spread;
            let _ = writeln!(
                o,
                "  step {} {:<8} {:<7} {:.2}  {:.2}  {:.2}  {:.2}  {:.2}  {}",
                a.step + 1,
                a.op,
                format!("({})", a.method),
                sp.min,
                sp.p25,
                sp.median,
                sp.p75,
                sp.max,
                bar(sp.median, 1.0, 12)
            );
        }
    }
    if let Some(c) = s.cache.as_ref().filter(|c| c.hits > 0) {
        let _ = writeln!(
            o,
            "\nCall cache: {} answers reused, {} calls made (--no-cache makes every call).",
            c.hits, c.misses
        );
    }
    let _ = writeln!(
        o,
        "\nResults: {} (results.jsonl, summary.json, report.md, report.html)",
        s.out.display()
    );
    o
}

pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Evaluation: {} vs {}\n",
        s.preset,
        s.baseline_model.as_deref().unwrap_or("no baseline")
    );
    let _ = writeln!(
        o,
        "{} prompts, {} done, {} errors.\n",
        s.prompts, s.done, s.errors
    );
    if let Some(j) = &s.judge {
        let _ = writeln!(o, "## Judge: {}\n", j.model);
        let _ = writeln!(
            o,
            "| wins | ties | losses | win rate | 95% CI | inconsistent | undecided | bootstrap 95% CI | avg length MoA / baseline |"
        );
        let _ = writeln!(o, "|---:|---:|---:|---:|---|---:|---:|---|---|");
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.3} | {:.3}–{:.3} | {} | {} | {} | {} / {} |\n",
            j.wins,
            j.ties,
            j.losses,
            j.win_rate,
            j.ci95[0],
            j.ci95[1],
            j.inconsistent,
            j.errors,
            j.ci95_bootstrap
                .map(|b| format!("{:.3}–{:.3}", b[0], b[1]))
                .unwrap_or_else(|| "-".into()),
            s.avg_length.moa,
            s.avg_length
                .baseline
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(
            o,
            "Each pair is judged in both orders; orders that disagree count as a tie (inconsistent). Ties count as half a win.\n"
        );
    }
    let _ = writeln!(o, "## Cost and speed\n");
    let _ = writeln!(o, "| | MoA | baseline |");
    let _ = writeln!(o, "|---|---:|---:|");
    let l = &s.latency_ms;
    let _ = writeln!(
        o,
        "| latency p50 (ms) | {} | {} |",
        ms(l.moa_p50),
        ms(l.baseline_p50)
    );
    let _ = writeln!(
        o,
        "| latency p95 (ms) | {} | {} |",
        ms(l.moa_p95),
        ms(l.baseline_p95)
    );
    let _ = writeln!(
        o,
        "| tokens per prompt | {:.0} | {} |",
        s.tokens_per_prompt.moa,
        s.tokens_per_prompt
            .baseline
            .map(|b| format!("{b:.0}"))
            .unwrap_or("-".into())
    );
    let _ = writeln!(
        o,
        "| cost per prompt | {} | {} |",
        fmt_cost(Some(s.cost_per_prompt_usd.moa)),
        fmt_cost(s.cost_per_prompt_usd.baseline)
    );
    let _ = writeln!(
        o,
        "| cost in all | {} | {} |",
        fmt_cost(Some(s.cost_usd.moa)),
        fmt_cost(s.cost_usd.baseline)
    );
    if let Some(a) = &s.accuracy {
        let _ = writeln!(
            o,
            "| exact match ({} with a reference) | {:.3} | {} |",
            a.n,
            a.moa,
            a.baseline.map(|b| format!("{b:.3}")).unwrap_or("-".into())
        );
    }
    if !s.agreement.is_empty() {
        let _ = writeln!(o, "\n## Agreement per step\n");
        let _ = writeln!(o, "| step | op | method | min | p25 | median | p75 | max |");
        let _ = writeln!(o, "|---:|---|---|---:|---:|---:|---:|---:|");
        for a in &s.agreement {
            let sp = &a.spread;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                a.step + 1,
                a.op,
                a.method,
                sp.min,
                sp.p25,
                sp.median,
                sp.p75,
                sp.max
            );
        }
    }
    o
}

/// Two evaluations side by side (two aggregator prompts, two presets, ...).
pub fn compare(a: &Summary, b: &Summary, common: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<28} {:>22} {:>22}", "", "A", "B");
    let row = |o: &mut String, k: &str, x: String, y: String| {
        let _ = writeln!(o, "{k:<28} {x:>22} {y:>22}");
    };
    row(&mut o, "preset", a.preset.clone(), b.preset.clone());
    row(
        &mut o,
        "baseline",
        a.baseline_model.clone().unwrap_or("-".into()),
        b.baseline_model.clone().unwrap_or("-".into()),
    );
    row(
        &mut o,
        "prompts done",
        a.done.to_string(),
        b.done.to_string(),
    );
    let wr = |s: &Summary| {
        s.judge
            .as_ref()
            .map(|j| format!("{:.3} [{:.2}–{:.2}]", j.win_rate, j.ci95[0], j.ci95[1]))
            .unwrap_or("-".into())
    };
    row(&mut o, "win rate vs baseline", wr(a), wr(b));
    let inc = |s: &Summary| {
        s.judge
            .as_ref()
            .map(|j| {
                format!(
                    "{}/{}/{} ({} inc.)",
                    j.wins, j.ties, j.losses, j.inconsistent
                )
            })
            .unwrap_or("-".into())
    };
    row(&mut o, "win/tie/loss", inc(a), inc(b));
    let acc = |s: &Summary| {
        s.accuracy
            .as_ref()
            .map(|x| format!("{:.3} (n={})", x.moa, x.n))
            .unwrap_or("-".into())
    };
    row(&mut o, "exact match (MoA)", acc(a), acc(b));
    row(
        &mut o,
        "latency p50 / p95 (ms)",
        format!(
            "{} / {}",
            ms(a.latency_ms.moa_p50),
            ms(a.latency_ms.moa_p95)
        ),
        format!(
            "{} / {}",
            ms(b.latency_ms.moa_p50),
            ms(b.latency_ms.moa_p95)
        ),
    );
    row(
        &mut o,
        "tokens per prompt",
        format!("{:.0}", a.tokens_per_prompt.moa),
        format!("{:.0}", b.tokens_per_prompt.moa),
    );
    row(
        &mut o,
        "cost per prompt",
        fmt_cost(Some(a.cost_per_prompt_usd.moa)),
        fmt_cost(Some(b.cost_per_prompt_usd.moa)),
    );
    let agr = |s: &Summary| {
        s.agreement
            .first()
            .map(|x| format!("{:.2} ({})", x.spread.median, x.method))
            .unwrap_or("-".into())
    };
    row(&mut o, "agreement, first step (med)", agr(a), agr(b));
    let _ = writeln!(
        o,
        "\nFigures are over the {common} prompts both evaluations ran."
    );
    o
}
