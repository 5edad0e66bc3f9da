//! Load: `moa eval` with 200 prompts x 6 proposers at concurrency 32 against the scripted server.
//! No deadlock, every result recorded, bounded memory (peak RSS reported), and the providers'
//! `max_concurrency` and `requests_per_minute` respected, checked from the server's own log.
//! Takes about a minute: the per-minute limit is a 60 s sliding window, as providers count it.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Logged, Reply, Server};

const PROMPTS: usize = 200;
const FAKE_CONCURRENCY: usize = 12;
const RPM: usize = 150;

/// The most requests of `log` that were open at the same moment (server side: from arrival to the
/// last byte sent, which is inside the client's hold of its permit).
fn max_overlap(log: &[&Logged]) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for l in log {
        edges.push((l.at, 1));
        edges.push((l.ended.expect("every request ended"), -1));
    }
    // Ends before starts at the same instant.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// The most requests that started within any 60 s window.
fn max_per_minute(starts: &mut [Instant]) -> usize {
    starts.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= Duration::from_secs(60) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_200_prompts_6_proposers_at_concurrency_32() {
    let s = Server::start().await;
    let words: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = words.iter().map(String::as_str).collect();
    for m in ["p1", "p2", "p3", "p4", "p5", "agg", "base", "r1"] {
        s.script(m, vec![Reply::text(&parts, 5, 1)]);
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let config = format!(
        "{}max_concurrency = {FAKE_CONCURRENCY}\n\n[providers.rpm]\nkind = \"openai\"\nbase_url = \"{}\"\nrequests_per_minute = {RPM}\n",
        s.config(""),
        s.base_url()
    );
    std::fs::write(h.join("config.toml"), config).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    std::fs::write(
        h.join("presets/six.toml"),
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }, { model = \"fake/p3\" }, { model = \"fake/p4\" }, { model = \"fake/p5\" }, { model = \"rpm/r1\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n[baseline]\nmodel = \"fake/base\"\n",
    )
    .unwrap();
    let prompts = h.join("p.jsonl");
    let lines: String = (0..PROMPTS)
        .map(|i| format!("{{\"prompt\": \"Question number {i}?\", \"reference\": \"w39\"}}\n"))
        .collect();
    std::fs::write(&prompts, lines).unwrap();
    let out_dir = h.join("ev");
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args([
            "eval",
            "--preset",
            "six",
            "--prompts",
            prompts.to_str().unwrap(),
            "--concurrency",
            "32",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .env("MOA_HOME", h)
        .env("FAKE_API_KEY", "k")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("no deadlock: the evaluation ends")
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["done"], PROMPTS);
    assert_eq!(sum["errors"], 0);
    assert_eq!(sum["accuracy"]["moa"], 1.0);
    let results = std::fs::read_to_string(out_dir.join("results.jsonl")).unwrap();
    assert_eq!(
        results.lines().count(),
        PROMPTS,
        "every result recorded once"
    );
    let log = s.log();
    assert_eq!(
        log.len(),
        PROMPTS * 8,
        "6 proposers, the aggregator and the baseline per prompt"
    );

    let fake: Vec<&Logged> = log.iter().filter(|l| l.model != "r1").collect();
    let overlap = max_overlap(&fake);
    assert!(
        overlap <= FAKE_CONCURRENCY,
        "max_concurrency {FAKE_CONCURRENCY} exceeded: {overlap}"
    );
    let mut r1: Vec<Instant> = log
        .iter()
        .filter(|l| l.model == "r1")
        .map(|l| l.at)
        .collect();
    let per_minute = max_per_minute(&mut r1);
    assert!(
        per_minute <= RPM,
        "requests_per_minute {RPM} exceeded: {per_minute}"
    );
    assert!(
        elapsed >= Duration::from_secs(60),
        "the 50 requests over the limit waited for the window"
    );

    // Peak resident memory of the moa process (the only child this test binary waited for).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let peak_mb = ru.ru_maxrss as f64 / 1024.0;
    eprintln!(
        "load: {PROMPTS} prompts x 8 calls in {:.1} s; fake provider max in flight {overlap} (limit {FAKE_CONCURRENCY}); rpm provider max {per_minute}/60 s (limit {RPM}); peak RSS {peak_mb:.0} MB",
        elapsed.as_secs_f64()
    );
    assert!(peak_mb < 400.0, "memory stays bounded: {peak_mb:.0} MB");
}
