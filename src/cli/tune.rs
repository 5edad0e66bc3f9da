//! `moa tune`: aggregator variants on frozen proposer answers, judged; resumable like `moa eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CliError, setup};
use crate::engine::preset::{self, AgentSpec, Preset};
use crate::session::eval;
use crate::tune::{self, Against, Plan, report, variants};

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// Preset name or path; its last step must be an aggregation.
    #[arg(long)]
    pub preset: String,
    /// JSONL prompts, as `moa eval` reads them (`prompt`, `instruction` or `turns`; `reference`).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// The variants: `[[variant]]` tables with `name` and any of prompt, model, temperature,
    /// max_tokens, top_p (the rest comes from the preset's last aggregation).
    #[arg(long, value_name = "VARIANTS.toml")]
    pub variants: PathBuf,
    /// Judge model for pairwise verdicts (both orders); default: `judge_model` in the config.
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// Judge every variant against this one (default: the first), or `round-robin` for all pairs.
    #[arg(long, value_name = "NAME|round-robin")]
    pub against: Option<String>,
    /// Also run each variant without each proposer's answer, judged against the full variant.
    #[arg(long)]
    pub leave_one_out: bool,
    /// Prompts worked on at once (provider limits still apply).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Results folder; default: one per preset and prompts file under the data folder, so that the
    /// same command resumes and new variants reuse the frozen answers.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the summary as JSON (moa.tune/1) instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Send every call, even one whose complete answer is in the call cache (the cache is under
    /// the data folder, shared by moa eval and moa tune; identical calls are answered from it).
    #[arg(long)]
    pub no_cache: bool,
}

pub fn main(config_path: Option<&Path>, args: TuneArgs) -> Result<u8, CliError> {
    let s = setup(config_path)?;
    let mut preset = preset::load(&args.preset, &s.config.folders.presets_dir(), &s.templates)?;
    preset.baseline = None;
    let text = std::fs::read_to_string(&args.variants).map_err(|e| {
        CliError::usage(format!(
            "cannot read the variants file {}: {e}",
            args.variants.display()
        ))
    })?;
    let variants = variants::parse(&args.variants, &text, &preset, &s.templates)?;
    let against = match args.against.as_deref() {
        None => Against::One(0),
        Some("round-robin") => Against::RoundRobin,
        Some(name) => Against::One(variants.iter().position(|v| v.name == name).ok_or_else(
            || {
                CliError::usage(format!(
                    "--against {name:?} is not a variant in {}; variants: {}, or round-robin",
                    args.variants.display(),
                    variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            },
        )?),
    };
    let judge = args.judge.clone().or_else(|| s.config.judge_model.clone());
    if args.leave_one_out && judge.is_none() {
        return Err(CliError::usage(
            "--leave-one-out judges each variant against itself without one answer: give --judge MODEL (or judge_model in config.toml)",
        ));
    }
    let (mut items, warnings) =
        eval::read_prompts(&args.prompts).map_err(|e| CliError::usage(e.to_string()))?;
    for w in &warnings {
        crate::safe_eprintln!("moa: {w}");
    }
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no usable prompts (one JSON object per line with \"prompt\")",
            args.prompts.display()
        )));
    }

    // Every model that may be called: the pipeline, each variant's aggregator, the judge.
    let mut check = preset.clone();
    check.steps.extend(variants.iter().map(tune::Variant::step));
    super::run::preflight(&s.config, &check, false)?;
    super::run::fetch_local_models(&s.config, &check, false)?;
    if let Some(j) = &judge {
        let jp = Preset::single("judge", AgentSpec::model(j));
        super::run::preflight(&s.config, &jp, false)?;
        super::run::fetch_local_models(&s.config, &jp, false)?;
    }

    let out = args.out.clone().unwrap_or_else(|| {
        tune::default_out(
            &s.config.folders.data_dir.join("tunes"),
            &preset,
            &args.prompts,
        )
    });
    let plan = Plan {
        engine: s.engine_with_cache(!args.no_cache),
        preset: Arc::new(preset),
        variants,
        judge,
        against,
        leave_one_out: args.leave_one_out,
        concurrency: args.concurrency.max(1),
        out: out.clone(),
        prompts: std::fs::canonicalize(&args.prompts).unwrap_or(args.prompts.clone()),
    };
    let batch = super::Batch::new(items.len())?;
    let (bar, cancel) = (&batch.bar, batch.cancel.clone());
    let outcome = batch.rt.block_on(async {
        tune::run(&plan, &items, cancel.clone(), |p| {
            bar.inc(1);
            let what = match (&p.error, p.new_calls) {
                (Some(e), _) => format!("error: {}", crate::text::sanitize::err(e)),
                (None, 0) => "already done".into(),
                (None, n) => format!("{n} requests"),
            };
            bar.println(format!("  line {:>4}: {what}", p.line));
        })
        .await
    });
    let cancel = batch.finish();
    let skipped = outcome.map_err(|e| CliError::failed(e.to_string()))?;
    let results = tune::load(&out);
    if results.damaged > 0 {
        crate::safe_eprintln!(
            "moa: {} cut-off line(s) in {} were ignored (their work ran again)",
            results.damaged,
            out.display()
        );
    }
    let summary = report::summarize(&plan, &items, &results, skipped);
    super::conclude(
        &summary,
        &out,
        super::Reports {
            text: report::text(&summary),
            markdown: report::markdown(&summary),
            html: tune::html::report(
                &summary,
                &tune::html::Inputs {
                    variants: &plan.variants,
                    judge: plan.judge.as_deref(),
                    against: &plan.against,
                    items: &items,
                    results: &results,
                },
            ),
        },
        args.json,
        cancel.is_cancelled(),
        (summary.done, summary.prompts, summary.errors),
    )
}
