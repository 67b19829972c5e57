//! Chunking one large file on several threads, with the same chunks as a
//! single [`StreamChunker`](holdfast_repo::chunker::StreamChunker) pass.
//!
//! Where a content-defined chunk ends depends only on where it starts and on
//! the `max` bytes after that start ([`Cutter::cut`]). So the file is cut
//! into segments of `segment` bytes and, for a window of segments at a time:
//!
//! 1. (parallel) each segment is read with `pread` into its own buffer,
//!    which also holds the `max` bytes after the segment (the overlap), and
//!    chunked from its first byte as if a chunk started there: its *chain*
//!    of cut points, each exact because the buffer holds the `max` bytes it
//!    depends on;
//! 2. (serial, cheap) the true cut points are followed from the end of the
//!    previous segment's last true chunk: while the true position is not on
//!    this segment's chain, the next cut is computed here on the buffer
//!    (a few chunks per seam at most, typically); once it is on the chain,
//!    the chains agree from there (same start, same bytes, same cut) and the
//!    rest of the segment's cuts are simply read off the chain;
//! 3. (parallel) each segment copies its true chunks out of its buffer and
//!    submits them.
//!
//! The result is byte-for-byte the serial result whatever the segment size
//! or thread count; `tests` checks it against [`StreamChunker`] on random
//! data.
//!
//! Memory: segment buffers (`segment + max` bytes each) come from a
//! [`SegmentPool`] whose byte budget is shared by every split read of a
//! backup; a read that cannot reserve two segments is not split (the caller
//! reads the file as a stream instead), so the budget is a hard bound.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use holdfast_repo::chunker::Cutter;
use rayon::prelude::*;

/// Where split reads get their bytes (a file; a slice in tests).
pub(crate) trait ReadAt: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    /// Everything before `offset` was read: move the file offset there, so
    /// that whoever watches `/proc/PID/fdinfo` sees the read progress as
    /// with a sequential read (`pread` leaves the offset alone).
    fn advance(&self, _offset: u64) {}
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn advance(&self, offset: u64) {
        use std::io::Seek;
        // Only informative: a failure changes nothing.
        let mut f = self;
        let _ = f.seek(std::io::SeekFrom::Start(offset));
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let o = (offset as usize).min(self.len());
        let n = buf.len().min(self.len() - o);
        buf[..n].copy_from_slice(&self[o..o + n]);
        Ok(n)
    }
}

/// The byte budget of all segment buffers of one backup, and the buffers
/// themselves (kept for reuse: a fresh buffer costs a page fault per 4 KiB).
#[derive(Debug)]
pub(crate) struct SegmentPool {
    left: AtomicU64,
    free: Mutex<Vec<Vec<u8>>>,
}

impl SegmentPool {
    pub(crate) fn new(budget: u64) -> SegmentPool {
        SegmentPool {
            left: AtomicU64::new(budget),
            free: Mutex::new(Vec::new()),
        }
    }

    /// Reserve room for up to `want` buffers of `each` bytes; returns how
    /// many were reserved (possibly 0). Never blocks: blocking here while
    /// holding other buffers could deadlock the thread pool.
    fn reserve(&self, want: usize, each: u64) -> usize {
        let mut cur = self.left.load(Ordering::Relaxed);
        loop {
            let n = ((cur / each.max(1)) as usize).min(want);
            if n == 0 {
                return 0;
            }
            match self.left.compare_exchange_weak(
                cur,
                cur - n as u64 * each,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return n,
                Err(now) => cur = now,
            }
        }
    }

    fn release(&self, n: usize, each: u64) {
        self.left.fetch_add(n as u64 * each, Ordering::AcqRel);
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let mut b = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // Only grows (and zeroes) the first time a buffer is used.
        if b.len() < len {
            b.resize(len, 0);
        }
        b
    }

    fn give_back(&self, b: Vec<u8>) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    }

    /// Bytes of budget not reserved right now (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// Why a split read stopped.
pub(crate) enum SplitFail<E> {
    Io(std::io::Error),
    /// The file ended before the size it had when it was opened: it is
    /// changing; the caller reads it again (as a stream).
    Short,
    Emit(E),
    Stopped,
    /// The pool had no room for two segments: read it as a stream.
    NoBudget,
}

/// What a split read produced.
pub(crate) struct Split<T> {
    /// One item per chunk, in file order.
    pub items: Vec<T>,
    /// Bytes of the chunks (the file's size when complete).
    pub bytes: u64,
    /// Bytes chunked by the serial reconciliation at the seams.
    pub seam_bytes: u64,
}

/// One segment: its bytes, plus `max` beyond it, and its chain.
struct Segment {
    start: u64,
    /// End of the segment itself (the next one starts there).
    end: u64,
    buf: Vec<u8>,
    /// Valid bytes in `buf` (`start..start + len` of the file).
    len: usize,
    /// (chunk start, chunk end) along the chain that starts at `start`.
    chain: Vec<(u64, u64)>,
    /// The true chunks whose start lies in this segment.
    cuts: Vec<(u64, u64)>,
}

impl Segment {
    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.start) as usize..(to - self.start) as usize]
    }
}

/// Chunk `size` bytes of `src` on the current rayon pool, `segment` bytes
/// per task, calling `emit` once per chunk (on pool threads, in any order;
/// the returned items are in file order).
pub(crate) fn chunk_split<R, T, E, F, S>(
    src: &R,
    size: u64,
    cutter: &Cutter,
    segment: u64,
    pool: &SegmentPool,
    stop: S,
    emit: F,
) -> Result<Split<T>, SplitFail<E>>
where
    R: ReadAt + ?Sized,
    T: Send,
    E: Send,
    F: Fn(&[u8]) -> Result<T, E> + Sync,
    S: Fn() -> bool + Sync,
{
    let max = u64::from(cutter.params().max);
    // A segment must hold a whole chunk, or a chunk could skip a segment.
    let segment = segment.max(2 * max);
    let each = segment + max;
    let nseg = size.div_ceil(segment) as usize;
    let want = rayon::current_num_threads().max(2).min(nseg);
    let window = pool.reserve(want, each);
    // One segment at a time would be a serial read with extra copies.
    if window < 2.min(nseg) || window == 0 {
        pool.release(window, each);
        return Err(SplitFail::NoBudget);
    }
    let res = split_windows(
        src, size, cutter, segment, window, pool, &stop, &emit, nseg, max,
    );
    pool.release(window, each);
    res
}

#[allow(clippy::too_many_arguments)]
fn split_windows<R, T, E, F, S>(
    src: &R,
    size: u64,
    cutter: &Cutter,
    segment: u64,
    window: usize,
    pool: &SegmentPool,
    stop: &S,
    emit: &F,
    nseg: usize,
    max: u64,
) -> Result<Split<T>, SplitFail<E>>
where
    R: ReadAt + ?Sized,
    T: Send,
    E: Send,
    F: Fn(&[u8]) -> Result<T, E> + Sync,
    S: Fn() -> bool + Sync,
{
    let mut out = Split {
        items: Vec::new(),
        bytes: 0,
        seam_bytes: 0,
    };
    // The start of the next true chunk.
    let mut cur = 0u64;
    let mut first = 0usize;
    while first < nseg {
        if stop() {
            return Err(SplitFail::Stopped);
        }
        let last = (first + window).min(nseg);
        // 1. Read and chain each segment of the window.
        let read: Vec<Result<Segment, SplitFail<E>>> = (first..last)
            .into_par_iter()
            .map(|k| {
                let start = k as u64 * segment;
                let end = (start + segment).min(size);
                let want = ((end + max).min(size) - start) as usize;
                let mut buf = pool.take(want);
                let mut len = 0;
                while len < want {
                    match src.read_at(&mut buf[len..want], start + len as u64) {
                        Ok(0) => {
                            pool.give_back(buf);
                            return Err(SplitFail::Short);
                        }
                        Ok(n) => len += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            pool.give_back(buf);
                            return Err(SplitFail::Io(e));
                        }
                    }
                }
                let mut chain = Vec::new();
                let mut t = start;
                while t < end {
                    let n = t + cutter.cut(&buf[(t - start) as usize..len]) as u64;
                    chain.push((t, n));
                    t = n;
                }
                Ok(Segment {
                    start,
                    end,
                    buf,
                    len,
                    chain,
                    cuts: Vec::new(),
                })
            })
            .collect();
        let mut segs = Vec::with_capacity(read.len());
        let mut failed = None;
        for r in read {
            match r {
                Ok(s) => segs.push(s),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            for s in segs {
                pool.give_back(s.buf);
            }
            return Err(e);
        }
        // 2. Follow the true cuts through the window.
        for s in &mut segs {
            while cur < s.end {
                if let Ok(i) = s.chain.binary_search_by_key(&cur, |c| c.0) {
                    // On the chain: it agrees with the truth from here on.
                    s.cuts.extend_from_slice(&s.chain[i..]);
                    cur = s.chain.last().map_or(cur, |c| c.1);
                    break;
                }
                let from = (cur - s.start) as usize;
                let n = cur + cutter.cut(&s.buf[from..s.len]) as u64;
                out.seam_bytes += n - cur;
                s.cuts.push((cur, n));
                cur = n;
            }
        }
        // 3. Hand out the chunks.
        let items: Vec<Result<Vec<T>, SplitFail<E>>> = segs
            .par_iter()
            .map(|s| {
                let mut v = Vec::with_capacity(s.cuts.len());
                for &(a, b) in &s.cuts {
                    if stop() {
                        return Err(SplitFail::Stopped);
                    }
                    v.push(emit(s.bytes(a, b)).map_err(SplitFail::Emit)?);
                }
                Ok(v)
            })
            .collect();
        for s in segs {
            pool.give_back(s.buf);
        }
        for r in items {
            out.items.extend(r?);
        }
        src.advance(cur);
        first = last;
    }
    out.bytes = cur;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_repo::chunker::{ChunkerParams, Gear, StreamChunker};

    const SMALL: ChunkerParams = ChunkerParams {
        min: 2048,
        avg: 8192,
        max: 65536,
    };

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64 ^ seed;
        (0..n)
            .map(|_| {
                x ^= x << 7;
                x ^= x >> 9;
                x as u8
            })
            .collect()
    }

    fn serial(d: &[u8], gear: &Gear) -> Vec<Vec<u8>> {
        let mut c = StreamChunker::new(d, gear.clone(), SMALL);
        let mut out = vec![];
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch);
        }
        out
    }

    fn split(d: &[u8], gear: &Gear, segment: u64, threads: usize, budget: u64) -> Vec<Vec<u8>> {
        let pool = SegmentPool::new(budget);
        let cutter = Cutter::new(gear.clone(), SMALL);
        let tp = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let r = tp.install(|| {
            chunk_split::<_, _, (), _, _>(
                d,
                d.len() as u64,
                &cutter,
                segment,
                &pool,
                || false,
                |c| Ok(c.to_vec()),
            )
        });
        assert_eq!(pool.left(), budget, "the budget is given back");
        match r {
            Ok(s) => {
                assert_eq!(s.bytes, d.len() as u64);
                s.items
            }
            Err(SplitFail::NoBudget) => panic!("split read: no budget"),
            Err(SplitFail::Short) => panic!("split read: short"),
            Err(_) => panic!("split read failed"),
        }
    }

    #[test]
    fn same_chunks_as_a_serial_pass_whatever_the_segment_and_threads() {
        let gear = Gear::from_key(&[7; 32]);
        for (n, seed) in [(3_000_000, 1), (1_000_003, 2), (400_000, 3)] {
            let d = data(n, seed);
            let want = serial(&d, &gear);
            for segment in [131_072u64, 200_000, 1 << 20] {
                for threads in [1, 2, 5] {
                    let got = split(&d, &gear, segment, threads, u64::MAX / 2);
                    assert_eq!(got, want, "n={n} segment={segment} threads={threads}");
                }
            }
        }
        // Repetitive data: every position is a candidate, chains merge late.
        let d: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            split(&d, &gear, 131_072, 3, u64::MAX / 2),
            serial(&d, &gear)
        );
        let z = vec![0u8; 1_000_000];
        assert_eq!(
            split(&z, &gear, 131_072, 3, u64::MAX / 2),
            serial(&z, &gear)
        );
    }

    #[test]
    fn budget_bounds_the_window_and_refuses_below_two_segments() {
        let gear = Gear::from_key(&[7; 32]);
        let d = data(2_000_000, 9);
        let each = 131_072 + 65_536;
        // Room for exactly two segments at a time: still exact.
        assert_eq!(split(&d, &gear, 131_072, 4, 2 * each), serial(&d, &gear));
        // Room for one: not split.
        let pool = SegmentPool::new(each);
        let cutter = Cutter::new(gear, SMALL);
        let r = chunk_split::<_, _, (), _, _>(
            &d[..],
            d.len() as u64,
            &cutter,
            131_072,
            &pool,
            || false,
            |c| Ok(c.len()),
        );
        assert!(matches!(r, Err(SplitFail::NoBudget)));
        assert_eq!(pool.left(), each);
    }

    #[test]
    fn a_file_that_shrank_is_reported_short() {
        let gear = Gear::from_key(&[7; 32]);
        let d = data(1_000_000, 4);
        let pool = SegmentPool::new(u64::MAX / 2);
        let cutter = Cutter::new(gear, SMALL);
        let r = chunk_split::<_, _, (), _, _>(
            &d[..],
            2_000_000,
            &cutter,
            131_072,
            &pool,
            || false,
            |c| Ok(c.len()),
        );
        assert!(matches!(r, Err(SplitFail::Short)));
    }
}
