//! `moa serve` under load: N concurrent streaming clients (100, then 500) against the release
//! binary, each request a 6-proposer one-layer pipeline plus an aggregator on the scripted server.
//! Reports requests/s with the error count, the latency each request adds over its ideal critical
//! path (its slowest proposer plus its aggregator, as the server timed them; p50 and p99), the
//! server's CPU per request and per streamed chunk (from /proc/PID/stat), and its peak RSS.
//!
//! `cargo bench --bench serve` (`-- --clients 100,500 --rounds 2` to change the load).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::{Reply, Server};
use tokio::io::{AsyncBufReadExt, BufReader};

const PROPOSERS: usize = 6;
const PROPOSER_CHUNKS: usize = 20;
const AGG_CHUNKS: usize = 30;

fn preset() -> String {
    let agents: Vec<String> = (0..PROPOSERS)
        .map(|k| format!("{{ model = \"fake/p{k}\", temperature = 0.7 }}"))
        .collect();
    format!(
        "name = \"bench\"\n[[step]]\nop = \"propose\"\nagents = [{}]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
        agents.join(", ")
    )
}

/// utime + stime of a process, from /proc/PID/stat.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Done {
    question: String,
    sent: Instant,
    finished: Instant,
    chunks: usize,
    ok: bool,
}

async fn one(client: reqwest::Client, url: String, question: String) -> Done {
    let sent = Instant::now();
    let body = json!({"model": "moa/bench", "stream": true,
                      "messages": [{"role": "user", "content": question}]});
    let mut chunks = 0;
    let mut ok = false;
    if let Ok(resp) = client.post(&url).json(&body).send().await
        && resp.status() == 200
    {
        let mut buf = String::new();
        let mut s = resp.bytes_stream();
        while let Some(Ok(b)) = s.next().await {
            buf.push_str(&String::from_utf8_lossy(&b));
            while let Some(i) = buf.find("\n\n") {
                let frame: String = buf.drain(..i + 2).collect();
                if frame.contains("\"content\":\"") && !frame.contains("\"content\":\"\"") {
                    chunks += 1;
                }
                if frame.starts_with("data: [DONE]") {
                    ok = true;
                }
            }
        }
    }
    Done {
        question,
        sent,
        finished: Instant::now(),
        chunks,
        ok,
    }
}

fn main() {
    let clients: Vec<usize> = std::env::args()
        .skip_while(|a| a != "--clients")
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 500]);
    let rounds = common::arg("--rounds", 2);
    let server = Server::start_on_own_thread();
    // Proposer k: first token after 100 + 10k ms, then 20 chunks 10 ms apart; the aggregator
    // 100 ms, then 30 chunks 10 ms apart: ideal critical path about 0.65 s.
    for k in 0..PROPOSERS {
        let parts: Vec<String> = (0..PROPOSER_CHUNKS).map(|i| format!("p{k}t{i} ")).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        server.script(
            &format!("p{k}"),
            vec![Reply::text(&parts, 100 + 10 * k as u64, 10)],
        );
    }
    let parts: Vec<String> = (0..AGG_CHUNKS).map(|i| format!("final{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    server.script("agg", vec![Reply::text(&parts, 100, 10)]);

    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "{}\n[serve]\nmax_concurrent_requests = 4096\n",
            server.config("max_concurrency = 8192\n")
        ),
    )
    .unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/bench.toml"), preset()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"))
            .args(["serve", "--listen", "127.0.0.1:0", "--preset", "bench"])
            .env("MOA_HOME", home.path())
            .env_remove("MOA_SERVE_KEY")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next_line().await.unwrap().expect("moa serve started");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = format!("{base}/v1/chat/completions");
        println!(
            "moa serve: {PROPOSERS} proposers x 1 layer + aggregator per request, {PROPOSER_CHUNKS} chunks a proposer, {AGG_CHUNKS} streamed chunks an answer, {rounds} rounds per client"
        );
        let mut seq = 0usize;
        for &n in &clients {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(n)
                .build()
                .unwrap();
            let log_start = server.log().len();
            let cpu0 = process_cpu(pid);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (client, url) = (client.clone(), url.clone());
                let first = seq;
                seq += rounds;
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for r in 0..rounds {
                        out.push(one(client.clone(), url.clone(), format!("question {}", first + r)).await);
                    }
                    out
                }));
            }
            let mut done = Vec::new();
            for t in tasks {
                done.extend(t.await.unwrap());
            }
            let wall = t0.elapsed();
            let cpu = process_cpu(pid) - cpu0;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let log = server.log()[log_start..].to_vec();
            let errors = done.iter().filter(|d| !d.ok).count();
            let chunks: usize = done.iter().map(|d| d.chunks).sum();
            // Each request's ideal: its slowest proposer plus its aggregator, as the server timed them.
            let mut added = Vec::new();
            for d in done.iter().filter(|d| d.ok) {
                let needle = serde_json::Value::String(d.question.clone());
                let calls: Vec<_> = log
                    .iter()
                    .filter(|l| {
                        l.body["messages"]
                            .as_array()
                            .and_then(|m| m.last())
                            .is_some_and(|m| m["content"] == needle)
                    })
                    .collect();
                let slowest = calls
                    .iter()
                    .filter(|l| l.model != "agg")
                    .filter_map(|l| Some(l.ended? - l.at))
                    .max();
                let agg = calls
                    .iter()
                    .filter(|l| l.model == "agg")
                    .filter_map(|l| Some(l.ended? - l.at))
                    .max();
                if let (Some(p), Some(a)) = (slowest, agg) {
                    let total = d.finished - d.sent;
                    added.push((total.as_secs_f64() - (p + a).as_secs_f64()) * 1e3);
                }
            }
            added.sort_by(f64::total_cmp);
            let requests = done.len();
            println!(
                "{n} clients: {requests} requests in {:.2} s = {:.1} requests/s, {errors} errors; added latency over the ideal path p50 {:.1} ms, p99 {:.1} ms ({} matched); server CPU {:.2} ms/request, {:.1} µs/streamed chunk ({chunks} chunks); peak RSS {:.1} MB",
                wall.as_secs_f64(),
                requests as f64 / wall.as_secs_f64(),
                percentile(&added, 0.5),
                percentile(&added, 0.99),
                added.len(),
                cpu.as_secs_f64() * 1e3 / requests as f64,
                cpu.as_secs_f64() * 1e6 / chunks.max(1) as f64,
                peak_rss_mb(pid),
            );
        }
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    });
}
