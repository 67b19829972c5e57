//! Allocator settings for the process, chosen per command.
//!
//! glibc's malloc raises its mmap threshold each time a large block is
//! freed, up to 32 MiB: after the first few ranged reads, buffers of a few
//! MiB come from the heap, and since they are freed on other threads than
//! the one that read them (the storage layer reads on blocking threads),
//! freed space piles up in several arenas. A long job that only streams
//! (garbage collection reads a window, seals it again and writes it out)
//! then grows its resident memory for nothing. A fixed threshold gives
//! every large buffer its own mapping, returned to the system when freed.
//! Backups keep the default: they reuse their pack buffers, and a fresh
//! mapping per pack would cost page faults on the fast path.

/// Blocks from this size up get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Return large freed buffers to the system at once (see the module docs).
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; it is called before
    // the command starts its threads' work and is safe to call any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
