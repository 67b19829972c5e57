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
//! Flag 0: body is the raw data. Flag 1: body is one zstd frame.

use crate::error::{RepoError, Result};

pub const FLAG_RAW: u8 = 0;
pub const FLAG_ZSTD: u8 = 1;

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
        let start = out.len();
        // Up to two samples' worth, probing would cost about as much as
        // compressing outright (a 16 KiB database block would be compressed
        // twice): just try, and keep the raw form if it does not shrink.
        let small = data.len() <= 2 * SAMPLE;
        if self.level > 0 && data.len() >= 64 && (small || self.worth_compressing(data)) {
            let bound = zstd::zstd_safe::compress_bound(data.len());
            out.push(FLAG_ZSTD);
            out.resize(start + 1 + bound, 0);
            if let Ok(n) = self.full.compress_to_buffer(data, &mut out[start + 1..]) {
                if n < data.len() {
                    out.truncate(start + 1 + n);
                    return;
                }
            }
            out.truncate(start);
        }
        out.reserve(data.len() + 1);
        out.push(FLAG_RAW);
        out.extend_from_slice(data);
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

/// Like [`decode`], consuming the buffer: a raw blob costs no copy.
pub fn decode_owned(mut encoded: Vec<u8>, raw_len: usize, what: &str) -> Result<Vec<u8>> {
    if encoded.first() == Some(&FLAG_RAW) {
        encoded.remove(0);
        return Ok(encoded);
    }
    decode(&encoded, raw_len, what)
}

/// Decode flag + body back to the data; `what` names the blob for errors.
/// `raw_len` is the expected decoded length (from the index), used as the
/// decompression bound so a corrupt frame cannot make us allocate wildly.
pub fn decode(encoded: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    match encoded.split_first() {
        Some((&FLAG_RAW, body)) => Ok(body.to_vec()),
        Some((&FLAG_ZSTD, body)) => {
            let out = zstd::bulk::decompress(body, raw_len.max(1))
                .map_err(|e| RepoError::corrupt(what, format!("zstd: {e}")))?;
            Ok(out)
        }
        Some((flag, _)) => Err(RepoError::corrupt(
            what,
            format!("unknown encoding flag {flag}"),
        )),
        None => Err(RepoError::corrupt(what, "empty blob")),
    }
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

    #[test]
    fn level_zero_disables_compression() {
        let mut enc = Encoder::new(0).unwrap();
        let text = "aaaa".repeat(1000).into_bytes();
        assert_eq!(enc.encode(&text)[0], FLAG_RAW);
    }
}
