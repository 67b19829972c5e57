//! Per-blob zstd compression with a raw fallback.
//!
//! Most bytes in a clinical document store are scans and PDFs that do not
//! compress. Running zstd over all of them would cost most of a backup's CPU
//! for nothing, so we first compress a small sample at the fastest level; if
//! that does not shrink by a few percent we store the blob raw. Otherwise we
//! compress the whole blob at the configured level and still keep the raw
//! form if the result is not smaller.
//!
//! Encoded form (this is what gets encrypted): one flag byte, then the body.
//! Flag 0: body is the raw data. Flag 1: body is one zstd frame. Flag 2
//! (format 2): body is one `.xz` stream (LZMA2, no check: the GCM tag and
//! the blob id already authenticate the data).
//!
//! **Frames** (format 2): several small blobs of one source (consecutive
//! 16 KiB blocks of a database file) encoded together, so the compressor
//! sees 1 MiB of context instead of 16 KiB. Compressing PostgreSQL blocks
//! one by one cost 1.3x the bytes of whole-file compression. A frame's
//! encoding is chosen adaptively ([`Encoder::encode_frame_into`]): zstd at
//! the configured level, and LZMA2 when zstd already shrinks the frame to a
//! fifth or less. On such structured pages (fixed-stride tuples, B-tree
//! leaves) LZMA2's cheap repeated-offset matches and position contexts
//! halve zstd's size again at about 100 MB/s; on text-like or random frames
//! it gains a few percent at a fifth of that speed, so it is not tried
//! there (measured on the pgbench and EHR clusters; docs/benchmarks.md).

use std::io;

use liblzma::stream::{Action, Check, Status, Stream};

use crate::error::{RepoError, Result};

pub const FLAG_RAW: u8 = 0;
pub const FLAG_ZSTD: u8 = 1;
pub const FLAG_XZ: u8 = 2;

/// The largest decoded size an encoded blob or frame may have (the largest
/// chunk is 8 MiB): a hostile object cannot make a reader allocate more.
pub const MAX_DECODED: usize = 16 * 1024 * 1024;
/// LZMA2 is tried on a frame only if zstd shrank it to this share or less.
const XZ_TRY_RATIO: f64 = 0.2;
/// xz preset 0: a 256 KiB dictionary covers a 1 MiB frame's repeats well
/// enough, at 3x the speed of the default preset.
const XZ_PRESET: u32 = 0;
/// Memory the xz decoder may use (preset 0 needs about 1 MiB).
const XZ_DECODER_MEMLIMIT: u64 = 64 * 1024 * 1024;

const SAMPLE: usize = 32 * 1024;
/// A sample must shrink below this share of its size for the blob to be compressed.
const SAMPLE_RATIO: f64 = 0.95;

/// A reusable compressor (keeps zstd contexts per thread).
pub struct Encoder {
    level: i32,
    full: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
}

impl Encoder {
    pub fn new(level: i32) -> Result<Encoder> {
        let mk = |l| {
            zstd::bulk::Compressor::new(l)
                .map_err(|e| RepoError::Invalid(format!("zstd level {l}: {e}")))
        };
        Ok(Encoder {
            level,
            full: mk(level)?,
            probe: mk(1)?,
        })
    }

    /// Encode `data` as flag + body.
    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(data, &mut out);
        out
    }

    /// Append the encoding of `data` (flag + body) to `out`. Used by the
    /// pack writer to encode straight into the pack buffer: on the backup
    /// hot path every avoided copy of a 1 MiB chunk counts.
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // Up to two samples' worth, probing would cost about as much as
        // compressing outright (a 16 KiB database block would be compressed
        // twice): just try, and keep the raw form if it does not shrink.
        let small = data.len() <= 2 * SAMPLE;
        if small || self.worth_compressing(data) {
            self.zstd_or_raw_into(data, out);
        } else {
            push_raw(data, out);
        }
    }

    /// Append the encoding of a frame (the concatenated data of several
    /// blobs, see the module docs): as [`Encoder::encode_into`], then
    /// LZMA2 instead when zstd already shrank it to a fifth or less and
    /// LZMA2 does better still.
    pub fn encode_frame_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.encode_into(data, out);
        if out[start] != FLAG_ZSTD {
            return;
        }
        let zstd_len = out.len() - start - 1;
        if zstd_len as f64 > data.len() as f64 * XZ_TRY_RATIO {
            return;
        }
        if let Some(xz) = xz_encode(data, zstd_len) {
            out.truncate(start);
            out.push(FLAG_XZ);
            out.extend_from_slice(&xz);
        }
    }

    /// Append the encoding of a frame of unrelated blobs (small files
    /// gathered together): zstd over the whole frame without the sample
    /// probe, since one sample cannot speak for files that differ (a scan
    /// beside a note); zstd passes incompressible stretches at GB/s and
    /// the raw form is still kept if the whole does not shrink. No LZMA2:
    /// its gain is for database pages, not for documents.
    pub fn encode_mixed_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.zstd_or_raw_into(data, out);
    }

    /// zstd at the configured level, or the raw form when that does not
    /// shrink `data` (or the level is 0, or `data` is tiny).
    fn zstd_or_raw_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if self.level > 0 && data.len() >= 64 {
            let bound = zstd::zstd_safe::compress_bound(data.len());
            out.push(FLAG_ZSTD);
            out.reserve(bound);
            // Into the spare room as it is: zeroing the bound first cost a
            // memset of every byte a backup compresses.
            let mut tail = Tail::after(out);
            if let Ok(n) = self.full.compress_to_buffer(data, &mut tail) {
                if n < data.len() {
                    return;
                }
            }
            out.truncate(start);
        }
        push_raw(data, out);
    }

    fn worth_compressing(&mut self, data: &[u8]) -> bool {
        if data.len() < 64 {
            return false;
        }
        // Sample the middle: file headers are often more compressible than
        // the payload that follows.
        let sample = if data.len() <= SAMPLE {
            data
        } else {
            let mid = data.len() / 2 - SAMPLE / 2;
            &data[mid..mid + SAMPLE]
        };
        match self.probe.compress(sample) {
            Ok(c) => (c.len() as f64) < sample.len() as f64 * SAMPLE_RATIO,
            Err(_) => false,
        }
    }

    pub fn level(&self) -> i32 {
        self.level
    }
}

/// The spare capacity of a `Vec` past its current length, as a zstd
/// output buffer: what zstd writes is appended to the vector.
struct Tail<'a> {
    vec: &'a mut Vec<u8>,
    /// The vector's length when this began: zstd's byte 0.
    start: usize,
}

impl<'a> Tail<'a> {
    fn after(vec: &'a mut Vec<u8>) -> Tail<'a> {
        let start = vec.len();
        Tail { vec, start }
    }
}

// SAFETY: `as_mut_ptr` and `capacity` describe exactly the vector's
// allocation past `start` (allocated, possibly uninitialised, bytes zstd
// may write), and `filled_until(n)` is called by zstd-safe only after zstd
// wrote `n <= capacity()` bytes there, so the new length covers
// initialised bytes inside the allocation.
unsafe impl zstd::zstd_safe::WriteBuf for Tail<'_> {
    fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    fn capacity(&self) -> usize {
        self.vec.capacity() - self.start
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        // In bounds: `start` is at most the length, which is at most the
        // capacity (one past the end is allowed).
        self.vec.as_mut_ptr().wrapping_add(self.start)
    }

    unsafe fn filled_until(&mut self, n: usize) {
        // SAFETY: see the impl's comment.
        unsafe { self.vec.set_len(self.start + n) }
    }
}

/// Append `data` stored as it is (flag 0).
fn push_raw(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 1);
    out.push(FLAG_RAW);
    out.extend_from_slice(data);
}

/// LZMA2 (`.xz`, no check) of `data`, or `None` if it is not shorter than
/// `beat` bytes (or liblzma fails: the caller keeps what it has).
fn xz_encode(data: &[u8], beat: usize) -> Option<Vec<u8>> {
    let mut s = Stream::new_easy_encoder(XZ_PRESET, Check::None).ok()?;
    // Never more room than a stored (uncompressed) body would take.
    let beat = beat.min(data.len() + 1024);
    let mut out = Vec::with_capacity(beat);
    let mut input = data;
    loop {
        let before = s.total_in();
        let status = s.process_vec(input, &mut out, Action::Finish).ok()?;
        input = &input[(s.total_in() - before) as usize..];
        if matches!(status, Status::StreamEnd) {
            return (out.len() < beat).then_some(out);
        }
        if out.len() >= beat {
            return None;
        }
        out.reserve((beat - out.len()).max(4096));
    }
}

/// Decode an `.xz` body into `out`, at most [`MAX_DECODED`] bytes.
fn xz_decode(body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut s = Stream::new_stream_decoder(XZ_DECODER_MEMLIMIT, 0)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut input = body;
    loop {
        if out.capacity() == out.len() {
            if out.len() >= MAX_DECODED {
                return Err(io::Error::other("decodes to more than the largest frame"));
            }
            out.reserve((out.len()).clamp(64 * 1024, MAX_DECODED - out.len()));
        }
        let before = s.total_in();
        let status = s
            .process_vec(input, out, Action::Finish)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let used = (s.total_in() - before) as usize;
        input = &input[used..];
        if matches!(status, Status::StreamEnd) {
            if !input.is_empty() {
                return Err(io::Error::other("trailing bytes after the stream"));
            }
            return Ok(());
        }
        if used == 0 && out.capacity() > out.len() {
            return Err(io::Error::other("truncated stream"));
        }
    }
}

/// Reusable decoding state: a zstd context and an output buffer, so that
/// decoding many blobs costs no allocation per blob.
#[derive(Default)]
pub struct Decoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    scratch: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decode flag + body; the result is at least `need` bytes long (the
    /// index says where a blob ends inside its frame) and at most
    /// [`MAX_DECODED`], so a corrupt or hostile object can neither make us
    /// allocate wildly nor hand back a short blob. Raw bodies are returned
    /// in place. `what` names the blob for errors.
    pub fn decode<'a>(
        &'a mut self,
        encoded: &'a [u8],
        need: usize,
        what: &str,
    ) -> Result<&'a [u8]> {
        let (flag, body) = encoded
            .split_first()
            .ok_or_else(|| RepoError::corrupt(what, "empty blob"))?;
        let data: &[u8] = match *flag {
            FLAG_RAW => body,
            FLAG_ZSTD => {
                // Our encoder records the content size; without it the
                // blob must decode to exactly what the index says.
                let size = match zstd::zstd_safe::get_frame_content_size(body) {
                    Ok(Some(n)) if n <= MAX_DECODED as u64 => n as usize,
                    Ok(Some(n)) => {
                        return Err(RepoError::corrupt(
                            what,
                            format!("zstd frame claims {n} bytes, more than the largest frame"),
                        ))
                    }
                    _ => need.max(1),
                };
                self.scratch.clear();
                self.scratch.reserve(size);
                if self.zstd.is_none() {
                    self.zstd = Some(zstd::bulk::Decompressor::new().map_err(|e| {
                        RepoError::corrupt(what, format!("cannot create a zstd context: {e}"))
                    })?);
                }
                let d = self
                    .zstd
                    .as_mut()
                    .ok_or_else(|| RepoError::corrupt(what, "no zstd context"))?;
                d.decompress_to_buffer(body, &mut self.scratch)
                    .map_err(|e| RepoError::corrupt(what, format!("zstd: {e}")))?;
                &self.scratch
            }
            FLAG_XZ => {
                self.scratch.clear();
                xz_decode(body, &mut self.scratch)
                    .map_err(|e| RepoError::corrupt(what, format!("xz: {e}")))?;
                &self.scratch
            }
            flag => {
                return Err(RepoError::corrupt(
                    what,
                    format!("unknown encoding flag {flag}"),
                ))
            }
        };
        if data.len() < need {
            return Err(RepoError::corrupt(
                what,
                format!("decodes to {} bytes, the index needs {need}", data.len()),
            ));
        }
        Ok(data)
    }
}

/// Like [`decode`], consuming the buffer: a raw blob costs no copy.
pub fn decode_owned(mut encoded: Vec<u8>, need: usize, what: &str) -> Result<Vec<u8>> {
    if encoded.first() == Some(&FLAG_RAW) {
        if encoded.len() - 1 < need {
            return Err(RepoError::corrupt(
                what,
                format!("holds {} bytes, the index needs {need}", encoded.len() - 1),
            ));
        }
        encoded.remove(0);
        return Ok(encoded);
    }
    decode(&encoded, need, what)
}

/// Decode flag + body back to the data (at least `need` bytes, see
/// [`Decoder::decode`]); `what` names the blob for errors.
pub fn decode(encoded: &[u8], need: usize, what: &str) -> Result<Vec<u8>> {
    let mut d = Decoder::new();
    d.decode(encoded, need, what).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compresses_random_stays_raw() {
        let mut enc = Encoder::new(3).unwrap();
        let text = "patient encounter observation ".repeat(4000).into_bytes();
        let e = enc.encode(&text);
        assert_eq!(e[0], FLAG_ZSTD);
        assert!(e.len() < text.len() / 10);
        assert_eq!(decode(&e, text.len(), "t").unwrap(), text);

        let random: Vec<u8> = (0..100_000).map(|_| rand::random::<u8>()).collect();
        let e = enc.encode(&random);
        assert_eq!(e[0], FLAG_RAW);
        assert_eq!(decode(&e, random.len(), "r").unwrap(), random);

        let tiny = b"ab".to_vec();
        assert_eq!(decode(&enc.encode(&tiny), 2, "x").unwrap(), tiny);
        assert!(decode(&[], 0, "x").is_err());
        assert!(decode(&[9, 1], 1, "x").is_err());
    }

    /// Encodings are appended after what the buffer already holds (a
    /// pack being filled), whichever form wins, and leave it untouched.
    #[test]
    fn encodings_append_to_what_is_there() {
        let mut enc = Encoder::new(1).unwrap();
        let text = "observation ".repeat(20_000).into_bytes();
        let random: Vec<u8> = (0..70_000).map(|_| rand::random::<u8>()).collect();
        let mut out = b"earlier blobs".to_vec();
        let mut ends = vec![out.len()];
        for (i, d) in [&text, &random, &text].into_iter().enumerate() {
            // Spare room of old bytes, as a reused pack buffer has.
            if i == 1 {
                out.reserve(1 << 20);
            }
            enc.encode_into(d, &mut out);
            ends.push(out.len());
        }
        assert_eq!(&out[..13], b"earlier blobs");
        assert_eq!(out[ends[0]], FLAG_ZSTD);
        assert_eq!(out[ends[1]], FLAG_RAW);
        for (i, d) in [&text, &random, &text].into_iter().enumerate() {
            let e = &out[ends[i]..ends[i + 1]];
            assert_eq!(decode(e, d.len(), "t").unwrap(), d.as_slice());
        }
    }

    /// A frame of structured pages (fixed-stride records, as in a heap
    /// table) gets LZMA2 when it beats zstd; text-like and random frames
    /// keep zstd or raw; every form decodes back.
    #[test]
    fn frames_pick_lzma2_only_where_it_pays() {
        let mut enc = Encoder::new(3).unwrap();
        let mut pages = Vec::new();
        for i in 0u32..8192 {
            pages.extend_from_slice(&i.to_le_bytes());
            pages.extend_from_slice(&(i % 7).to_le_bytes());
            pages.extend_from_slice(&[b' '; 120]);
        }
        let mut e = Vec::new();
        enc.encode_frame_into(&pages, &mut e);
        assert_eq!(e[0], FLAG_XZ);
        assert!(e.len() < enc.encode(&pages).len(), "LZMA2 must beat zstd");
        assert_eq!(decode(&e, pages.len(), "f").unwrap(), pages);

        let random: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
        let mut e = Vec::new();
        enc.encode_frame_into(&random, &mut e);
        assert_eq!(e[0], FLAG_RAW);
        assert_eq!(decode(&e, random.len(), "r").unwrap(), random);
    }

    /// Hostile encodings: a stream that decodes past the largest frame, a
    /// truncated stream, a blob shorter than the index says.
    #[test]
    fn hostile_encodings_are_refused() {
        let zeros = vec![0u8; MAX_DECODED + 4096];
        let mut big = vec![FLAG_XZ];
        big.extend(xz_encode(&zeros, usize::MAX).unwrap());
        let err = decode(&big, 10, "x").unwrap_err().to_string();
        assert!(err.contains("largest frame"), "{err}");
        let mut zbig = vec![FLAG_ZSTD];
        zbig.extend(zstd::bulk::compress(&zeros, 1).unwrap());
        assert!(decode(&zbig, 10, "z").is_err());

        let mut enc = Encoder::new(3).unwrap();
        let text = "observation ".repeat(20_000).into_bytes();
        let mut e = Vec::new();
        enc.encode_frame_into(&text, &mut e);
        for cut in [2, e.len() / 2, e.len() - 1] {
            assert!(decode(&e[..cut], text.len(), "t").is_err(), "cut at {cut}");
        }
        assert!(decode(&e, text.len() + 1, "t").is_err());
        assert!(decode_owned(vec![FLAG_RAW, 1, 2], 3, "r").is_err());
    }

    #[test]
    fn level_zero_disables_compression() {
        let mut enc = Encoder::new(0).unwrap();
        let text = "aaaa".repeat(1000).into_bytes();
        assert_eq!(enc.encode(&text)[0], FLAG_RAW);
    }
}
