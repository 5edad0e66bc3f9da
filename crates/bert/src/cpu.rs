//! Whether AMX can run here: the CPU must have the tile and bf16 extensions and AVX-512, and the OS
//! must both save tile state (XCR0) and let this process use it (Linux asks for it per process).

use std::sync::OnceLock;

/// True when the AMX encoder can run; the answer is computed once. `MOA_NO_AMX=1` says no, to
/// compare against (or fall back to) the portable path.
pub fn amx_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("MOA_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("xsave");
    if !avx512 {
        return false;
    }
    // CPUID.(EAX=7,ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    // SAFETY: xsave was detected above, so XGETBV is available.
    let xcr0 = unsafe { xgetbv0() };
    // Bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves tile state across context switches.
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with an integer argument; it only changes this process's permissions.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    } == 0;
    // A last check that the tiles compute what they should before anything relies on them.
    granted && crate::amx::self_test()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked xsave (this function's target feature).
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}
