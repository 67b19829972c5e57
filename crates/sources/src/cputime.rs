//! CPU time of the calling thread and of the whole process, for the
//! per-stage figures of a backup ([`crate::backup::CpuStats`]): they show
//! how much of the work runs on one thread, which is what limits the
//! speed-up on more cores (Amdahl's law).

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter for the duration of the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        // Only with an invalid clock id; a figure of zero is harmless.
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time (user + system) every thread of the process has used so far.
pub fn process() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}
