//! The inputs that crashed the fuzzers (`fuzz/regressions/`), run on every `cargo test`: the SSE
//! framing and both chunk parsers (split at every byte), the preset and config loaders, and the
//! session loader with its exports.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use futures::StreamExt;
use moa_workbench::config::{Config, Folders};
use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;
use moa_workbench::provider::{anthropic, openai, sse};
use moa_workbench::session::{compare, export, store};

fn inputs(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(kind);
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no regression inputs in {}", dir.display());
    v
}

fn parse_all(chunks: Vec<Vec<u8>>) {
    let stream = || {
        futures::stream::iter(
            chunks
                .clone()
                .into_iter()
                .map(Ok::<Vec<u8>, std::io::Error>)
                .collect::<Vec<_>>(),
        )
    };
    futures::executor::block_on(async {
        let _ = openai::chunk_stream(Box::pin(sse::frame(stream(), "p".into())), "p".into())
            .collect::<Vec<_>>()
            .await;
        let _ = anthropic::chunk_stream(Box::pin(sse::frame(stream(), "p".into())), "p".into())
            .collect::<Vec<_>>()
            .await;
    });
}

#[test]
fn sse_inputs_that_crashed_the_fuzzer() {
    for (path, bytes) in inputs("sse") {
        // The fuzzer's first bytes chose where to split; here every start and every split point.
        for start in 0..bytes.len().min(4) {
            let body = &bytes[start..];
            for cut in 0..=body.len() {
                let (a, b) = body.split_at(cut);
                parse_all(vec![a.to_vec(), b.to_vec()]);
            }
        }
        eprintln!("{}: ok", path.display());
    }
}

#[test]
fn preset_and_config_inputs_that_crashed_the_fuzzer() {
    let folders = Folders {
        config_dir: PathBuf::from("/nonexistent"),
        data_dir: PathBuf::from("/nonexistent"),
        models_dir: PathBuf::from("/nonexistent/models"),
    };
    for (path, bytes) in inputs("config") {
        let text = String::from_utf8_lossy(&bytes);
        let e = preset::parse(&path, &text, &Templates::builtin()).expect_err("refused");
        assert!(e.to_string().contains("at most"), "{e}");
        let _ = Config::from_toml(folders.clone(), &path, &text).map_err(|e| e.to_string());
    }
}

#[test]
fn session_inputs_that_crashed_the_fuzzer() {
    for (path, bytes) in inputs("session") {
        if let Ok(s) = store::parse(&path, &bytes) {
            let _ = export::markdown(&s);
            let _ = export::json(&s);
            for r in &s.runs {
                let _ = compare::compare(r).moa.summary();
            }
        }
    }
}

#[test]
fn prompts_regressions() {
    for (path, bytes) in inputs("prompts") {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok((_, warnings)) = moa_workbench::session::eval::parse_prompts(&path, &text) {
            let _ = warnings.join("\n");
        }
    }
}
