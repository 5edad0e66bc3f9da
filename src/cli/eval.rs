//! `moa eval`: a preset against a single-model baseline over a prompt set; `--compare A B` puts two
//! evaluations side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CliError, setup};
use crate::engine::preset::{self, AgentSpec, Preset, Step};
use crate::session::eval::{self, Item, Plan};
use crate::session::report;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Preset name or path.
    #[arg(long, required_unless_present = "compare")]
    pub preset: Option<String>,
    /// JSONL prompts: `prompt` (or `instruction`, or `turns`), optional `reference`.
    #[arg(long, value_name = "FILE", required_unless_present = "compare")]
    pub prompts: Option<PathBuf>,
    /// What to beat: a single model (PROVIDER/MODEL; default: the preset's baseline), or the
    /// same budget on one model: `self-moa:MODEL[:N]` (N samples aggregated by the model itself)
    /// or `best-of:MODEL[:N]` (N samples, the judge picks one); N defaults to the preset's
    /// proposer calls.
    #[arg(long, value_name = "MODEL|self-moa:MODEL[:N]|best-of:MODEL[:N]")]
    pub baseline: Option<String>,
    /// No baseline at all (then no judge either).
    #[arg(long, conflicts_with = "baseline")]
    pub no_baseline: bool,
    /// Judge model for MoA-vs-baseline verdicts; default: `judge_model` in the config, else none.
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// Prompts run at once (each runs its whole pipeline; provider limits still apply).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Results folder; default: one per preset, prompts file, baseline and judge under the data
    /// folder, so that the same command resumes.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the summary as JSON (moa.eval/1) instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Send every call, even one whose complete answer is in the call cache (the cache is under
    /// the data folder, shared by moa eval and moa tune; identical calls are answered from it).
    #[arg(long)]
    pub no_cache: bool,
    /// Compare two evaluation folders instead of running one.
    #[arg(long, num_args = 2, value_names = ["DIR_A", "DIR_B"], conflicts_with_all = ["preset", "prompts"])]
    pub compare: Option<Vec<PathBuf>>,
}

pub fn main(config_path: Option<&Path>, args: EvalArgs) -> Result<u8, CliError> {
    if let Some(dirs) = &args.compare {
        return compare(&dirs[0], &dirs[1], args.json);
    }
    let s = setup(config_path)?;
    let preset_name = args.preset.clone().unwrap_or_default();
    let mut preset = preset::load(&preset_name, &s.config.folders.presets_dir(), &s.templates)?;
    let prompts_path = args.prompts.clone().unwrap_or_default();
    let (mut items, warnings) =
        eval::read_prompts(&prompts_path).map_err(|e| CliError::usage(e.to_string()))?;
    for w in &warnings {
        crate::safe_eprintln!("moa: {w}");
    }
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no usable prompts (one JSON object per line with \"prompt\")",
            prompts_path.display()
        )));
    }
    let (baseline_kind, baseline_model) = match &args.baseline {
        Some(spec) => {
            let (k, m) = eval::BaselineKind::parse(spec, eval::proposer_calls(&preset))
                .map_err(CliError::usage)?;
            (k, Some(m))
        }
        None => (eval::BaselineKind::Single, None),
    };
    let baseline = if args.no_baseline {
        None
    } else {
        match &baseline_model {
            // The preset's baseline settings (temperature, max_tokens) with another model; else the
            // aggregator's max_tokens, so both sides may write answers of the same length.
            Some(m) => Some(match &preset.baseline {
                Some(b) => AgentSpec {
                    model: m.clone(),
                    ..b.clone()
                },
                None => AgentSpec {
                    max_tokens: last_agent(&preset).and_then(|a| a.max_tokens),
                    ..AgentSpec::model(m)
                },
            }),
            None => preset.baseline.clone(),
        }
    };
    let judge = if baseline.is_some() {
        args.judge.clone().or_else(|| s.config.judge_model.clone())
    } else {
        if args.judge.is_some() {
            return Err(CliError::usage(
                "--judge compares MoA with a baseline: give --baseline MODEL or use a preset with one",
            ));
        }
        None
    };
    preset.baseline = baseline.clone();
    super::run::preflight(&s.config, &preset, true)?;
    if let Some(j) = &judge {
        let jp = Preset::single("judge", AgentSpec::model(j));
        super::run::preflight(&s.config, &jp, false)?;
        super::run::fetch_local_models(&s.config, &jp, false)?;
    }
    super::run::fetch_local_models(&s.config, &preset, true)?;
    preset.baseline = None;
    let out = args.out.clone().unwrap_or_else(|| {
        eval::default_out(
            &s.config.folders.data_dir.join("evals"),
            &preset,
            &prompts_path,
            baseline
                .as_ref()
                .map(|b| baseline_kind.label(&b.model))
                .as_deref(),
            judge.as_deref(),
        )
    });
    let plan = Plan {
        engine: s.engine_with_cache(!args.no_cache),
        preset: Arc::new(preset),
        baseline,
        baseline_kind,
        judge,
        concurrency: args.concurrency.max(1),
        out: out.clone(),
        prompts: std::fs::canonicalize(&prompts_path).unwrap_or(prompts_path.clone()),
    };

    match eval::repair_results(&out) {
        Ok(Some(r)) => eprintln!(
            "moa: {} ended in a line cut off by an interrupted run ({} bytes); it was dropped and its prompt runs again",
            out.join(eval::RESULTS).display(),
            r.dropped_bytes
        ),
        Ok(None) => {}
        Err(e) => return Err(CliError::failed(e.to_string())),
    }
    let batch = super::Batch::new(items.len())?;
    let (bar, cancel) = (&batch.bar, batch.cancel.clone());
    let outcome = batch.rt.block_on(async {
        eval::run(&plan, &items, cancel.clone(), |p| {
            bar.set_position(p.done as u64);
            let r = p.result;
            let what = match (&r.error, &r.judgement) {
                (Some(e), _) => format!("error: {e}"),
                (None, Some(j)) => format!(
                    "judge: {}{}",
                    j.outcome.as_str(),
                    if j.inconsistent {
                        " (inconsistent)"
                    } else {
                        ""
                    }
                ),
                (None, None) => "done".into(),
            };
            bar.println(format!("  line {:>4}: {what}", r.line));
        })
        .await
    });
    let cancel = batch.finish();
    let skipped = outcome.map_err(|e| CliError::failed(e.to_string()))?;
    let (results, damaged) = eval::load_results(&out);
    if damaged > 0 {
        crate::safe_eprintln!(
            "moa: {damaged} cut-off line(s) in {} were ignored (those prompts ran again)",
            out.join(eval::RESULTS).display()
        );
    }
    let meta = eval::load_meta(&out).map_err(|e| CliError::failed(e.to_string()))?;
    let mut summary = eval::summarize(&meta, &items, &results, skipped, &out);
    summary.cache = plan.engine.registry.cache().map(|c| c.stats());
    super::conclude(
        &summary,
        &out,
        super::Reports {
            text: report::text(&summary),
            markdown: report::markdown(&summary),
            html: crate::session::html::eval::report(&summary, &items, &results),
        },
        args.json,
        cancel.is_cancelled(),
        (summary.done, summary.prompts, summary.errors),
    )
}

fn last_agent(p: &Preset) -> Option<&AgentSpec> {
    p.steps.iter().rev().find_map(|s| match s {
        Step::Aggregate { agent, .. }
        | Step::SelfMoaSeq { agent, .. }
        | Step::Vote { agent, .. } => Some(agent),
        Step::Propose { agents, .. } => agents.first(),
        _ => None,
    })
}

fn compare(a: &Path, b: &Path, json: bool) -> Result<u8, CliError> {
    let load = |d: &Path| -> Result<_, CliError> {
        let meta = eval::load_meta(d).map_err(|e| CliError::usage(e.to_string()))?;
        let (results, _) = eval::load_results(d);
        Ok((meta, results))
    };
    let (ma, ra) = load(a)?;
    let (mb, rb) = load(b)?;
    // Only prompts both ran, so that neither side looks better for having run easier prompts.
    let common: Vec<Item> = ra
        .values()
        .filter(|r| rb.contains_key(&r.key))
        .map(|r| Item {
            line: r.line,
            key: r.key.clone(),
            id: r.id.clone(),
            turns: r.turns.clone(),
            reference: r.reference.clone(),
            category: None,
        })
        .collect();
    if common.is_empty() {
        return Err(CliError::usage(format!(
            "{} and {} have no prompt in common",
            a.display(),
            b.display()
        )));
    }
    let sa = eval::summarize(&ma, &common, &ra, 0, a);
    let sb = eval::summarize(&mb, &common, &rb, 0, b);
    if json {
        crate::safe_println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"a": sa, "b": sb, "common": common.len()})
            )
            .unwrap_or_default()
        );
    } else {
        crate::safe_print!("{}", report::compare(&sa, &sb, common.len()));
    }
    Ok(0)
}
