//! The tuning summary (`moa.tune/1`, CONTRACT.md) computed from a folder's results, and its
//! reports: text for the terminal (with bars) and Markdown (`report.md`). Pure: the CLI prints.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Against, Plan, Results, TUNE_SCHEMA, Variant};
use crate::engine::record::CallRecord;
pub use crate::provider::cache::CacheStats;
use crate::session::compare::fmt_cost;
use crate::session::eval::Item;
use crate::session::exact;
use crate::session::judge::{Judgement, Outcome};
use crate::session::stats::{self, Bout, bar};

/// Resamples for the win-rate intervals and for the ranking's (which refits every time).
const BOOTSTRAP: usize = 2000;
const BOOTSTRAP_RANKING: usize = 200;
/// "moatune" in ASCII: any fixed seed would do; a fixed one makes reports reproducible.
const SEED: u64 = 0x006d_6f61_7475_6e65;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Judged {
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub inconsistent: usize,
    /// Pairs the judge could not decide (it failed or gave no verdict); not in the rate.
    pub errors: usize,
    /// Ties count half; null when the judge decided no pair.
    pub win_rate: Option<f64>,
    /// Paired bootstrap over prompts; null when the judge decided no pair.
    pub ci95: Option<[f64; 2]>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VariantSummary {
    pub name: String,
    /// Its prompt (template name or `inline`), model and temperature.
    pub setup: String,
    /// Null for the variant the others are judged against, and without a judge.
    pub judged: Option<Judged>,
    /// Exact-match accuracy over the prompts with a reference.
    pub accuracy: Option<f64>,
    /// Mean answer length in characters (judges favour long answers: read it beside the win rate).
    pub avg_length: Option<f64>,
    pub latency_ms: Latency,
    /// Tokens in + out of the aggregation, mean per prompt.
    pub tokens: f64,
    /// Cost of the aggregation, mean per prompt (null prices count as 0; see `cost_incomplete`).
    pub cost_usd: f64,
    /// Prompts on which this variant gave no answer.
    pub errors: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rank {
    pub name: String,
    /// Bradley–Terry log-strength, centred on 0 over the variants.
    pub score: f64,
    pub ci95: [f64; 2],
}

/// What leaving one proposer's answer out did to a variant: the full variant's outcomes against
/// itself without that answer. Wins mean the answer helped.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LooEffect {
    pub variant: String,
    /// The proposer's slot in its step (0-based, as in run records); `step` is that step.
    pub slot: usize,
    pub step: usize,
    pub model: String,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Null when the judge decided none of these pairs.
    pub win_rate: Option<f64>,
    /// Pairs the judge could not decide.
    pub errors: usize,
}

/// The proposers' share, paid once per prompt whatever the number of variants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Frozen {
    pub tokens: f64,
    pub cost_usd: f64,
    pub latency_ms: Latency,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub schema: String,
    pub preset: String,
    pub prompts: usize,
    /// Prompts on which every variant answered.
    pub done: usize,
    pub errors: usize,
    /// Prompts that needed no request in this run.
    pub skipped_done: usize,
    pub judge: Option<String>,
    /// The variant the others are judged against, or `round-robin`.
    pub against: Option<String>,
    pub variants: Vec<VariantSummary>,
    pub ranking: Vec<Rank>,
    pub leave_one_out: Option<Vec<LooEffect>>,
    pub frozen: Frozen,
    /// The call cache in this run (all zero with --no-cache).
    pub cache: CacheStats,
    /// True when some model had no price: costs are then lower bounds.
    pub cost_incomplete: bool,
    pub out: PathBuf,
}

fn score(o: Outcome) -> Option<f64> {
    match o {
        Outcome::Win => Some(1.0),
        Outcome::Tie => Some(0.5),
        Outcome::Loss => Some(0.0),
        Outcome::Error => None,
    }
}

fn flip(o: Outcome) -> Outcome {
    match o {
        Outcome::Win => Outcome::Loss,
        Outcome::Loss => Outcome::Win,
        x => x,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Counts and a paired-bootstrap interval from per-prompt outcomes.
fn judged(per_prompt: &[Vec<(Outcome, bool)>], seed: u64) -> Judged {
    let all: Vec<&(Outcome, bool)> = per_prompt.iter().flatten().collect();
    let count = |o: Outcome| all.iter().filter(|(x, _)| *x == o).count();
    let (wins, ties, losses) = (
        count(Outcome::Win),
        count(Outcome::Tie),
        count(Outcome::Loss),
    );
    let n = wins + ties + losses;
    let win_rate = (n > 0).then(|| round3((wins as f64 + ties as f64 / 2.0) / n as f64));
    let units: Vec<Vec<f64>> = per_prompt
        .iter()
        .map(|v| v.iter().filter_map(|(o, _)| score(*o)).collect())
        .collect();
    let ci = stats::paired_bootstrap95(&units, BOOTSTRAP, seed).map(|c| [round3(c.0), round3(c.1)]);
    Judged {
        wins,
        ties,
        losses,
        inconsistent: all.iter().filter(|(_, inc)| *inc).count(),
        errors: count(Outcome::Error),
        win_rate,
        ci95: ci,
    }
}

pub fn summarize(plan: &Plan, items: &[Item], r: &Results, skipped_done: usize) -> Summary {
    let mut s = summarize_parts(
        &plan.preset.name,
        &plan.variants,
        plan.judge.as_deref(),
        &plan.against,
        plan.leave_one_out,
        items,
        r,
        skipped_done,
        &plan.out,
    );
    if let Some(c) = plan.engine.registry.cache() {
        s.cache = c.stats();
    }
    s
}

#[allow(clippy::too_many_arguments)]
pub fn summarize_parts(
    preset: &str,
    variants: &[Variant],
    judge: Option<&str>,
    against: &Against,
    leave_one_out: bool,
    items: &[Item],
    r: &Results,
    skipped_done: usize,
    out: &Path,
) -> Summary {
    let frozen: Vec<&super::Frozen> = items
        .iter()
        .filter_map(|i| r.frozen.get(&i.key))
        .filter(|f| f.error.is_none())
        .collect();
    let tried = items
        .iter()
        .filter(|i| r.frozen.contains_key(&i.key))
        .count();
    let answer = |f: &super::Frozen, v: &Variant| r.answer(&f.key, v, None);
    let done = frozen
        .iter()
        .filter(|f| variants.iter().all(|v| answer(f, v).is_some()))
        .count();
    let mut cost_incomplete = false;

    // Judged pairs: per variant, per prompt, its outcomes (flipped when it was shown second).
    let pairs = judge
        .map(|_| against.pairs(variants.len()))
        .unwrap_or_default();
    let judgement = |f: &super::Frozen, a: usize, b: usize| -> Option<&Judgement> {
        r.judged.get(&(
            f.key.clone(),
            variants[a].fingerprint.clone(),
            variants[b].fingerprint.clone(),
            judge?.to_string(),
        ))
    };
    let mut per_variant: Vec<Vec<Vec<(Outcome, bool)>>> =
        vec![vec![Vec::new(); frozen.len()]; variants.len()];
    let mut bouts_per_prompt: Vec<Vec<Bout>> = vec![Vec::new(); frozen.len()];
    for (k, f) in frozen.iter().enumerate() {
        for &(a, b) in &pairs {
            let Some(j) = judgement(f, a, b) else {
                continue;
            };
            per_variant[a][k].push((j.outcome, j.inconsistent));
            per_variant[b][k].push((flip(j.outcome), j.inconsistent));
            if let Some(s) = score(j.outcome) {
                bouts_per_prompt[k].push(Bout { a, b, score_a: s });
            }
        }
    }

    let summaries: Vec<VariantSummary> = variants
        .iter()
        .enumerate()
        .map(|(vi, v)| {
            let calls: Vec<&CallRecord> = frozen.iter().filter_map(|f| answer(f, v)).collect();
            cost_incomplete |= calls.iter().any(|c| c.cost_usd.is_none() && c.tokens() > 0);
            let lat: Vec<f64> = calls.iter().map(|c| c.latency_ms as f64).collect();
            let lens: Vec<f64> = calls
                .iter()
                .map(|c| c.text.chars().count() as f64)
                .collect();
            let checked: Vec<bool> = frozen
                .iter()
                .filter_map(|f| {
                    Some(exact::check(&answer(f, v)?.text, f.reference.as_ref()?).correct)
                })
                .collect();
            let n = calls.len().max(1) as f64;
            let is_anchor = matches!(against, Against::One(x) if *x == vi);
            VariantSummary {
                name: v.name.clone(),
                setup: v.describe(),
                judged: (judge.is_some() && !is_anchor && variants.len() > 1)
                    .then(|| judged(&per_variant[vi], SEED ^ vi as u64)),
                accuracy: (!checked.is_empty()).then(|| {
                    round3(checked.iter().filter(|x| **x).count() as f64 / checked.len() as f64)
                }),
                avg_length: stats::mean(&lens).map(f64::round),
                latency_ms: Latency {
                    p50: stats::percentile(&lat, 0.5).map(|x| x as u64),
                    p95: stats::percentile(&lat, 0.95).map(|x| x as u64),
                },
                tokens: (calls.iter().map(|c| c.tokens() as f64).sum::<f64>() / n).round(),
                cost_usd: calls.iter().filter_map(|c| c.cost_usd).sum::<f64>() / n,
                errors: frozen.len() - calls.len() + (tried - frozen.len()),
            }
        })
        .collect();

    let ranking = if judge.is_some() && variants.len() > 1 {
        ranking(variants, &bouts_per_prompt)
    } else {
        Vec::new()
    };

    let leave_one_out = (leave_one_out && judge.is_some()).then(|| {
        let mut out: BTreeMap<(usize, [usize; 2]), (String, Vec<Outcome>)> = BTreeMap::new();
        for (vi, v) in variants.iter().enumerate() {
            for f in &frozen {
                for a in &f.answers {
                    let without = [a.step, a.slot];
                    let e = out
                        .entry((vi, without))
                        .or_insert_with(|| (a.model.clone(), Vec::new()));
                    if let Some(j) = r.loo_judged.get(&(
                        f.key.clone(),
                        v.fingerprint.clone(),
                        without,
                        judge.unwrap_or_default().to_string(),
                    )) {
                        e.1.push(j.outcome);
                    }
                }
            }
        }
        out.into_iter()
            .map(|((vi, [step, slot]), (model, os))| {
                let c = |o: Outcome| os.iter().filter(|x| **x == o).count();
                let (w, t, l) = (c(Outcome::Win), c(Outcome::Tie), c(Outcome::Loss));
                let n = w + t + l;
                LooEffect {
                    variant: variants[vi].name.clone(),
                    slot,
                    step,
                    model,
                    wins: w,
                    ties: t,
                    losses: l,
                    win_rate: (n > 0).then(|| round3((w as f64 + t as f64 / 2.0) / n as f64)),
                    errors: c(Outcome::Error),
                }
            })
            .collect()
    });

    let runs: Vec<&crate::engine::record::RunRecord> = frozen.iter().map(|f| &f.run).collect();
    cost_incomplete |= runs.iter().any(|r| r.usage.cost_incomplete);
    let n = runs.len().max(1) as f64;
    let wall: Vec<f64> = runs.iter().map(|r| r.wall_ms as f64).collect();
    Summary {
        schema: TUNE_SCHEMA.into(),
        preset: preset.to_string(),
        prompts: items.len(),
        done,
        errors: tried - done,
        skipped_done,
        judge: judge.map(str::to_string),
        against: judge.map(|_| match against {
            Against::One(x) => variants[*x].name.clone(),
            Against::RoundRobin => "round-robin".into(),
        }),
        variants: summaries,
        ranking,
        leave_one_out,
        frozen: Frozen {
            tokens: (runs.iter().map(|r| r.usage.tokens() as f64).sum::<f64>() / n).round(),
            cost_usd: runs.iter().map(|r| r.usage.cost_usd).sum::<f64>() / n,
            latency_ms: Latency {
                p50: stats::percentile(&wall, 0.5).map(|x| x as u64),
                p95: stats::percentile(&wall, 0.95).map(|x| x as u64),
            },
        },
        cache: CacheStats::default(),
        cost_incomplete,
        out: out.to_path_buf(),
    }
}

/// Bradley–Terry over all judged pairs, with intervals from refitting on prompts resampled with
/// replacement. Best first.
fn ranking(variants: &[Variant], bouts_per_prompt: &[Vec<Bout>]) -> Vec<Rank> {
    use rand::{RngExt, SeedableRng};
    let all: Vec<Bout> = bouts_per_prompt.iter().flatten().copied().collect();
    if all.is_empty() {
        return Vec::new();
    }
    let fit = stats::bradley_terry(variants.len(), &all);
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let n = bouts_per_prompt.len();
    for _ in 0..BOOTSTRAP_RANKING {
        let resample: Vec<Bout> = (0..n)
            .flat_map(|_| bouts_per_prompt[rng.random_range(0..n)].iter().copied())
            .collect();
        for (i, s) in stats::bradley_terry(variants.len(), &resample)
            .into_iter()
            .enumerate()
        {
            samples[i].push(s);
        }
    }
    let mut ranks: Vec<Rank> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| Rank {
            name: v.name.clone(),
            score: round3(fit[i]),
            ci95: [
                round3(stats::percentile(&samples[i], 0.025).unwrap_or(fit[i])),
                round3(stats::percentile(&samples[i], 0.975).unwrap_or(fit[i])),
            ],
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranks
}

const BAR: usize = 20;

fn ms(x: Option<u64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The report for a terminal: a table per variant with win-rate bars, the ranking, and the
/// leave-one-out effects.
pub fn text(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "moa tune: {} · {} variants · {} prompts · {} done, {} errors{}",
        s.preset,
        s.variants.len(),
        s.prompts,
        s.done,
        s.errors,
        if s.skipped_done > 0 {
            format!(" ({} needed no request)", s.skipped_done)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "Proposers (frozen, once per prompt): {} tok, {}, p50 {} ms per prompt",
        s.frozen.tokens,
        fmt_cost(Some(s.frozen.cost_usd)),
        ms(s.frozen.latency_ms.p50)
    );
    let width = s
        .variants
        .iter()
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(7);
    match (&s.judge, &s.against) {
        (Some(j), Some(a)) => {
            let _ = writeln!(
                o,
                "\nJudge {j}, each pair in both orders, against {a} (ties count half):"
            );
        }
        _ => {
            let _ = writeln!(o, "\nNo judge (--judge MODEL compares the variants):");
        }
    }
    let _ = writeln!(
        o,
        "  {:<width$}  {:<BAR$}  win rate  95% CI       W/T/L (incons.)   length   acc.   p50 ms   tokens  cost",
        "variant", ""
    );
    for v in &s.variants {
        let (bar_s, rate, ci, wtl) = match &v.judged {
            Some(j) => (
                j.win_rate.map(|w| bar(w, 1.0, BAR)).unwrap_or_default(),
                j.win_rate
                    .map(|w| format!("{w:.3}"))
                    .unwrap_or_else(|| "-".into()),
                j.ci95
                    .map(|c| format!("{:.2}–{:.2}", c[0], c[1]))
                    .unwrap_or_default(),
                format!("{}/{}/{} ({})", j.wins, j.ties, j.losses, j.inconsistent),
            ),
            None if s.judge.is_some() => {
                (String::new(), "anchor".into(), String::new(), String::new())
            }
            None => (String::new(), "-".into(), String::new(), String::new()),
        };
        let _ = writeln!(
            o,
            "  {:<width$}  {bar_s:<BAR$}  {rate:<8}  {ci:<11}  {wtl:<16}  {:>6}  {:>5}  {:>7}  {:>7}  {}",
            v.name,
            v.avg_length
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            v.accuracy
                .map(|a| format!("{a:.2}"))
                .unwrap_or_else(|| "-".into()),
            ms(v.latency_ms.p50),
            v.tokens,
            fmt_cost(Some(v.cost_usd)),
        );
    }
    for v in &s.variants {
        let _ = writeln!(
            o,
            "  {:<width$}  {}{}",
            v.name,
            v.setup,
            if v.errors > 0 {
                format!(" · {} without an answer", v.errors)
            } else {
                String::new()
            }
        );
    }
    let undecided: usize = s
        .variants
        .iter()
        .filter_map(|v| v.judged.as_ref().map(|j| j.errors))
        .sum::<usize>()
        + s.leave_one_out
            .iter()
            .flatten()
            .map(|e| e.errors)
            .sum::<usize>();
    if undecided > 0 {
        let _ = writeln!(
            o,
            "  The judge decided no verdict on {undecided} comparisons (a failed call, or an answer without [[A]], [[B]] or [[C]]; see results.jsonl): \
             those count nowhere. A small judge model often cannot follow the format: try a stronger --judge."
        );
    }
    if !s.ranking.is_empty() {
        let _ = writeln!(
            o,
            "\nRanking (Bradley–Terry over all judged pairs, 95% bootstrap CI):"
        );
        for (i, r) in s.ranking.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {}. {:<width$}  {:+.2}  ({:+.2} to {:+.2})",
                i + 1,
                r.name,
                r.score,
                r.ci95[0],
                r.ci95[1]
            );
        }
    }
    if let Some(loo) = &s.leave_one_out {
        let _ = writeln!(
            o,
            "\nLeave-one-out: the variant against itself without one proposer's answer (a win: that answer helped):"
        );
        for e in loo {
            let _ = writeln!(
                o,
                "  {:<width$}  #{} {:<28} {:<BAR$} {:<5}  W/T/L {}/{}/{}{}",
                e.variant,
                e.slot + 1,
                e.model,
                e.win_rate.map(|w| bar(w, 1.0, BAR)).unwrap_or_default(),
                e.win_rate
                    .map(|w| format!("{w:.3}"))
                    .unwrap_or_else(|| "-".into()),
                e.wins,
                e.ties,
                e.losses,
                if e.errors > 0 {
                    format!(" · {} undecided", e.errors)
                } else {
                    String::new()
                }
            );
        }
    }
    if s.cost_incomplete {
        let _ = writeln!(o, "\nSome models have no price: costs are lower bounds.");
    }
    if s.cache.hits > 0 {
        let _ = writeln!(
            o,
            "\nCall cache: {} answers reused, {} calls made (--no-cache makes every call).",
            s.cache.hits, s.cache.misses
        );
    }
    let _ = writeln!(
        o,
        "\nResults: {} (results.jsonl, frozen.jsonl, summary.json, report.md, report.html)",
        s.out.display()
    );
    o
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# moa tune: {}\n", md_cell(&s.preset));
    let _ = writeln!(
        o,
        "{} prompts · {} done · {} errors · judge {} · against {}\n",
        s.prompts,
        s.done,
        s.errors,
        s.judge
            .as_deref()
            .map(md_cell)
            .unwrap_or_else(|| "none".into()),
        s.against
            .as_deref()
            .map(md_cell)
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        o,
        "| variant | setup | win rate | 95% CI | W | T | L | inconsistent | avg length | accuracy | p50 ms | p95 ms | tokens/prompt | cost/prompt |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for v in &s.variants {
        let j = v.judged.as_ref();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            md_cell(&v.name),
            md_cell(&v.setup),
            j.and_then(|j| j.win_rate)
                .map(|w| format!("{w:.3}"))
                .unwrap_or_else(|| "-".into()),
            j.and_then(|j| j.ci95)
                .map(|c| format!("{:.3}–{:.3}", c[0], c[1]))
                .unwrap_or_default(),
            j.map(|j| j.wins.to_string()).unwrap_or_default(),
            j.map(|j| j.ties.to_string()).unwrap_or_default(),
            j.map(|j| j.losses.to_string()).unwrap_or_default(),
            j.map(|j| j.inconsistent.to_string()).unwrap_or_default(),
            v.avg_length
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            v.accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "-".into()),
            ms(v.latency_ms.p50),
            ms(v.latency_ms.p95),
            v.tokens,
            fmt_cost(Some(v.cost_usd)),
        );
    }
    if !s.ranking.is_empty() {
        let _ = writeln!(
            o,
            "\n## Ranking (Bradley–Terry)\n\n| rank | variant | score | 95% CI |\n|---|---|---|---|"
        );
        for (i, r) in s.ranking.iter().enumerate() {
            let _ = writeln!(
                o,
                "| {} | {} | {:+.3} | {:+.3} to {:+.3} |",
                i + 1,
                md_cell(&r.name),
                r.score,
                r.ci95[0],
                r.ci95[1]
            );
        }
    }
    if let Some(loo) = &s.leave_one_out {
        let _ = writeln!(
            o,
            "\n## Leave-one-out\n\nEach variant judged against itself without one proposer's answer; a win means the answer helped.\n\n| variant | proposer | model | W | T | L | win rate |\n|---|---|---|---|---|---|---|"
        );
        for e in loo {
            let _ = writeln!(
                o,
                "| {} | #{} | {} | {} | {} | {} | {} |",
                md_cell(&e.variant),
                e.slot + 1,
                md_cell(&e.model),
                e.wins,
                e.ties,
                e.losses,
                e.win_rate
                    .map(|w| format!("{w:.3}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    let _ = writeln!(
        o,
        "\nProposers (frozen, once per prompt): {} tokens, {} per prompt, p50 {} ms.",
        s.frozen.tokens,
        fmt_cost(Some(s.frozen.cost_usd)),
        ms(s.frozen.latency_ms.p50)
    );
    o
}
