//! Link the `moa` binary as a fixed-address (non-PIE) executable on Linux. A PIE binary of this
//! size starts by applying ~42,000 relocations, which writes to (and so copies) every page that
//! holds a pointer: ~1 ms of a `moa run` that uses 12 ms of CPU in all (`cargo bench --bench
//! overhead`). The libraries stay position-independent; only the executable's own address is
//! fixed, which costs ASLR for the executable's image, not for its heap, stack or libraries.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
