//! The embedded model's speed: load time, prefill tokens/s, single-stream decode tokens/s, Self-MoA
//! (N samples of one prompt) decoded as one batch vs one after another, and peak RSS.
//!
//! `cargo bench --bench local` (needs `moa pull`; `-- --tokens N --samples N` to change the workload).

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::provider::Message;
use moa_workbench::provider::local::Loaded;
use moa_workbench::provider::local::llama::Cache;

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

fn main() {
    // As the `moa` binary does (src/lib.rs).
    moa_workbench::keep_freed_buffers();
    let tokens = common::arg("--tokens", 128);
    let samples = common::arg("--samples", 3);
    let path = fetch::SMOLLM2.path(&Folders::from_env().models_dir);
    assert!(
        path.exists(),
        "{} is missing: run `moa pull`",
        path.display()
    );
    let t = Instant::now();
    let loaded = Loaded::load(&path).unwrap();
    let load = t.elapsed();
    let m = &loaded.model;
    println!(
        "model: {} ({} stored, {} at compute), {} layers, load {:.2} s",
        path.display(),
        m.info.stored_type,
        m.info.compute_type,
        m.info.n_layer,
        load.as_secs_f64()
    );
    let prompt = loaded
        .prompt_ids(&[Message::user(
            "Explain in a few paragraphs how B-trees and LSM-trees differ, and when a database should prefer one over the other.",
        )])
        .unwrap();

    // Prefill.
    let mut cache = m.new_cache();
    let t = Instant::now();
    let logits = m
        .forward(std::slice::from_ref(&prompt), &mut cache)
        .unwrap();
    let prefill = t.elapsed();
    println!(
        "prefill: {} tokens in {:.1} ms = {:.0} tok/s",
        prompt.len(),
        prefill.as_secs_f64() * 1e3,
        prompt.len() as f64 / prefill.as_secs_f64()
    );

    // Single-stream greedy decode.
    let base = cache.clone();
    let first = argmax(&logits.get(0).unwrap().to_vec1::<f32>().unwrap());
    let t = Instant::now();
    let mut next = first;
    let mut c = base.clone();
    for _ in 0..tokens {
        let l = m.forward(&[vec![next]], &mut c).unwrap();
        next = argmax(&l.get(0).unwrap().to_vec1::<f32>().unwrap());
    }
    let single = tokens as f64 / t.elapsed().as_secs_f64();
    println!("decode, one stream: {tokens} tokens, {single:.1} tok/s");

    // Self-MoA: `samples` continuations of one prompt, after one shared prefill.
    let t = Instant::now();
    for _ in 0..samples {
        let mut c = base.clone();
        let mut next = first;
        for _ in 0..tokens {
            let l = m.forward(&[vec![next]], &mut c).unwrap();
            next = argmax(&l.get(0).unwrap().to_vec1::<f32>().unwrap());
        }
    }
    let sequential = t.elapsed();
    let t = Instant::now();
    let mut c: Cache = base.repeat(samples).unwrap();
    let mut next = vec![vec![first]; samples];
    for _ in 0..tokens {
        let l = m.forward(&next, &mut c).unwrap();
        next = (0..samples)
            .map(|r| vec![argmax(&l.get(r).unwrap().to_vec1::<f32>().unwrap())])
            .collect();
    }
    let batched = t.elapsed();
    let total = (samples * tokens) as f64;
    println!(
        "Self-MoA decode, {samples} samples x {tokens} tokens: one after another {:.1} tok/s, batched {:.1} tok/s: batched is {:.2}x",
        total / sequential.as_secs_f64(),
        total / batched.as_secs_f64(),
        sequential.as_secs_f64() / batched.as_secs_f64()
    );
    let unshared = prefill.as_secs_f64() * samples as f64;
    println!(
        "shared prefill saves {:.1} ms of {:.1} ms ({} prefills avoided)",
        unshared * 1e3 - prefill.as_secs_f64() * 1e3,
        unshared * 1e3,
        samples - 1
    );
    println!("peak RSS {:.0} MB (the LLM alone)", common::peak_rss_mb());

    // Agreement: embed 6 answers of ~300 tokens each and score them, as at the end of a step.
    let minilm_dir = fetch::MINILM[0].path(&Folders::from_env().models_dir);
    let minilm_dir = minilm_dir.parent().unwrap();
    let words = "the storage engine writes sorted runs to disk and merges them in the background while \
                 readers consult a memtable and bloom filters before touching older levels of data ";
    let answers: Vec<String> = (0..6)
        .map(|i| format!("Answer {i}: {}", words.repeat(10)))
        .collect();
    let words_each = answers[0].split_whitespace().count();
    // Both backends side by side, in one run: the AMX encoder where this machine has it, candle's
    // f32 BERT (the portable path) always.
    use moa_workbench::metrics::embed::{Backend, MiniLm, cosine_matrix};
    let mut backends = vec![Backend::Candle];
    if Backend::best() == Backend::Amx {
        backends.insert(0, Backend::Amx);
    }
    // Warm the page cache so that neither backend's load time includes reading the disk.
    std::fs::read(minilm_dir.join("model.safetensors")).unwrap();
    let mut timings = Vec::new();
    for backend in backends {
        let t = Instant::now();
        let scorer = MiniLm::load_on(minilm_dir, backend).unwrap();
        let load = t.elapsed();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let e = scorer.embed(&answers).unwrap();
            assert_eq!(cosine_matrix(&e).len(), 6);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "agreement ({backend:?}): MiniLM load {:.0} ms; 6 answers of ~{words_each} words (truncated at 256 tokens) scored in {:.1} ms (best of 5; target < 150 ms)",
            load.as_secs_f64() * 1e3,
            best * 1e3
        );
        timings.push(best);
    }
    if timings.len() == 2 {
        println!(
            "agreement: AMX is {:.1}x faster than candle",
            timings[1] / timings[0]
        );
    }
    // As the engine scores: live passes embed answers as they finish, so the end-of-step score finds
    // five of the six in the cache and embeds only the one that finished last.
    use moa_workbench::metrics::agreement::AgreementScorer;
    let mut end_of_step = f64::MAX;
    for round in 0..5 {
        let scorer = moa_workbench::metrics::embed::MiniLmScorer::new(minilm_dir.to_path_buf());
        let texts: Vec<String> = answers.iter().map(|a| format!("{a} {round}")).collect();
        scorer.matrix(&texts[..5]);
        let t = Instant::now();
        let m = scorer.matrix(&texts);
        assert_eq!(m.len(), 6);
        end_of_step = end_of_step.min(t.elapsed().as_secs_f64());
    }
    println!(
        "agreement at the end of a step (5 of 6 answers embedded by live passes): {:.0} ms (best of 5)",
        end_of_step * 1e3
    );
}
