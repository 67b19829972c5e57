//! Content-defined chunking: FastCDC (2020) with a key-derived gear table.
//!
//! We use the `fastcdc` crate's cut-point search (`cut_gear`) but not its
//! stock or XOR-seeded gear tables: the whole 256-entry table is generated
//! from the repository's chunker key (BLAKE3 XOF), so the boundaries, and
//! hence chunk sizes, reveal nothing about content to someone without the key.
//!
//! [`StreamChunker`] reads any `Read` (a file, a `pg_dump` pipe) into one
//! buffer and hands out owned chunks; memory is bounded by twice the maximum
//! chunk size.

use std::io::Read;

use fastcdc::v2020::{cut_gear, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// Documents: 512 KiB / 1 MiB / 8 MiB (DESIGN.md).
    pub const DOCUMENTS: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };
    /// Database dumps dedup better with smaller chunks: 64 / 128 / 512 KiB.
    pub const DATABASE: ChunkerParams = ChunkerParams {
        min: 64 * 1024,
        avg: 128 * 1024,
        max: 512 * 1024,
    };

    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min >= 64
            && self.min < self.avg
            && self.avg < self.max
            && self.max <= 64 * 1024 * 1024
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunker parameters {self:?}: need even sizes with 64 <= min < avg < max <= 64 MiB"
            ))
        }
    }
}

/// A keyed gear table and its shifted twin, as `cut_gear` wants them.
#[derive(Clone)]
pub struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Gear {
    pub fn from_key(key: &[u8; 32]) -> Gear {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .update(b"gear table")
            .finalize_xof()
            .fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for i in 0..256 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            gear[i] = u64::from_le_bytes(w);
            gear_ls[i] = gear[i] << 1;
        }
        Gear { gear, gear_ls }
    }
}

/// The cut-point function on its own, for callers that chunk regions of a
/// stream on several threads (see `holdfast_sources`' split reads).
///
/// Where a chunk ends depends only on where it starts and on the bytes up
/// to `max` after that start: [`Cutter::cut`] on a slice that begins at a
/// chunk start and holds at least `max` bytes (or everything to the end of
/// the stream) gives exactly the chunk that [`StreamChunker`] gives there.
#[derive(Clone)]
pub struct Cutter {
    gear: Gear,
    params: ChunkerParams,
    masks: (u64, u64),
}

impl Cutter {
    pub fn new(gear: Gear, params: ChunkerParams) -> Cutter {
        let masks = select_masks(params.avg as usize, Normalization::Level1);
        Cutter {
            gear,
            params,
            masks,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the chunk starting at `data[0]`. `data` must hold at least
    /// `params.max` bytes, or every byte left in the stream; an empty slice
    /// gives 0.
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        let (mask_s, mask_l) = self.masks;
        let (_, len) = cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.gear[..],
            &self.gear.gear_ls[..],
        );
        len.max(1).min(data.len())
    }
}

/// Splits a byte stream into content-defined chunks.
pub struct StreamChunker<R> {
    source: R,
    cutter: Cutter,
    params: ChunkerParams,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(source: R, gear: Gear, params: ChunkerParams) -> Self {
        StreamChunker::with_buffer(source, gear, params, Vec::new())
    }

    /// Like [`StreamChunker::new`] but reusing `buf` (see [`StreamChunker::into_parts`]):
    /// a backup of many small files must not allocate and zero twice the
    /// maximum chunk size for each of them.
    pub fn with_buffer(source: R, gear: Gear, params: ChunkerParams, mut buf: Vec<u8>) -> Self {
        // Filled by appending (see `fill`): nothing is zeroed first, and
        // only the bytes a source has are ever touched.
        buf.clear();
        StreamChunker {
            source,
            cutter: Cutter::new(gear, params),
            params,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Take back the source and the buffer for reuse.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.source, self.buf)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.params.max as usize;
        if self.end - self.start >= max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(self.end);
        }
        // Up to twice the largest chunk, read into the buffer's spare
        // room: a buffer zeroed first cost a backup of many small files
        // 16 MiB of page faults and memset per reader thread for bytes
        // never read. `read_to_end` of a `Take` stops at the room or at
        // the end of the source (retrying interrupted reads), as the
        // loop of reads it replaces did.
        let room = 2 * max - self.end;
        self.buf.reserve_exact(room);
        let read = (&mut self.source)
            .take(room as u64)
            .read_to_end(&mut self.buf);
        // Bytes read before an error are kept, as they were counted before.
        let n = self.buf.len() - self.end;
        self.end = self.buf.len();
        read?;
        if n < room {
            self.eof = true;
        }
        Ok(())
    }

    /// The next chunk, `None` at end of stream.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.fill()?;
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return Ok(None);
        }
        // `fill` leaves at least `max` bytes or everything up to the end.
        let len = self.cutter.cut(avail);
        let chunk = avail[..len].to_vec();
        self.start += len;
        Ok(Some(chunk))
    }

    /// Take back the source (e.g. to wait on a child process).
    pub fn into_inner(self) -> R {
        self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 7;
                x ^= x >> 9;
                x as u8
            })
            .collect()
    }

    fn chunks(d: &[u8], key: [u8; 32], p: ChunkerParams) -> Vec<Vec<u8>> {
        let mut c = StreamChunker::new(d, Gear::from_key(&key), p);
        let mut out = vec![];
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch);
        }
        out
    }

    const SMALL: ChunkerParams = ChunkerParams {
        min: 2048,
        avg: 8192,
        max: 65536,
    };

    #[test]
    fn reassembles_and_respects_bounds() {
        let d = data(1_000_000);
        let cs = chunks(&d, [1; 32], SMALL);
        assert_eq!(cs.concat(), d);
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= 2048 && c.len() <= 65536);
        }
        assert!(cs.len() > 50, "average near 8 KiB");
    }

    #[test]
    fn boundaries_depend_on_key_and_resync_after_edit() {
        let d = data(500_000);
        let a = chunks(&d, [1; 32], SMALL);
        let b = chunks(&d, [2; 32], SMALL);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
        // Insert bytes near the start: most later chunks are unchanged.
        let mut e = d.clone();
        e.splice(1000..1000, b"inserted text".iter().copied());
        let c = chunks(&e, [1; 32], SMALL);
        let same = c.iter().filter(|x| a.contains(x)).count();
        assert!(same + 3 >= a.len(), "{same} of {} chunks survive", a.len());
    }

    /// A reader that hands out its bytes in short, uneven reads with an
    /// interruption now and then, as pipes and network files do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: u64,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.step = self.step.wrapping_mul(6364136223846793005).wrapping_add(1);
            if self.step.is_multiple_of(7) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = (self.step >> 33) as usize % 70_000 + 1;
            let n = n.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The cuts of the whole stream in memory: what the streaming
    /// chunker must reproduce whatever its reads and buffer.
    fn whole_cuts(d: &[u8], cutter: &Cutter) -> Vec<usize> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < d.len() {
            let n = cutter.cut(&d[at..]);
            out.push(n);
            at += n;
        }
        out
    }

    #[test]
    fn streamed_cuts_are_the_whole_streams_cuts() {
        let gear = Gear::from_key(&[7; 32]);
        let cutter = Cutter::new(gear.clone(), SMALL);
        let max = SMALL.max as usize;
        let mut buf = Vec::new();
        for len in [
            0,
            1,
            2047,
            8192,
            max - 1,
            max,
            max + 1,
            2 * max,
            2 * max + 3,
            9 * max + 17,
        ] {
            let d = data(len + 1)[1..].to_vec();
            let want = whole_cuts(&d, &cutter);
            // A reused buffer holds the previous source's bytes: none may leak.
            let r = Trickle {
                data: &d,
                step: len as u64,
            };
            let mut c =
                StreamChunker::with_buffer(r, gear.clone(), SMALL, std::mem::take(&mut buf));
            let mut got = Vec::new();
            let mut joined = Vec::new();
            while let Some(ch) = c.next_chunk().expect("in memory") {
                got.push(ch.len());
                joined.extend_from_slice(&ch);
            }
            assert_eq!(got, want, "length {len}");
            assert_eq!(joined, d, "length {len}");
            buf = c.into_parts().1;
            assert!(buf.capacity() <= 2 * max + 64, "the buffer stays bounded");
        }
    }

    #[test]
    fn a_read_error_mid_fill_is_returned_as_it_is() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = out.len().min(self.0);
                out[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let mut c = StreamChunker::new(Failing(100), Gear::from_key(&[1; 32]), SMALL);
        let err = c.next_chunk().expect_err("the source failed");
        assert_eq!(err.to_string(), "disk on fire");
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(chunks(&[], [1; 32], SMALL).is_empty());
    }
}
