//! The workbench under load, without a terminal: 6 proposers streaming 50 tokens/s each into
//! 8,000-token answers with code blocks, through the real `update` and `view` on a 160x45
//! TestBackend at the loop's 30 fps cap. Reports the time to build one frame (p50/p99), the CPU
//! the whole thing uses per second of streaming (as a share of one core), and peak RSS.
//!
//! `cargo bench --bench tui` (`-- --seconds N` to stream for N seconds of real time; default 20).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moa_workbench::engine::events::{CallTag, RunEvent, Stage};
use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;
use moa_workbench::tui::state::App;
use moa_workbench::tui::update::{Msg, update};
use moa_workbench::tui::view::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// An answer of about `tokens` tokens (~4 characters each) with prose, nested lists, a table and
/// code blocks (Rust with spaces, Go with tabs), as code-heavy answers are.
fn answer(tokens: usize, seed: usize) -> Vec<String> {
    let chunk = format!(
        "## Part {seed}\nB-trees keep **sorted keys** in pages; LSM-trees buffer writes in a *memtable*.\n- reads: `O(log n)` page visits\n- writes: sequential, merged in the background\n\n```rust\nfn lookup(tree: &BTree, key: u64) -> Option<&Value> {{\n    tree.root().find(key)\n}}\n```\n\n1. merge policy\n   - tiered: *fewer* writes\n   - leveled: fewer reads\n\n| op | B-tree | LSM |\n|---|:-:|--:|\n| read | 1 | k |\n\n```go\nfunc flush(m *Memtable) error {{\n\tfor _, kv := range m.Sorted() {{\n\t\tif err := w.Write(kv); err != nil {{\n\t\t\treturn err\n\t\t}}\n\t}}\n\treturn nil\n}}\n```\n\n"
    );
    let text = chunk.repeat(tokens * 4 / chunk.len() + 1);
    // Tokens of ~4 characters, as a tokenizer would cut them.
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(4)
        .take(tokens)
        .map(|c| c.iter().collect())
        .collect()
}

fn main() {
    let seconds = common::arg("--seconds", 20) as u64;
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/m\", n = 6 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";
    let preset = Arc::new(preset::parse(Path::new("b.toml"), text, &Templates::builtin()).unwrap());
    let mut app = App::new(preset, vec![], true);
    for c in "Compare B-trees and LSM-trees".chars() {
        update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
            Instant::now(),
        );
    }
    update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        Instant::now(),
    );
    let answers: Vec<Vec<String>> = (0..6).map(|k| answer(8_000, k)).collect();
    let mut terminal = Terminal::new(TestBackend::new(160, 45)).unwrap();
    let tag = |slot: usize| CallTag {
        run: "b".into(),
        stage: Stage::Step(0),
        slot,
        model: "fake/m".into(),
    };

    let tokens_per_sec = 50.0;
    let frame = Duration::from_millis(33);
    let start = Instant::now();
    let cpu0 = common::cpu_time(libc::RUSAGE_SELF);
    let mut sent = 0usize;
    let mut frame_times = Vec::new();
    let mut next_frame = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        // Deliver the tokens that are due by now (each proposer at 50 tokens/s).
        let due = ((start.elapsed().as_secs_f64() * tokens_per_sec) as usize).min(8_000);
        while sent < due {
            for (slot, a) in answers.iter().enumerate() {
                update(
                    &mut app,
                    Msg::Run(Box::new(RunEvent::Delta {
                        tag: tag(slot),
                        text: a[sent].clone(),
                    })),
                    Instant::now(),
                );
            }
            sent += 1;
        }
        if app.dirty && Instant::now() >= next_frame {
            let t = Instant::now();
            terminal.draw(|f| view(&app, f)).unwrap();
            frame_times.push(t.elapsed());
            app.dirty = false;
            next_frame = t + frame;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = start.elapsed();
    let cpu = common::cpu_time(libc::RUSAGE_SELF) - cpu0;
    frame_times.sort();
    let pct = |p: f64| frame_times[((frame_times.len() - 1) as f64 * p) as usize];
    println!(
        "6 proposers x 50 tok/s for {:.0} s ({sent} tokens each so far), 160x45: {} frames",
        wall.as_secs_f64(),
        frame_times.len()
    );
    println!(
        "frame build: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 4 ms)",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        frame_times.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "CPU while streaming: {:.1}% of one core (target < 10%); peak RSS {:.0} MB (target < 60 MB)",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        common::peak_rss_mb()
    );
}
