//! The only unsafe code of the crate: calls into libc that have no safe wrapper in std. Everything
//! else is `#![deny(unsafe_code)]` (Cargo.toml's `[lints]`).
#![allow(unsafe_code)]

/// candle allocates a fresh buffer for every tensor op. With glibc's defaults, buffers of a few MB
/// are mmapped and unmapped on free, so each op page-faults freshly zeroed pages: a quarter of the
/// time of scoring agreement with MiniLM (720 -> 550 ms for 6 x 256 tokens, `benches/local.rs`).
/// Keeping them in the heap lets the next op reuse them.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Like other command-line tools, end quietly when stdout's reader goes away (`moa ... | head`):
/// Rust ignores SIGPIPE by default, which turns a closed pipe into "broken pipe" errors.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Wait for an exclusive advisory lock on `file` (released when the file is closed).
#[cfg(unix)]
pub fn flock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the caller owns for the duration of the call; no memory
        // is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Make a FIFO at `path` (tests use one to check that nothing blocks on it).
#[cfg(unix)]
pub fn mkfifo(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
