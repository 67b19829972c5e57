//! A pack written to storage region by region, never held whole in memory.
//!
//! Byte for byte the pack [`PackWriter`](crate::pack::PackWriter) would
//! build (same header, nonces, trailer and name), but each region goes to a
//! [`holdfast_storage::Upload`] as soon as it is sealed, and the name (the
//! BLAKE3 of the stored bytes) is hashed on the way. Garbage collection's
//! repack uses it: the pack it fills is the largest thing it would
//! otherwise hold (16 MiB by default), and on a local repository the
//! upload is a temporary file beside the packs.
//!
//! Crash safety is the storage contract's: nothing is visible until the
//! upload is finished under the pack's name, and an abandoned upload
//! leaves nothing (see `Backend::upload`).

use holdfast_storage::Upload;

use crate::crypto::{new_salt, MasterKey, ObjectCipher, SALT_LEN, TAG_LEN};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{self, BlobType, PackEntry, PackInfo, HEADER_LEN};

/// One pack being streamed to storage.
pub(crate) struct PackStream<'a> {
    upload: Box<dyn Upload + 'a>,
    cipher: ObjectCipher,
    header: [u8; HEADER_LEN],
    salt: [u8; SALT_LEN],
    hasher: blake3::Hasher,
    /// Bytes written so far (the next region's offset, hence its nonce).
    len: usize,
    entries: Vec<PackEntry>,
    version: u8,
}

impl<'a> PackStream<'a> {
    /// Start a pack of `version` under a fresh salt, writing its header.
    pub async fn start(
        upload: Box<dyn Upload + 'a>,
        key: &MasterKey,
        version: u8,
    ) -> Result<PackStream<'a>> {
        let salt = new_salt();
        let mut s = PackStream {
            upload,
            cipher: key.cipher_for(&salt),
            header: pack::header(version, &salt),
            salt,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
            version,
        };
        let header = s.header;
        s.write(&header).await?;
        Ok(s)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True until a region is added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add one region holding `blobs` (id, raw length, offset inside the
    /// decoded region). `buf` is the region's encoded bytes followed by
    /// `TAG_LEN` free bytes: it is sealed where it lies, under this pack's
    /// key and the region's new offset, and written.
    pub async fn add_region(
        &mut self,
        blob_type: BlobType,
        blobs: &[(Id, u32, u32)],
        buf: &mut [u8],
    ) -> Result<()> {
        if buf.len() < TAG_LEN {
            return Err(RepoError::Invalid(format!(
                "a pack region needs room for its {TAG_LEN}-byte tag (got {} bytes)",
                buf.len()
            )));
        }
        let offset = self.len;
        let (offset32, length) = match (u32::try_from(offset), u32::try_from(buf.len())) {
            (Ok(o), Ok(l)) if o.checked_add(l).is_some() => (o, l),
            _ => {
                return Err(RepoError::Invalid(
                    "a pack may not grow past 4 GiB".to_string(),
                ))
            }
        };
        self.cipher
            .seal_in_slice(offset as u64, &[blob_type as u8], buf);
        self.write(buf).await?;
        for (id, raw_len, inner) in blobs {
            self.entries.push(PackEntry {
                blob_type,
                id: *id,
                offset: offset32,
                length,
                raw_len: *raw_len,
                inner: *inner,
            });
        }
        Ok(())
    }

    /// Seal the trailer, and publish the pack under its name.
    pub async fn finish(mut self) -> Result<PackInfo> {
        let closing = pack::closing(&self.cipher, &self.header, &self.entries, self.version);
        self.write(&closing).await?;
        let id = Id(*self.hasher.finalize().as_bytes());
        let name = id.to_hex();
        match self.upload.finish(&name).await {
            Ok(()) => {}
            // The same bytes are already stored: a fresh salt makes this
            // all but impossible, and an identical pack is as good.
            Err(e) if e.class() == holdfast_storage::ErrorClass::AlreadyExists => {}
            Err(e) => return Err(RepoError::from(e).context(format!("storing pack {name}"))),
        }
        Ok(PackInfo {
            id,
            salt: self.salt,
            entries: self.entries,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len();
        self.upload.write(bytes).await.map_err(RepoError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{PackWriter, PACK_VERSION};
    use holdfast_storage::local::LocalBackend;
    use holdfast_storage::{Backend, ObjectKind, PutOptions};

    /// A streamed pack reads back like one built in memory: its name is
    /// the hash of its bytes, its trailer lists every region, and each
    /// region opens under the pack key at its offset.
    #[test]
    fn streamed_pack_is_a_valid_pack() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = LocalBackend::new(dir.path());
        let key = MasterKey::generate();
        let regions: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; 1000 + usize::from(i) * 777])
            .collect();
        let info = rt.block_on(async {
            let up = backend
                .upload(ObjectKind::Pack, &PutOptions::default())
                .expect("upload");
            let mut s = PackStream::start(up, &key, PACK_VERSION)
                .await
                .expect("start");
            for (i, r) in regions.iter().enumerate() {
                let mut buf = r.clone();
                buf.extend_from_slice(&[0u8; TAG_LEN]);
                let id = Id([i as u8; 32]);
                s.add_region(BlobType::Data, &[(id, r.len() as u32, 0)], &mut buf)
                    .await
                    .expect("add");
            }
            s.finish().await.expect("finish")
        });
        let stored = rt
            .block_on(backend.get(ObjectKind::Pack, &info.id.to_hex(), None))
            .expect("get");
        assert_eq!(Id::of_stored(&stored), info.id, "named by its hash");
        let read = pack::read_info(&key, &stored, "pack").expect("trailer");
        assert_eq!(read, info, "trailer lists what was written");
        let cipher = key.cipher_for(&info.salt);
        for (e, r) in info.entries.iter().zip(&regions) {
            let s = e.offset as usize;
            let sealed = &stored[s..s + e.length as usize];
            let open = pack::open_blob(&cipher, e.blob_type, e.offset, sealed, "pack")
                .expect("region opens");
            assert_eq!(&open, r);
        }
        // The same regions through the in-memory writer give the same
        // layout (offsets and lengths); only the salt differs.
        let mut w = PackWriter::new(&key, 1 << 20);
        for (i, r) in regions.iter().enumerate() {
            w.add_region(BlobType::Data, &[(Id([i as u8; 32]), r.len() as u32, 0)], r);
        }
        let (_, mem) = w.finish();
        let layout = |p: &PackInfo| -> Vec<(u32, u32)> {
            p.entries.iter().map(|e| (e.offset, e.length)).collect()
        };
        assert_eq!(layout(&mem), layout(&info));
    }
}
