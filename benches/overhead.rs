//! Engine overhead: 6 proposers x 3 layers + an aggregator against the scripted server at fixed
//! timings. Reports wall time / ideal critical path (sum over steps of the slowest call, as the
//! server measured each call) and the CPU time of the whole `moa run` process, start-up included.
//!
//! `cargo bench --bench overhead` (add `-- --runs N` for more runs).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Reply, Server};

const LAYERS: usize = 3;
const PROPOSERS: usize = 6;

fn preset() -> String {
    let mut s = String::from("name = \"bench\"\n");
    for layer in 0..LAYERS {
        let agents: Vec<String> = (0..PROPOSERS)
            .map(|k| {
                format!("{{ model = \"fake/l{layer}-p{k}\", temperature = 0.7, max_tokens = 512 }}")
            })
            .collect();
        let op = if layer == 0 { "propose" } else { "synthesize" };
        s.push_str(&format!(
            "[[step]]\nop = \"{op}\"\nagents = [{}]\n",
            agents.join(", ")
        ));
    }
    s.push_str("[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\ntemperature = 0.7\n");
    s
}

fn main() {
    let runs = common::arg("--runs", 5);
    // Chunks per call: 20 streams tokens; 1 shows the fixed cost of a run apart from streaming.
    let chunks = common::arg("--chunks", 20);
    // 1: save the session as `moa run` does by default (written as calls finish; fsync'd).
    let save = common::arg("--save", 0) == 1;
    // The server gets a single-threaded runtime on its own thread: fewer cross-thread wake-ups on
    // the server's side of each hand-off, which the ideal path would otherwise absorb.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(Server::start().await).unwrap();
            std::future::pending::<()>().await
        });
    });
    let server = rx.recv().unwrap();
    // Slot k: first token after 50 + 10k ms, then 20 chunks 10 ms apart (the slowest ~290 ms).
    for layer in 0..LAYERS {
        for k in 0..PROPOSERS {
            let parts: Vec<String> = (0..chunks).map(|i| format!("tok{i} ")).collect();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            server.script(
                &format!("l{layer}-p{k}"),
                vec![Reply::text(&parts, 50 + 10 * k as u64, 10)],
            );
        }
    }
    let parts: Vec<String> = (0..chunks).map(|i| format!("final{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    server.script("agg", vec![Reply::text(&parts, 100, 10)]);

    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        server.config("max_concurrency = 64\n"),
    )
    .unwrap();
    let preset_path = home.path().join("bench.toml");
    std::fs::write(&preset_path, preset()).unwrap();

    if std::env::var_os("MOA_BENCH_HOLD").is_some() {
        // For profiling: keep the server up and print the command to run against it.
        println!(
            "MOA_HOME={} {} run --preset {} --json --no-save -q 'Benchmark prompt'",
            home.path().display(),
            env!("CARGO_BIN_EXE_moa"),
            preset_path.display()
        );
        std::thread::sleep(Duration::from_secs(900));
        return;
    }
    println!(
        "moa overhead: {PROPOSERS} proposers x {LAYERS} layers + aggregator, {chunks} chunks a call, {runs} runs of the release binary"
    );
    let mut ratios = Vec::new();
    let mut cpus = Vec::new();
    for run in 0..runs {
        let before_log = server.log().len();
        let cpu0 = common::cpu_time(libc::RUSAGE_CHILDREN);
        let t0 = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
            .args([
                "run",
                "--preset",
                preset_path.to_str().unwrap(),
                "--json",
                "-q",
            ])
            .args(if save { None } else { Some("--no-save") })
            .arg("Benchmark prompt")
            .env("MOA_HOME", home.path())
            .output()
            .unwrap();
        let process_wall = t0.elapsed();
        let cpu = common::cpu_time(libc::RUSAGE_CHILDREN) - cpu0;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let log = &server.log()[before_log..];
        // Ideal: for each step, the slowest call as the server timed it.
        let mut ideal = Duration::ZERO;
        for layer in 0..LAYERS {
            let prefix = format!("l{layer}-");
            ideal += log
                .iter()
                .filter(|l| l.model.starts_with(&prefix))
                .map(|l| l.ended.unwrap() - l.at)
                .max()
                .unwrap();
        }
        ideal += log
            .iter()
            .filter(|l| l.model == "agg")
            .map(|l| l.ended.unwrap() - l.at)
            .max()
            .unwrap();
        // Hand-offs: last byte of a step's slowest call to the first request of the next step.
        let step_of = |m: &str| -> usize {
            if m == "agg" {
                LAYERS
            } else {
                m[1..m.find('-').unwrap()].parse().unwrap()
            }
        };
        let mut gaps = Vec::new();
        for k in 0..LAYERS {
            let end = log
                .iter()
                .filter(|l| step_of(&l.model) == k)
                .filter_map(|l| l.ended)
                .max()
                .unwrap();
            let next = log
                .iter()
                .filter(|l| step_of(&l.model) == k + 1)
                .map(|l| l.at)
                .min()
                .unwrap();
            gaps.push(format!("{:.2}", (next - end).as_secs_f64() * 1e3));
        }
        // The same hand-offs as the client saw them (its own clock, in the run record).
        let steps = rec["steps"].as_array().unwrap();
        let mut client_gaps = Vec::new();
        for k in 0..LAYERS {
            let calls = |i: usize| steps[i]["calls"].as_array().unwrap().clone();
            let end = calls(k)
                .iter()
                .map(|c| c["start_ms"].as_u64().unwrap() + c["latency_ms"].as_u64().unwrap())
                .max()
                .unwrap();
            let next = calls(k + 1)
                .iter()
                .map(|c| c["start_ms"].as_u64().unwrap())
                .min()
                .unwrap();
            client_gaps.push((next as i64 - end as i64).to_string());
        }
        // The pipeline's wall time: first request received to last byte of the final answer sent.
        let first = log.iter().map(|l| l.at).min().unwrap();
        let last = log.iter().filter_map(|l| l.ended).max().unwrap();
        let wall = last - first;
        let ratio = wall.as_secs_f64() / ideal.as_secs_f64();
        println!(
            "run {run}: pipeline wall {:.1} ms, ideal {:.1} ms, ratio {ratio:.4}; record wall_ms {}; process wall {:.1} ms, process CPU {:.1} ms; hand-offs ms {} (client-side {})",
            wall.as_secs_f64() * 1e3,
            ideal.as_secs_f64() * 1e3,
            rec["wall_ms"],
            process_wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            gaps.join(" "),
            client_gaps.join(" ")
        );
        ratios.push(ratio);
        cpus.push(cpu.as_secs_f64() * 1e3);
    }
    ratios.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v[v.len() / 2];
    println!(
        "median: wall/ideal {:.4} (target <= 1.002), process CPU {:.1} ms (target <= 15 ms); min CPU {:.1} ms",
        med(&ratios),
        med(&cpus),
        cpus[0]
    );
}
