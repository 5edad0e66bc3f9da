//! `moa`: command-line parsing and dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moa_workbench::cli;

#[derive(Parser)]
#[command(
    name = "moa",
    version,
    about = "Mixture-of-Agents workbench: run, watch and compare MoA pipelines"
)]
struct Args {
    /// Use this config file instead of the config folder's config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Preset name or path (for the workbench).
    #[arg(long)]
    preset: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// One headless run: the final answer streams to stdout, progress to stderr.
    Run(cli::run::RunArgs),
    /// Batch evaluation: a preset against a baseline over a prompt set, judged; resumable.
    Eval(cli::eval::EvalArgs),
    /// Aggregator tuning: variants on frozen proposer answers, judged pairwise; resumable.
    Tune(cli::tune::TuneArgs),
    /// Saved sessions: list, show (--compare for MoA vs baseline), export, rm, rename, judge.
    Sessions {
        #[command(subcommand)]
        command: cli::sessions::SessionsCommand,
    },
    /// List or show presets.
    Presets {
        #[command(subcommand)]
        command: PresetsCommand,
    },
    /// OpenAI-compatible server: every preset is a model `moa/<preset>` (MOA_SERVE_KEY: bearer keys).
    Serve(cli::serve::ServeArgs),
    /// Fetch the embedded models (SmolLM2-135M, all-MiniLM-L6-v2), or one GGUF file from the
    /// Hugging Face hub (hf:OWNER/REPO/FILE.gguf[@REVISION]; HF_ENDPOINT, HF_TOKEN), with a
    /// progress bar.
    Pull {
        /// hf:OWNER/REPO/FILE.gguf: this file instead of the embedded models.
        what: Option<String>,
    },
    /// Configured models and those the providers list at /v1/models.
    Models {
        /// Only this provider.
        provider: Option<String>,
    },
    /// Play a saved run back in the workbench at its recorded pace (no key, no network, no cost).
    Replay {
        /// The session (id, id prefix or part of its name).
        session: String,
        /// Which run (1 = the first); default the session's last whole run.
        #[arg(long)]
        run: Option<usize>,
        /// Play this many times faster (0.5 = half speed); + and - change it while playing.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

#[derive(Subcommand)]
enum PresetsCommand {
    /// Every preset, shipped and your own.
    List,
    /// A preset's file and what it will run.
    Show { name: String },
}

fn main() -> ExitCode {
    moa_workbench::sys::default_sigpipe();
    moa_workbench::keep_freed_buffers();
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Run(run)) => cli::run::main(args.config.as_deref(), run),
        Some(Command::Presets { command }) => match command {
            PresetsCommand::List => cli::presets::list(args.config.as_deref()),
            PresetsCommand::Show { name } => cli::presets::show(args.config.as_deref(), &name),
        },
        Some(Command::Eval(a)) => cli::eval::main(args.config.as_deref(), a),
        Some(Command::Tune(a)) => cli::tune::main(args.config.as_deref(), a),
        Some(Command::Sessions { command }) => cli::sessions::main(args.config.as_deref(), command),
        Some(Command::Models { provider }) => cli::models::main(args.config.as_deref(), provider),
        Some(Command::Serve(a)) => cli::serve::main(args.config.as_deref(), a),
        Some(Command::Pull { what }) => cli::pull(args.config.as_deref(), what.as_deref()),
        Some(Command::Replay {
            session,
            run,
            speed,
        }) => {
            moa_workbench::tui::replay(args.config.as_deref(), &session, run, speed).map_err(|e| {
                cli::CliError {
                    code: e.code(),
                    message: e.to_string(),
                }
            })
        }
        None => moa_workbench::tui::main(args.config.as_deref(), args.preset).map_err(|e| {
            cli::CliError {
                code: e.code(),
                message: e.to_string(),
            }
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("moa: {}", moa_workbench::text::sanitize::err(&e.message));
            ExitCode::from(e.code)
        }
    }
}
