//! A BERT sentence encoder whose matrix products run on Intel AMX tiles.
//!
//! moa-workbench scores how far the proposers agree by embedding their answers with
//! all-MiniLM-L6-v2. Six answers of 256 tokens are ~36 GFLOP, and candle's f32 path needs ~0.5 s on
//! two cores; AMX multiplies bf16 tiles at ~2.7 TFLOP/s per core. bf16 alone (8-bit mantissa) moves
//! cosines by ~1e-3, the whole tolerance, so every product is done in three parts: with
//! x = x_hi + x_lo and w = w_hi + w_lo split into bf16, x·w ≈ x_hi·w_hi + x_hi·w_lo + x_lo·w_hi,
//! accumulated in f32 (the "bf16x3" scheme oneDNN uses to emulate f32), which is accurate to ~1e-5.
//!
//! [`Encoder::available`] says whether this CPU and OS can run it; moa-workbench falls back to candle
//! otherwise. Everything else is plain Rust compiled for AVX-512 (every AMX CPU has it).

mod aligned;
mod amx;
mod cpu;
mod encoder;
mod math;

pub use cpu::amx_available;
pub use encoder::{Dims, Encoder};
