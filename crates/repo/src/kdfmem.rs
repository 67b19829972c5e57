//! Argon2's working memory, mapped fresh from the kernel.
//!
//! The `argon2` crate allocates its blocks with `alloc_zeroed` at a 64-byte
//! alignment, which the system allocator serves with `memset`: every one of
//! the 16,384 pages of a 64 MiB slot is faulted in by one thread before the
//! first pass starts. On the virtual machines we run on, a first-touch page
//! fault costs microseconds, and that serial zeroing took 60 ms of the
//! 155 ms a password open spent in the KDF. An anonymous mapping is zero
//! already; asked for transparent huge pages (`MADV_HUGEPAGE`; the common
//! `madvise` setting of `transparent_hugepage` honours it), 64 MiB is 32
//! faults, taken by the lanes' threads as they first write. Without huge
//! pages the faults still spread over those threads. The bytes are the
//! same either way: only where the memory comes from changes.
//!
//! Unmapping returns the pages to the kernel, which zeroes them before any
//! other use, so the password-derived state does not outlive the KDF in
//! this process's heap.

use argon2::Block;

/// Huge page size on x86-64 and arm64 (4 KiB base pages): the mapping is
/// aligned to it so that every 2 MiB of it can be one huge page.
const HUGE: usize = 2 << 20;

/// `blocks` argon2 blocks in a private anonymous mapping.
pub(crate) struct KdfMemory {
    /// The whole mapping (what `munmap` gets).
    map: *mut libc::c_void,
    map_len: usize,
    /// Where the blocks start inside it (huge-page aligned).
    start: *mut Block,
    blocks: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another
// thread moves that ownership.
unsafe impl Send for KdfMemory {}

impl KdfMemory {
    /// Map memory for `blocks` blocks; `None` if the kernel refuses (the
    /// caller then lets argon2 allocate as usual).
    pub(crate) fn new(blocks: usize) -> Option<KdfMemory> {
        let len = blocks.checked_mul(Block::SIZE)?;
        if len == 0 {
            return None;
        }
        let map_len = len.checked_add(HUGE)?;
        // SAFETY: a fresh private anonymous mapping; the result is checked
        // before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let offset = (HUGE - (map as usize) % HUGE) % HUGE;
        // SAFETY: offset < HUGE, and the mapping is len + HUGE long, so
        // [start, start + len) lies inside it.
        let start = unsafe { map.cast::<u8>().add(offset) };
        // Advice only: refused (huge pages off), the mapping works as is.
        // SAFETY: advice on a range inside the mapping just made.
        unsafe {
            libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE);
        }
        Some(KdfMemory {
            map,
            map_len,
            start: start.cast(),
            blocks,
        })
    }
}

impl AsMut<[Block]> for KdfMemory {
    fn as_mut(&mut self) -> &mut [Block] {
        // SAFETY: `start` is page aligned (more than a Block's 64 bytes),
        // the range holds `blocks` blocks inside the mapping, which lives as
        // long as `self`; anonymous memory reads as zeros, and all-zero
        // bytes are a valid Block (an array of u64). `&mut self` makes the
        // borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.start, self.blocks) }
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, once; no
        // borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{Algorithm, Argon2, Params, Version};

    /// The mapped memory gives argon2 the same output as its own
    /// allocation, for several lane counts and sizes.
    #[test]
    fn same_key_as_argon2s_own_memory() {
        for (m, t, p) in [(64, 1, 1), (256, 2, 4), (8 * 1024, 3, 4), (4100, 1, 3)] {
            let params = Params::new(m, t, p, Some(32)).expect("params");
            let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            let mut want = [0u8; 32];
            a.hash_password_into(b"pw", b"saltsaltsalt", &mut want)
                .expect("own memory");
            let mut got = [0u8; 32];
            let mem = KdfMemory::new(params.block_count()).expect("mapped");
            a.hash_password_into_with_memory(b"pw", b"saltsaltsalt", &mut got, mem)
                .expect("mapped memory");
            assert_eq!(got, want, "m={m} t={t} p={p}");
        }
    }
}
