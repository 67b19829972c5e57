//! A read-only memory map of a whole file, or an owned buffer standing in
//! for one (an index kept in memory when there is no cache directory).
//!
//! Why a map and not reads: an index of tens of millions of blobs is
//! gigabytes, and a backup looks up a small, random part of it. Mapped
//! pages are read on first touch and are clean page cache the kernel may
//! drop at any time, so the resident memory of a lookup structure is what
//! the workload touches, not what the repository holds.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Bytes of a mapped file or of an owned buffer.
pub(crate) enum Region {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl Region {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Region::Map(m) => m.bytes(),
            Region::Owned(v) => v,
        }
    }
}

/// A private, read-only mapping of a whole file.
pub(crate) struct Mmap {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and never mutated through this type; the
// pointer is only turned into a shared slice.
unsafe impl Send for Mmap {}
// SAFETY: as above: shared read-only access from any thread is sound.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Map all of `file` read-only. The caller must own the file's
    /// immutability: cache files are written to a temporary name
    /// and renamed into place, never modified after that (a replacement is a
    /// new inode; unlinking leaves existing maps valid).
    pub(crate) fn map(file: &File) -> std::io::Result<Mmap> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(Mmap {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh shared read-only mapping of a valid descriptor; the
        // result is checked before use, and the descriptor may be closed
        // afterwards (the mapping holds its own reference to the file).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Lookups are random: no read-ahead of neighbouring pages, which
        // would only inflate the resident set. Advice failing is harmless.
        // SAFETY: advice on the range just mapped.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_RANDOM);
        }
        Ok(Mmap { ptr, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping exactly the range mapped in `map`.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}
