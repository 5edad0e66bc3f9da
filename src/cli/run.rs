//! `moa run`: one headless run. The final answer streams to stdout (or the run record with --json);
//! progress, notices and errors go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CliError, setup};
use crate::config::{Config, ProviderKind};
use crate::engine::preset::{self, Preset};
use crate::engine::record::{CallRecord, CallStatus, RunRecord};
use crate::engine::{RunEvent, RunOptions, Stage};
use crate::fetch;
use crate::provider::local::EMBEDDED_MODEL;
use crate::provider::{Message, Role};
use crate::session::recorder::Recorder;
use crate::session::store::Store;
use crate::session::{RunKind, Session};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Preset name or path to a preset file (default: from config, else local-self-moa).
    #[arg(long)]
    pub preset: Option<String>,
    /// Print the run record as JSON when the run ends, instead of streaming the answer.
    #[arg(long)]
    pub json: bool,
    /// Do not save the run as a session.
    #[arg(long)]
    pub no_save: bool,
    /// Continue this session (id, id prefix or part of its name): its conversation comes first and
    /// the run is added to it.
    #[arg(long, value_name = "ID", conflicts_with = "conversation")]
    pub session: Option<String>,
    /// Skip the preset's baseline model.
    #[arg(long)]
    pub no_baseline: bool,
    /// Earlier turns: a JSON file with [{"role": "user"|"assistant"|"system", "content": "..."}].
    #[arg(long, value_name = "FILE")]
    pub conversation: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// The prompt; read from stdin when absent.
    pub prompt: Option<String>,
}

pub fn main(config: Option<&Path>, args: RunArgs) -> Result<u8, CliError> {
    let s = setup(config)?;
    let preset_name = args
        .preset
        .clone()
        .unwrap_or_else(|| s.config.default_preset.clone());
    let preset = preset::load(&preset_name, &s.config.folders.presets_dir(), &s.templates)?;
    let store = Store::new(s.config.folders.sessions_dir());
    let earlier = match &args.session {
        Some(key) => Some(
            store
                .resolve(key)
                .map_err(|e| CliError::usage(e.to_string()))?,
        ),
        None => None,
    };
    let messages = conversation(&args, earlier.as_ref().map(|s| s.messages.clone()))?;
    preflight(&s.config, &preset, !args.no_baseline)?;
    fetch_local_models(&s.config, &preset, !args.no_baseline)?;
    // The session is written when the run starts, as calls finish, and at the end (unless --no-save).
    let mut recorder = (!args.no_save).then(|| {
        let session = earlier.unwrap_or_else(|| Session::new(&messages));
        let mut r = Recorder::new(store, session);
        r.begin(&preset, &messages, RunKind::Run, Vec::new());
        r
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let mut printer = Printer::new(args.json, args.quiet);
    let printer = rt.block_on(async {
        let opts = RunOptions {
            baseline: !args.no_baseline,
            ..Default::default()
        };
        // Cached when the preset or `[cache] enabled` says so (off by default: a re-run is
        // usually asked for to get new samples).
        let mut h = s
            .engine_for(&preset)
            .start(Arc::new(preset), messages, opts);
        let run_id = h.id.to_string();
        let cancel = h.cancel.clone();
        // Ctrl-C cancels the run (partial answers are kept in the record); a second one quits.
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::safe_eprintln!("\nmoa: cancelling (Ctrl-C again to quit at once)");
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        // The printer runs as a task, not as the block_on future: waking a task is a queue push,
        // waking block_on is a syscall, and there is one wake per streamed token.
        let printing = tokio::spawn(async move {
            while let Some(ev) = h.events.recv().await {
                printer.event(&ev);
                if let Some(r) = recorder.as_mut() {
                    r.event(&ev);
                }
            }
            (printer, recorder)
        });
        // The engine ends a run whose task panicked with a failed record of its own; a JoinError
        // here would mean the runtime dropped it. Either way the run ends as failed (exit 1) and
        // what the recorder saved stays.
        let record = match h.done.await {
            Ok(r) => r,
            Err(e) => RunRecord {
                schema: crate::engine::record::RUN_SCHEMA.into(),
                id: run_id,
                created: String::new(),
                preset: String::new(),
                messages: Vec::new(),
                steps: Vec::new(),
                final_answer: None,
                baseline: None,
                wall_ms: 0,
                usage: Default::default(),
                cancelled: false,
            }
            .into_failed(
                None,
                &format!("internal error: the run ended abnormally ({e})"),
            ),
        };
        #[allow(
            clippy::expect_used,
            reason = "the printer only formats and writes; a panic there is a bug to see"
        )]
        let (printer, recorder) = printing.await.expect("the printer does not panic");
        (printer, record, recorder)
    });
    let (mut printer, record, recorder) = (printer.0, printer.1, printer.2);
    printer.finish(&record);
    if let Some(mut r) = recorder {
        match r.flush() {
            Ok(()) if !args.quiet => {
                crate::safe_eprintln!("moa: saved in session {}", r.session.id)
            }
            Ok(()) => {}
            Err(e) => crate::safe_eprintln!("moa: {e}"),
        }
    }
    Ok(match &record.final_answer {
        Some(f) if f.status == CallStatus::Ok => 0,
        _ => 1,
    })
}

/// The prompt from the argument or stdin, after the earlier turns of --conversation.
fn conversation(args: &RunArgs, earlier: Option<Vec<Message>>) -> Result<Vec<Message>, CliError> {
    let mut messages: Vec<Message> = match &args.conversation {
        _ if earlier.is_some() => earlier.unwrap_or_default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the conversation file {}: {e}",
                    p.display()
                ))
            })?;
            serde_json::from_str(&text).map_err(|e| {
                CliError::usage(format!(
                    "{}:{}:{}: not a conversation ({e}); expected [{{\"role\": \"user\", \"content\": \"...\"}}, ...]",
                    p.display(),
                    e.line(),
                    e.column()
                ))
            })?
        }
        None => Vec::new(),
    };
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None if messages.last().is_some_and(|m| m.role == Role::User) => String::new(),
        None => {
            if std::io::stdin().is_terminal() {
                crate::safe_eprintln!("moa: reading the prompt from stdin (end with Ctrl-D)");
            }
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
            String::from_utf8(bytes).map_err(|e| {
                CliError::usage(format!(
                    "stdin is not UTF-8 text (invalid byte at offset {}); pass a text prompt",
                    e.utf8_error().valid_up_to()
                ))
            })?
        }
    };
    if prompt.contains('\0') {
        return Err(CliError::usage(
            "the prompt contains NUL bytes; it looks like binary data, not text",
        ));
    }
    if !prompt.trim().is_empty() {
        messages.push(Message::user(prompt.trim_end_matches('\n')));
    }
    if messages.last().is_none_or(|m| m.role != Role::User) {
        return Err(CliError::usage(
            "the prompt is empty: pass it as an argument (moa run \"...\") or on stdin",
        ));
    }
    Ok(messages)
}

pub use crate::app::preflight;

/// The embedded model is fetched on first use, with a progress bar.
pub fn fetch_local_models(
    config: &Config,
    preset: &Preset,
    baseline: bool,
) -> Result<(), CliError> {
    let uses_embedded = preset.models(baseline).iter().any(|m| {
        config.resolve(m).is_ok_and(|(p, name)| {
            p.kind == ProviderKind::Local && p.model_path.is_none() && name == EMBEDDED_MODEL
        })
    });
    let dir = &config.folders.models_dir;
    if uses_embedded && !fetch::missing(dir, &fetch::all_assets()).is_empty() {
        crate::safe_eprintln!(
            "moa: first use of the embedded models: fetching them into {} (once)",
            dir.display()
        );
        fetch::ensure(dir, &fetch::all_assets(), &mut fetch::terminal_progress())
            .map_err(|e| CliError::failed(e.to_string()))?;
    }
    Ok(())
}

/// Writes the run to the terminal as it happens.
struct Printer {
    json: bool,
    quiet: bool,
    /// Text of the final answer already written to stdout.
    streamed: String,
    final_calls: Vec<(Stage, usize)>,
    ops: Vec<&'static str>,
    /// Removes control sequences from the streamed answer when stdout is a terminal (a sequence
    /// split between two chunks included); None for a pipe, which gets the exact text.
    sanitizer: Option<crate::text::sanitize::Sanitizer>,
    stdout: StdoutWriter,
}

impl Printer {
    fn new(json: bool, quiet: bool) -> Self {
        Printer {
            json,
            quiet,
            streamed: String::new(),
            final_calls: Vec::new(),
            ops: Vec::new(),
            sanitizer: crate::text::sanitize::stdout_is_terminal().then(Default::default),
            stdout: StdoutWriter::start(),
        }
    }

    fn progress(&self, line: String) {
        if !self.quiet {
            self.stdout.progress(&line);
        }
    }

    fn event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStarted { preset, ops, .. } => {
                self.ops = ops.clone();
                self.progress(format!("moa: {preset}: {}", ops.join(" → ")));
            }
            RunEvent::CallStarted {
                tag,
                final_candidate,
                ..
            } if *final_candidate => {
                self.final_calls.push((tag.stage, tag.slot));
            }
            RunEvent::Delta { tag, text } if self.final_calls.contains(&(tag.stage, tag.slot)) => {
                if !self.json {
                    match self.sanitizer.as_mut() {
                        Some(s) => self.stdout.write(s.feed(text).as_bytes()),
                        None => self.stdout.write(text.as_bytes()),
                    }
                }
                self.streamed.push_str(text);
            }
            RunEvent::Retrying {
                tag,
                attempt,
                delay_ms,
                reason,
            } => self.progress(format!(
                "  ↻ {} {}: retry {attempt} in {:.1} s: {reason}",
                self.label(tag.stage, tag.slot),
                tag.model,
                *delay_ms as f64 / 1000.0
            )),
            RunEvent::CallFinished { tag, record } | RunEvent::CallFailed { tag, record } => {
                // End the streamed answer's line before progress lines follow it.
                if self.final_calls.contains(&(tag.stage, tag.slot))
                    && !self.json
                    && !self.streamed.is_empty()
                    && !self.streamed.ends_with('\n')
                {
                    self.stdout.write(b"\n");
                    self.streamed.push('\n');
                }
                let line = call_line(&self.label(tag.stage, tag.slot), record);
                self.progress(line);
            }
            RunEvent::Notice { message, .. } => self.progress(format!("  ! {message}")),
            RunEvent::Agreement {
                step,
                value,
                method,
                live: false,
                ..
            } => {
                let op = self.ops.get(*step).copied().unwrap_or("step");
                self.progress(format!(
                    "  step {} {op}: agreement {value:.2} ({method})",
                    step + 1
                ));
            }

            _ => {}
        }
    }

    fn label(&self, stage: Stage, slot: usize) -> String {
        match stage {
            Stage::Step(i) => format!("{}[{slot}]", self.ops.get(i).copied().unwrap_or("step")),
            Stage::Baseline => "baseline".into(),
        }
    }

    fn finish(&mut self, r: &RunRecord) {
        self.stdout.drain();
        if self.json {
            // One write: stdout is line-buffered, and a record has hundreds of lines.
            let mut text = serde_json::to_string_pretty(r).unwrap_or_default();
            text.push('\n');
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            return;
        }
        let mut out = std::io::stdout().lock();
        match &r.final_answer {
            Some(f) if f.text.trim_end() != self.streamed.trim_end() => {
                if !self.streamed.is_empty() {
                    let _ = writeln!(out);
                    crate::safe_eprintln!(
                        "moa: the streamed answer was not final; the final answer ({}) follows",
                        f.source
                    );
                }
                let _ = write!(out, "{}", crate::text::sanitize::out(&f.text));
                if !f.text.ends_with('\n') {
                    let _ = writeln!(out);
                }
            }
            Some(_) if !self.streamed.is_empty() && !self.streamed.ends_with('\n') => {
                let _ = writeln!(out);
            }
            _ => {}
        }
        let _ = out.flush();
        let cost = if r.usage.cost_incomplete || r.usage.cost_usd > 0.0 {
            format!(
                ", ${:.5}{}",
                r.usage.cost_usd,
                if r.usage.cost_incomplete {
                    "+ (some prices unknown)"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        };
        match &r.final_answer {
            Some(f) if f.status == CallStatus::Ok => self.progress(format!(
                "moa: done in {:.1} s ({}), {} tokens in, {} out{cost}",
                r.wall_ms as f64 / 1000.0,
                f.source,
                r.usage.tokens_in,
                r.usage.tokens_out
            )),
            Some(_) => crate::safe_eprintln!("moa: cancelled; the partial answer is above"),
            None if r.cancelled => crate::safe_eprintln!("moa: cancelled before any answer"),
            None => crate::safe_eprintln!("moa: the run produced no answer (see the errors above)"),
        }
    }
}

fn call_line(label: &str, c: &CallRecord) -> String {
    let secs = c.latency_ms as f64 / 1000.0;
    match c.status {
        CallStatus::Ok | CallStatus::Late => format!(
            "  ✓ {label} {} {secs:.1} s, first token {:.1} s, {} tokens{}",
            c.model,
            c.ttft_ms.unwrap_or(0) as f64 / 1000.0,
            c.tokens_out,
            if c.usage_estimated {
                " (estimated)"
            } else {
                ""
            }
        ),
        _ => format!(
            "  ✗ {label} {} {:?} after {secs:.1} s: {}{}",
            c.model,
            c.status,
            c.error.as_deref().unwrap_or("?"),
            if c.text.is_empty() {
                String::new()
            } else {
                format!(" ({} characters kept)", c.text.chars().count())
            }
        ),
    }
}

/// Streamed text goes to stdout from a thread of its own: a blocked stdout (a pager nobody reads)
/// must not stall the runtime that reads the provider streams, or their idle timeouts fire.
///
/// When stdout and stderr are one terminal, progress lines go through the same thread, so that a
/// person reads them after the answer text that came before them: written straight to stderr they
/// overtook the queued answer and landed in the middle of its line. When stdout is a pipe they go
/// straight to stderr, so that a stalled reader of stdout does not hold back the progress shown.
struct StdoutWriter {
    tx: Option<std::sync::mpsc::Sender<Piece>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ordered: bool,
}

enum Piece {
    Out(Vec<u8>),
    Err(String),
}

impl StdoutWriter {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Piece>();
        let thread = std::thread::Builder::new()
            .name("moa-stdout".into())
            .spawn(move || {
                let mut out = std::io::stdout();
                for piece in rx {
                    match piece {
                        Piece::Out(bytes) => {
                            let _ = out.write_all(&bytes).and_then(|()| out.flush());
                        }
                        Piece::Err(line) => crate::safe_eprintln!("{line}"),
                    }
                }
            })
            .ok();
        StdoutWriter {
            tx: thread.is_some().then_some(tx),
            thread,
            ordered: crate::text::sanitize::stdout_is_terminal()
                && crate::text::sanitize::stderr_is_terminal(),
        }
    }

    fn write(&self, bytes: &[u8]) {
        match &self.tx {
            Some(tx) if tx.send(Piece::Out(bytes.to_vec())).is_ok() => {}
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes).and_then(|()| out.flush());
            }
        }
    }

    /// A progress line for stderr, after the answer text queued before it when both streams are
    /// one terminal.
    fn progress(&self, line: &str) {
        match &self.tx {
            Some(tx) if self.ordered && tx.send(Piece::Err(line.to_string())).is_ok() => {}
            _ => crate::safe_eprintln!("{line}"),
        }
    }

    /// Everything sent so far is written: what follows goes straight to stdout, after it.
    fn drain(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
