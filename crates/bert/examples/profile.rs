//! Runs the encoder on MiniLM's shape with made-up weights, for profiling:
//! `cargo run --release -p moa-bert --example profile` (under `perf record` to see where time goes).
fn main() {
    let dims = moa_bert::Dims {
        vocab: 30522,
        hidden: 384,
        heads: 12,
        intermediate: 1536,
        layers: 6,
        max_positions: 512,
        eps: 1e-12,
    };
    let mut seed = 1u64;
    let t = std::time::Instant::now();
    let enc = moa_bert::Encoder::load(dims, |_, len| {
        Ok((0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect())
    })
    .unwrap();
    println!(
        "load (made-up weights) {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let seqs: Vec<Vec<u32>> = (0..6)
        .map(|s| {
            (0..256)
                .map(|t| (s * 1000 + t * 7) as u32 % 30522)
                .collect()
        })
        .collect();
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let e = enc.embed(&seqs).unwrap();
        assert_eq!(e.len(), 6);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("6 x 256 tokens: best {:.1} ms", best * 1e3);
}
