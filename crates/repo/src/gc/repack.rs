//! Repacking: copy the live regions of mostly-unused packs into new packs,
//! and index the new packs, so that the old ones can be deleted.
//!
//! A region is decrypted with the old pack's key and sealed again under the
//! new pack's (the nonce is the offset, which changes), in the buffer it
//! was read into and never decoded: the blobs keep their compression, and
//! a frame moves whole with every blob at the same place inside it. The
//! new pack is streamed to storage as it fills (`pack_stream`), so memory
//! holds one ranged read, not a pack. Decryption authenticates each region, so a
//! damaged one is reported, never copied. Data and tree regions go to
//! separate packs, as a backup writes them (tree packs stay in the metadata
//! storage class). The new packs are stored and indexed before anything is
//! deleted: an interrupted repack leaves duplicates, never a loss.

use std::collections::HashSet;

use holdfast_storage::{ErrorClass, ObjectKind, PutOptions};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{self, BlobType, PackInfo, PACK_VERSION};
use crate::pack_stream::PackStream;
use crate::repository::Repository;

use super::plan::PackRecord;

/// What a repack did.
#[derive(Debug, Default)]
pub(crate) struct Repacked {
    /// Old packs whose live regions are all in new packs now.
    pub done: Vec<Id>,
    /// New packs, stored and indexed.
    pub written: Vec<PackInfo>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Old packs left as they are, and why (archived, say).
    pub skipped: Vec<(Id, String)>,
}

/// Copy the live regions of `packs`; `progress(done, total)` per old pack.
pub(crate) fn repack(
    repo: &Repository,
    packs: &[&PackRecord],
    live: &HashSet<Id>,
    progress: &dyn Fn(u64, u64),
) -> Result<Repacked> {
    let mut out = Repacked::default();
    let target = repo.config().pack_size as usize;
    let mut data = Out::new(repo, false, target);
    let mut trees = Out::new(repo, true, target);
    let total = packs.len() as u64;
    for (i, rec) in packs.iter().enumerate() {
        progress(i as u64, total);
        let name = rec.id.to_hex();
        let what = format!("pack {name}");
        let cipher = repo.key().cipher_for(&rec.salt);
        let live_regions: Vec<(u32, Vec<pack::PackEntry>)> = rec
            .regions()
            .into_iter()
            .filter(|(_, entries)| entries.iter().any(|e| live.contains(&e.id)))
            .collect();
        let mut skipped = false;
        // Read the live regions in windows of a few MiB, not the whole
        // pack: memory stays small, and dead stretches are never fetched.
        for window in windows(&live_regions) {
            let (lo, hi) = (u64::from(window.start), u64::from(window.end));
            let bytes =
                match repo.block_on(repo.backend().get(ObjectKind::Pack, &name, Some(lo..hi))) {
                    Ok(b) => b,
                    Err(e) if e.class() == ErrorClass::Archived => {
                        out.skipped
                            .push((rec.id, "in an archival storage class".into()));
                        skipped = true;
                        break;
                    }
                    Err(e) => {
                        return Err(RepoError::from(e).context(format!("repacking pack {name}")))
                    }
                };
            out.bytes_read += bytes.len() as u64;
            // Opened and sealed again where they lie: no copy per region.
            let mut bytes = bytes
                .try_into_mut()
                .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
            for (offset, entries) in &live_regions[window.regions.clone()] {
                let first = entries[0];
                let s = (u64::from(*offset) - lo) as usize;
                let e = s + first.length as usize;
                let region = bytes.get_mut(s..e).ok_or_else(|| {
                    RepoError::corrupt(
                        &what,
                        format!(
                            "region at {offset} (+{}) is past the pack's end",
                            first.length
                        ),
                    )
                })?;
                cipher.open_in_slice(
                    u64::from(*offset),
                    &[first.blob_type as u8],
                    region,
                    &what,
                )?;
                let blobs: Vec<(Id, u32, u32)> =
                    entries.iter().map(|e| (e.id, e.raw_len, e.inner)).collect();
                let dest = match first.blob_type {
                    BlobType::Data => &mut data,
                    BlobType::Tree => &mut trees,
                };
                dest.add(first.blob_type, &blobs, region, &mut out)?;
            }
        }
        if !skipped {
            out.done.push(rec.id);
        }
    }
    data.flush(&mut out)?;
    trees.flush(&mut out)?;
    // Index the new packs before anyone may delete the old ones.
    for batch in out.written.chunks(super::INDEX_PACKS_PER_OBJECT) {
        repo.write_index(batch)?;
    }
    repo.extend_index(&out.written);
    progress(total, total);
    Ok(out)
}

/// Bytes per ranged read of an old pack (more only for one larger region).
const WINDOW: u32 = 4 << 20;
/// Dead bytes a window may span between two live regions rather than
/// starting a new read.
const GAP: u32 = 256 << 10;

/// One ranged read: the byte range, and which live regions it covers.
struct Window {
    start: u32,
    end: u32,
    regions: std::ops::Range<usize>,
}

/// Group live regions (in pack order) into ranged reads.
fn windows(regions: &[(u32, Vec<pack::PackEntry>)]) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for (i, (offset, entries)) in regions.iter().enumerate() {
        let end = offset.saturating_add(entries[0].length);
        match out.last_mut() {
            Some(w) if *offset <= w.end.saturating_add(GAP) && end - w.start <= WINDOW => {
                w.end = w.end.max(end);
                w.regions.end = i + 1;
            }
            _ => out.push(Window {
                start: *offset,
                end,
                regions: i..i + 1,
            }),
        }
    }
    out
}

/// One destination pack being filled, streamed to storage as it fills.
struct Out<'a> {
    repo: &'a Repository,
    metadata: bool,
    target: usize,
    pack: Option<PackStream<'a>>,
}

impl<'a> Out<'a> {
    fn new(repo: &'a Repository, metadata: bool, target: usize) -> Out<'a> {
        Out {
            repo,
            metadata,
            target,
            pack: None,
        }
    }

    /// Add one region: `region` is its encoded bytes and `TAG_LEN` free
    /// bytes (the old tag's place), sealed again for the new pack.
    fn add(
        &mut self,
        blob_type: BlobType,
        blobs: &[(Id, u32, u32)],
        region: &mut [u8],
        out: &mut Repacked,
    ) -> Result<()> {
        if self
            .pack
            .as_ref()
            .is_some_and(|p| !p.is_empty() && p.len() + region.len() > self.target)
        {
            self.flush(out)?;
        }
        let repo = self.repo;
        let pack = match &mut self.pack {
            Some(p) => p,
            None => {
                let opts = PutOptions {
                    metadata: self.metadata,
                    ..repo.put_options()
                };
                let upload = repo.backend().upload(ObjectKind::Pack, &opts)?;
                let started = repo.block_on(PackStream::start(upload, repo.key(), PACK_VERSION))?;
                self.pack.insert(started)
            }
        };
        repo.block_on(pack.add_region(blob_type, blobs, region))
    }

    fn flush(&mut self, out: &mut Repacked) -> Result<()> {
        let Some(p) = self.pack.take() else {
            return Ok(());
        };
        if p.is_empty() {
            return Ok(());
        }
        let written = p.len();
        let info = self
            .repo
            .block_on(p.finish())
            .map_err(|e| e.context("storing a repacked pack"))?;
        out.bytes_written += written as u64;
        out.written.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(offset: u32, length: u32) -> (u32, Vec<pack::PackEntry>) {
        (
            offset,
            vec![pack::PackEntry {
                blob_type: BlobType::Data,
                id: Id([0; 32]),
                offset,
                length,
                raw_len: length,
                inner: 0,
            }],
        )
    }

    #[test]
    fn windows_join_near_regions_and_stay_bounded() {
        let mib = 1 << 20;
        let regions = vec![
            region(37, mib),
            // A small gap: the same read.
            region(37 + mib + 1000, mib),
            // A gap over 256 KiB: a new read.
            region(37 + 3 * mib, mib),
            // Adjacent, and the read stays within 4 MiB: joined.
            region(37 + 4 * mib, 3 * mib),
            // Larger than a window: a read of its own.
            region(37 + 7 * mib, 6 * mib),
        ];
        let w = windows(&regions);
        let spans: Vec<(u32, u32, std::ops::Range<usize>)> = w
            .iter()
            .map(|w| (w.start, w.end, w.regions.clone()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (37, 37 + 2 * mib + 1000, 0..2),
                (37 + 3 * mib, 37 + 7 * mib, 2..4),
                (37 + 7 * mib, 37 + 13 * mib, 4..5),
            ]
        );
        assert!(windows(&[]).is_empty());
    }
}
