//! moa-workbench: a Mixture-of-Agents engine with a terminal workbench and headless runs.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod metrics;
pub mod provider;
pub mod session;
pub mod text;
pub mod tui;

/// candle allocates a fresh buffer for every tensor op. With glibc's defaults, buffers of a few MB
/// are mmapped and unmapped on free, so each op page-faults freshly zeroed pages: a quarter of the
/// time of scoring agreement with MiniLM (720 -> 550 ms for 6 x 256 tokens, `benches/local.rs`).
/// Keeping them in the heap lets the next op reuse them.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
