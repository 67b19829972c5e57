//! Argon2's working memory, mapped fresh from the kernel.
//!
//! The `argon2` crate allocates its blocks with `alloc_zeroed` at a 64-byte
//! alignment, which the system allocator serves with `memset`: every one of
//! the 16,384 pages of a 64 MiB slot is faulted in by one thread before the
//! first pass starts. On the virtual machines we run on, a first-touch page
//! fault costs microseconds, and that serial zeroing took 60 ms of the
//! 155 ms a password open spent in the KDF. An anonymous mapping is zero
//! already, and its pages are faulted in by the lanes' threads as they
//! first write, in parallel.
//!
//! Base pages, not transparent huge pages (`MADV_NOHUGEPAGE`): such a VM
//! hands free 2 MiB blocks back to its host after a few seconds (free page
//! reporting), so a huge page is then a fresh host allocation too. Faulting
//! 64 MiB in from two threads took 53-64 ms as huge pages and 26-32 ms as
//! base pages after a few idle seconds (only right after another process
//! freed its huge pages were they faster, 7 ms); 10 interleaved opens
//! (`holdfast snapshots`, mostly this KDF), each after 5 idle seconds as
//! between scheduled backups: median 0.136 s and 0.065 s of system CPU
//! with base pages, 0.150 s and 0.102 s with huge pages. On bare metal both
//! cost a few milliseconds. The bytes are the same either way: only where
//! the memory comes from changes.
//!
//! Unmapping returns the pages to the kernel, which zeroes them before any
//! other use, so the password-derived state does not outlive the KDF in
//! this process's heap.

use argon2::Block;

/// `blocks` argon2 blocks in a private anonymous mapping.
pub(crate) struct KdfMemory {
    /// The mapping (page aligned; what `munmap` gets).
    map: *mut libc::c_void,
    len: usize,
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
        // SAFETY: a fresh private anonymous mapping; the result is checked
        // before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        // Advice only (see the module docs); refused, the mapping works as is.
        // SAFETY: advice on exactly the mapping just made.
        unsafe {
            libc::madvise(map, len, libc::MADV_NOHUGEPAGE);
        }
        Some(KdfMemory { map, len, blocks })
    }

    /// Unmap on a thread of its own: handing 16,384 pages back to the
    /// kernel took about 10 ms, which the open waiting for this key need
    /// not wait for.
    pub(crate) fn release_in_background(self) {
        // Should no thread start, the closure (and this memory with it)
        // is dropped, so unmapped, right here.
        let _ = std::thread::Builder::new()
            .name("holdfast-kdf-unmap".into())
            .spawn(move || drop(self));
    }
}

impl AsMut<[Block]> for KdfMemory {
    fn as_mut(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page aligned (more than a Block's 64
        // bytes) and exactly `blocks` blocks long, and lives as long as
        // `self`; anonymous memory reads as zeros, and all-zero bytes are a
        // valid Block (an array of u64). `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.map.cast::<Block>(), self.blocks) }
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, once; no
        // borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.map, self.len);
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
