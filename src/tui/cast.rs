//! `moa sessions export ID --format cast`: the replay of a run as an asciicast v2 recording
//! (asciinema's format: a JSON header line, then one `[seconds, "o", text]` line per frame), for
//! those who embed terminal recordings. The frames are the workbench's own: the replay's events go
//! through `update` and `view` on a virtual clock, and what ratatui would write to a terminal of
//! the given size is what the recording holds. It takes no real time.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{TerminalOptions, Viewport};

use super::replay;
use super::state::App;
use super::update::{Msg, update};
use crate::session::Session;

/// What ratatui writes, kept to be cut into frames.
#[derive(Clone, Default)]
struct Captured(Rc<RefCell<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Frames at most this often (the workbench's own cap is 30 a second).
const FRAME_MS: u64 = 33;
/// Latency bars of calls in flight grow this often, as the workbench's tick does.
const TICK_MS: u64 = 250;
/// The last frame stays this long before the recording ends.
const HOLD_MS: u64 = 2000;

/// The asciicast of run `k` of `session` on a `width`×`height` terminal, played at `speed`.
pub fn render(
    session: &Session,
    k: usize,
    width: u16,
    height: u16,
    speed: f64,
    color: bool,
) -> std::io::Result<String> {
    let Some(run) = session.runs.get(k) else {
        return Err(std::io::Error::other(format!("no run {}", k + 1)));
    };
    let schedule = crate::session::timeline::schedule(run);
    let captured = Captured::default();
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(captured.clone()),
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, width, height)),
        },
    )?;
    let mut app = App::new(Arc::new(run.preset.clone()), Vec::new(), color);
    let epoch = Instant::now();
    let at = |ms: u64| epoch + Duration::from_millis(ms);
    app.now = at(0);
    replay::start(&mut app, session, k, speed, &schedule);
    // A struct, not json!: asciinema's files begin with "version", and json! sorts its keys.
    #[derive(serde::Serialize)]
    struct Header<'a> {
        version: u8,
        width: u16,
        height: u16,
        title: String,
        env: Env<'a>,
    }
    #[derive(serde::Serialize)]
    struct Env<'a> {
        #[serde(rename = "TERM")]
        term: &'a str,
    }
    let header = serde_json::to_string(&Header {
        version: 2,
        width,
        height,
        title: format!("moa replay: {}", crate::text::strip_controls(&session.name)),
        env: Env {
            term: "xterm-256color",
        },
    })
    .map_err(std::io::Error::other)?;
    let mut out = format!("{header}\n");
    let mut frame = |app: &App, ms: u64, out: &mut String| -> std::io::Result<()> {
        terminal.draw(|f| super::view::view(app, f))?;
        let bytes = std::mem::take(&mut *captured.0.borrow_mut());
        if !bytes.is_empty() {
            let secs = ms as f64 / 1000.0 / speed;
            let text = String::from_utf8_lossy(&bytes);
            out.push_str(&serde_json::json!([(secs * 1e6).round() / 1e6, "o", text]).to_string());
            out.push('\n');
        }
        Ok(())
    };
    let mut events = schedule.events.into_iter().peekable();
    let mut t = 0u64;
    let mut next_tick = TICK_MS;
    loop {
        while let Some(e) = events.next_if(|e| e.ms <= t) {
            if let Some(r) = app.replay.as_mut() {
                r.at_ms = e.ms;
            }
            update(
                &mut app,
                Msg::Replayed {
                    event: Box::new(e.event),
                    at_ms: e.ms,
                },
                at(t),
            );
        }
        if t >= next_tick {
            update(&mut app, Msg::Tick, at(t));
            next_tick += TICK_MS;
        }
        if app.dirty {
            frame(&app, t, &mut out)?;
            app.dirty = false;
        }
        match events.peek() {
            // Idle stretches (a slow first token) skip to the next event or tick.
            Some(e) => t = (t + FRAME_MS).max(e.ms.min(next_tick)),
            None => break,
        }
    }
    // The end as the workbench shows it: the session open on the replayed run.
    replay::finished(&mut app, session.clone(), k);
    app.now = at(t);
    frame(&app, t, &mut out)?;
    let secs = (t + HOLD_MS) as f64 / 1000.0 / speed;
    out.push_str(&serde_json::json!([(secs * 1e6).round() / 1e6, "o", ""]).to_string());
    out.push('\n');
    Ok(out)
}
