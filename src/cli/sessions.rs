//! `moa sessions list|show|export|rm|rename|judge`.

use std::path::{Path, PathBuf};

use unicode_width::UnicodeWidthStr;

use super::{CliError, setup};
use crate::config::Config;
use crate::session::compare::{Comparison, compare, fmt_cost, fmt_ratio};
use crate::session::judge::Judgement;
use crate::session::store::Store;
use crate::session::{Session, export};

#[derive(clap::Subcommand, Debug)]
pub enum SessionsCommand {
    /// Every saved session, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A session's conversation and runs (id, id prefix, or part of the name).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// MoA's final answer and the baseline side by side, with latency, tokens, cost and ratios.
        #[arg(long)]
        compare: bool,
        /// Only this run (1 = the first).
        #[arg(long)]
        run: Option<usize>,
    },
    /// Write a session as Markdown (every proposer answer folded under the final one), JSON,
    /// one self-contained HTML page (no scripts; opens offline, prints), or an asciicast v2
    /// recording of a run's replay (`cast`: asciinema's format).
    Export {
        id: String,
        #[arg(long, default_value = "md", value_parser = ["md", "json", "html", "cast"])]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// cast: which run (1 = the first; default the last whole run).
        #[arg(long)]
        run: Option<usize>,
        /// cast: the terminal's size, COLUMNSxROWS.
        #[arg(long, default_value = "120x36", value_parser = parse_size)]
        size: (u16, u16),
        /// cast: play this many times faster than recorded.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Delete a session.
    Rm { id: String },
    /// Give a session another name (its id stays).
    Rename { id: String, name: String },
    /// Ask a judge model whether the MoA answer beats the baseline (both orders); stored in the session.
    Judge {
        id: String,
        /// The judge (PROVIDER/MODEL); default: `judge_model` in the config.
        #[arg(long)]
        model: Option<String>,
        /// Which run (1 = the first); default the last with a baseline.
        #[arg(long)]
        run: Option<usize>,
    },
}

pub fn main(config_path: Option<&Path>, cmd: SessionsCommand) -> Result<u8, CliError> {
    let config = Config::load(config_path)?;
    let store = Store::new(config.folders.sessions_dir());
    let find = |id: &str| {
        store
            .resolve(id)
            .map_err(|e| CliError::usage(e.to_string()))
    };
    match cmd {
        SessionsCommand::List { json } => {
            let (list, bad) = store.list();
            for e in &bad {
                crate::safe_eprintln!("moa: skipped {e}");
            }
            if json {
                // JSON is for scripts: the exact text (JSON escapes C0 controls itself).
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else if list.is_empty() {
                crate::safe_eprintln!("moa: no sessions yet in {}", store.dir.display());
            } else {
                for s in &list {
                    crate::safe_println!(
                        "{:<48} {:<20} {:>3} run(s) {:<16} {}{}",
                        s.id,
                        s.updated.get(..19).unwrap_or(&s.updated).replace('T', " "),
                        s.runs,
                        s.preset.as_deref().unwrap_or("-"),
                        s.name,
                        if s.interrupted { "  [interrupted]" } else { "" }
                    );
                }
            }
            Ok(0)
        }
        SessionsCommand::Show {
            id,
            json,
            compare,
            run,
        } => {
            let s = find(&id)?;
            let runs = pick_runs(&s, run)?;
            if json {
                if compare {
                    let c: Vec<Comparison> =
                        runs.iter().map(|i| self::compare(&s.runs[*i])).collect();
                    println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
                } else {
                    println!("{}", export::json(&s));
                }
                return Ok(0);
            }
            crate::safe_print!("{}", show_text(&s, &runs, compare, term_width()));
            Ok(0)
        }
        SessionsCommand::Export {
            id,
            format,
            out,
            run,
            size,
            speed,
        } => {
            let s = find(&id)?;
            let text = match format.as_str() {
                "json" => export::json(&s),
                "html" => crate::session::html::html(&s),
                "cast" => cast(&s, run, size, speed)?,
                _ => export::markdown(&s),
            };
            match out {
                Some(p) => {
                    crate::session::store::write_atomic(&p, text.as_bytes()).map_err(|e| {
                        CliError::failed(format!("cannot write {}: {e}", p.display()))
                    })?;
                    crate::safe_eprintln!("moa: wrote {}", p.display());
                }
                // Escaped for HTML already, exact for JSON (a cast's escape sequences are inside
                // its JSON strings, escaped): what goes to a file goes as it is.
                None if matches!(format.as_str(), "json" | "html" | "cast") => print!("{text}"),
                None => crate::safe_print!("{text}"),
            }
            Ok(0)
        }
        SessionsCommand::Rm { id } => {
            let s = find(&id)?;
            store
                .remove(&s)
                .map_err(|e| CliError::failed(e.to_string()))?;
            crate::safe_eprintln!("moa: deleted session {} ({})", s.id, s.name);
            Ok(0)
        }
        SessionsCommand::Rename { id, name } => {
            let mut s = find(&id)?;
            if name.trim().is_empty() {
                return Err(CliError::usage("the new name is empty"));
            }
            s.rename(&name);
            store
                .save(&s)
                .map_err(|e| CliError::failed(e.to_string()))?;
            crate::safe_eprintln!("moa: session {} is now {:?}", s.id, s.name);
            Ok(0)
        }
        SessionsCommand::Judge { id, model, run } => judge(config_path, &store, &id, model, run),
    }
}

fn pick_runs(s: &Session, run: Option<usize>) -> Result<Vec<usize>, CliError> {
    match run {
        Some(n) if n >= 1 && n <= s.runs.len() => Ok(vec![n - 1]),
        Some(n) => Err(CliError::usage(format!(
            "session {} has {} run(s); --run {n} is not one of them",
            s.id,
            s.runs.len()
        ))),
        None => Ok((0..s.runs.len()).collect()),
    }
}

fn judge(
    config_path: Option<&Path>,
    store: &Store,
    id: &str,
    model: Option<String>,
    run: Option<usize>,
) -> Result<u8, CliError> {
    let st = setup(config_path)?;
    let model = model
        .or_else(|| st.config.judge_model.clone())
        .ok_or_else(|| {
            CliError::usage(
                "no judge model: pass --model PROVIDER/MODEL or set judge_model in config.toml",
            )
        })?;
    let mut s = store
        .resolve(id)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let idx = match run {
        Some(_) => pick_runs(&s, run)?[0],
        None => s
            .runs
            .iter()
            .rposition(|r| r.record.baseline.is_some())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "session {} has no run with a baseline to compare against",
                    s.id
                ))
            })?,
    };
    let judge_preset = crate::engine::preset::Preset::single(
        "judge",
        crate::engine::preset::AgentSpec::model(&model),
    );
    super::run::preflight(&st.config, &judge_preset, false)?;
    super::run::fetch_local_models(&st.config, &judge_preset, false)?;
    let r = &s.runs[idx].record;
    let question = crate::engine::prompts::last_user(&r.messages).to_string();
    let (moa, base) = match (&r.final_answer, &r.baseline) {
        (Some(f), Some(b)) => (f.text.clone(), b.text.clone()),
        _ => {
            return Err(CliError::failed(format!(
                "run {} has no final answer or no baseline answer to judge",
                idx + 1
            )));
        }
    };
    crate::safe_eprintln!("moa: judging run {} with {model} (both orders)", idx + 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let j = rt.block_on(crate::session::judge::judge(
        &st.engine, &model, &question, &moa, &base,
    ));
    crate::safe_print!("{}", judgement_text(&j));
    s.runs[idx].judgements.push(j.clone());
    s.touch();
    store
        .save(&s)
        .map_err(|e| CliError::failed(e.to_string()))?;
    Ok(if j.outcome == crate::session::judge::Outcome::Error {
        1
    } else {
        0
    })
}

pub fn judgement_text(j: &Judgement) -> String {
    let mut out = format!(
        "judge {}: MoA {}{}\n",
        j.judge_model,
        match j.outcome {
            crate::session::judge::Outcome::Win => "wins",
            crate::session::judge::Outcome::Loss => "loses",
            crate::session::judge::Outcome::Tie => "ties",
            crate::session::judge::Outcome::Error => "could not be judged",
        },
        if j.inconsistent {
            " (inconsistent: the two orders disagreed)"
        } else {
            ""
        }
    );
    for o in &j.orders {
        out.push_str(&format!(
            "  A = {:<8} verdict {}{}\n",
            o.a,
            o.verdict
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "-".into()),
            o.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    out
}

fn term_width() -> usize {
    crossterm::terminal::size()
        .map(|(w, _)| w as usize)
        .unwrap_or(100)
        .clamp(40, 200)
}

/// `moa sessions show` as text, `width` columns wide.
pub fn show_text(s: &Session, runs: &[usize], compare_view: bool, width: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!("{}\n{}  created {}\n", s.name, s.id, s.created));
    for &i in runs {
        let run = &s.runs[i];
        let r = &run.record;
        out.push_str(&format!(
            "\n── run {} · {}{} · {:.1} s · {} tokens · {}\n",
            i + 1,
            r.preset,
            if run.kind == crate::session::RunKind::Reaggregate {
                " (re-aggregated)"
            } else {
                ""
            },
            r.wall_ms as f64 / 1000.0,
            r.usage.tokens(),
            fmt_cost((!r.usage.cost_incomplete).then_some(r.usage.cost_usd))
        ));
        out.push_str(&format!(
            "> {}\n",
            crate::engine::prompts::last_user(&r.messages)
                .lines()
                .collect::<Vec<_>>()
                .join("\n> ")
        ));
        for (k, st) in r.steps.iter().enumerate() {
            let agreement = match (st.agreement, &st.agreement_method) {
                (Some(a), Some(m)) => format!(" agreement {a:.2} ({m})"),
                _ => String::new(),
            };
            let calls: Vec<String> = st
                .calls
                .iter()
                .map(|c| {
                    format!(
                        "{} {:?} {:.1}s",
                        c.model,
                        c.status,
                        c.latency_ms as f64 / 1000.0
                    )
                    .to_lowercase()
                })
                .collect();
            out.push_str(&format!(
                "  step {} {}{agreement}: {}\n",
                k + 1,
                st.op,
                calls.join(", ")
            ));
        }
        if compare_view {
            out.push_str(&compare_text(&compare(run), width));
        } else {
            match &r.final_answer {
                Some(f) => out.push_str(&format!("\n{}\n", f.text.trim_end())),
                None => out.push_str("\n(no final answer)\n"),
            }
        }
        for j in &run.judgements {
            out.push_str(&judgement_text(j));
        }
        for line in crate::session::variants::describe(s, run) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(p) = &s.in_progress {
        out.push_str(&format!(
            "\n── interrupted run ({}): {} step(s) had started; see `moa sessions export`\n",
            p.record.preset,
            p.record.steps.len()
        ));
    }
    out
}

/// Two columns: MoA and the baseline, then their costs and the ratios.
pub fn compare_text(c: &Comparison, width: usize) -> String {
    let Some(b) = &c.baseline else {
        return "\n(this run has no baseline; run with a preset that has one, or add [baseline])\n"
            .into();
    };
    let col = (width.saturating_sub(3)) / 2;
    let left = wrap(&c.moa.text, col);
    let right = wrap(&b.text, col);
    let mut out = String::from("\n");
    let row =
        |l: &str, r: &str| format!("{}{} │ {r}\n", l, " ".repeat(col.saturating_sub(l.width())));
    out.push_str(&row(&c.moa.label, &b.label));
    out.push_str(&format!("{}─┼─{}\n", "─".repeat(col), "─".repeat(col)));
    for k in 0..left.len().max(right.len()) {
        out.push_str(&row(
            left.get(k).map(String::as_str).unwrap_or(""),
            right.get(k).map(String::as_str).unwrap_or(""),
        ));
    }
    out.push_str(&format!("{}─┼─{}\n", "─".repeat(col), "─".repeat(col)));
    out.push_str(&row(&c.moa.summary(), &b.summary()));
    out.push_str(&format!(
        "MoA / baseline: latency {}, tokens {}, cost {}\n",
        fmt_ratio(c.latency_ratio),
        fmt_ratio(c.tokens_ratio),
        fmt_ratio(c.cost_ratio)
    ));
    out
}

/// Wrapped to `width` display columns by the same wrapper as the workbench's panes (indentation
/// and tabs kept, long words cut between graphemes).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    crate::text::wrap_plain(text, width.max(8))
}

/// `--size COLUMNSxROWS`, within what terminals have.
fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: give the size as COLUMNSxROWS, e.g. 120x36 (40x12 to 500x200)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u16, u16) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(40..=500).contains(&w) || !(12..=200).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// The asciicast of a run's replay. The picture is the workbench's own, so it is drawn by the
/// workbench's view (`tui::cast`), the one place this front end reaches into the workbench.
fn cast(s: &Session, run: Option<usize>, size: (u16, u16), speed: f64) -> Result<String, CliError> {
    if !(speed.is_finite() && (0.01..=1000.0).contains(&speed)) {
        return Err(CliError::usage(format!(
            "--speed {speed}: give a factor between 0.01 and 1000"
        )));
    }
    let k = crate::tui::replayed_run(s, run)?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    crate::tui::cast::render(s, k, size.0, size.1, speed, color)
        .map_err(|e| CliError::failed(format!("cannot draw the recording: {e}")))
}
