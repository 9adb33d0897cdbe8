//! Process hardening at start: private umask, no core dumps, not dumpable, memory locked.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use nix::sys::stat::{umask, Mode};

/// Sets the umask to 0o077 so every file the daemon (and sled) creates is private.
/// Call it first thing in `main`, before any file is created.
pub fn set_private_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

/// What [`harden`] could not do (each is logged as a warning by the caller).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HardeningReport {
    /// One line per measure that failed or was skipped.
    pub warnings: Vec<String>,
}

/// Marks the process non-dumpable (no ptrace by same-uid processes, no core file), sets the
/// core-dump limit to zero and, when `RLIMIT_MEMLOCK` is unlimited, locks all current and
/// future memory so key material never reaches swap.
///
/// `mlockall(MCL_FUTURE)` under a finite `RLIMIT_MEMLOCK` would make later allocations (the
/// 64 MiB Argon2id buffer) fail, so it is skipped with a warning in that case.
pub fn harden() -> HardeningReport {
    let mut report = HardeningReport::default();
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        report
            .warnings
            .push(format!("prctl(PR_SET_DUMPABLE, 0) failed: {e}"));
    }
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        report
            .warnings
            .push(format!("setrlimit(RLIMIT_CORE, 0) failed: {e}"));
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => {
            if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
                report.warnings.push(format!(
                    "mlockall failed ({e}); memory may be swapped (give CAP_IPC_LOCK)"
                ));
            }
        }
        Ok((soft, _)) => report.warnings.push(format!(
            "mlockall skipped: RLIMIT_MEMLOCK is {soft} bytes; set LimitMEMLOCK=infinity to lock memory"
        )),
        Err(e) => report
            .warnings
            .push(format!("getrlimit(RLIMIT_MEMLOCK) failed: {e}; mlockall skipped")),
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // Runs in the test process: after it, core dumps are off and the process is not dumpable,
    // which is harmless for the test binary.
    #[test]
    fn harden_disables_core_dumps_and_dumpable() {
        let report = harden();
        let (soft, hard) = getrlimit(Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0), "{report:?}");
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        // Every warning names the measure that failed.
        for w in &report.warnings {
            assert!(w.contains("mlockall") || w.contains("MEMLOCK"), "{w}");
        }
    }
}
