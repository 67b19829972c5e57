//! Every decoder of bytes read from storage, fed arbitrary bytes and
//! mutations of valid encodings: each returns a value or an error, never
//! panics, never hangs, never allocates without bound. Sealed objects are
//! also sealed around arbitrary plaintext, so the parsers behind the
//! authentication (pack trailer, index payload, JSON) see hostile input
//! that authenticates (a writer with the key gone wrong).

use holdfast_repo::config;
use holdfast_repo::crypto::{MasterKey, NONCE_TRAILER};
use holdfast_repo::id::Id;
use holdfast_repo::keys::{self, KdfParams, KeySlot, Secret};
use holdfast_repo::object::{self, Binding};
use holdfast_repo::pack::{self, BlobType, PackInfo, PackWriter};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::Tree;
use holdfast_repo::walmanifest::WalManifest;
use holdfast_repo::{compress, index};
use holdfast_storage::ObjectKind;
use proptest::prelude::*;

fn key() -> MasterKey {
    MasterKey::from_bytes([7; 32])
}

/// A mutation of `valid`: flip, overwrite, truncate, insert or duplicate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn mutate(valid: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for m in ms {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if let Some(c) = b.get_mut(i % len) {
                    *c ^= x
                }
            }
            Mutation::Set(i, x) => {
                if let Some(c) = b.get_mut(i % len) {
                    *c = *x
                }
            }
            Mutation::Truncate(i) => b.truncate(i % len),
            Mutation::Insert(i, v) => {
                let at = (i % len).min(b.len());
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Repeat(i, n) => {
                let at = (i % len).min(b.len());
                let end = (at + n).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
    b
}

/// Where a complete pack's sealed trailer starts.
fn trailer_start(p: &[u8]) -> usize {
    let n = p.len();
    let tlen = u32::from_le_bytes(p[n - 4..].try_into().unwrap()) as usize;
    n - 4 - tlen
}

fn sample_pack() -> (Vec<u8>, PackInfo) {
    let k = key();
    let mut w = PackWriter::new(&k, 1 << 16);
    for i in 0..3u8 {
        let data = vec![i; 100];
        let mut enc = vec![0u8];
        enc.extend_from_slice(&data);
        w.add(BlobType::Data, k.blob_id(&data), &enc, data.len());
    }
    w.finish()
}

fn sample_slot() -> Vec<u8> {
    let p = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let slot = KeySlot::create(&key(), b"pw", p, "t").unwrap();
    serde_json::to_vec_pretty(&slot).unwrap()
}

fn sample_snapshot_json() -> Vec<u8> {
    br#"{"time":"2026-11-01T00:00:00Z","hostname":"h","username":"u","source":"s","kind":"files",
        "tags":["a"],"paths":["/x"],"tree":"0000000000000000000000000000000000000000000000000000000000000000",
        "summary":{"files_new":1,"files_changed":0,"files_unchanged":0,"dirs":1,"files_failed":0,
        "total_bytes":1,"bytes_read":1,"blobs_added":1,"data_added":1,"stored_added":1,"duration_secs":0.1},
        "program_version":"0.1.0","predecessors":["0000000000000000000000000000000000000000000000000000000000000001"]}"#
        .to_vec()
}

fn sample_tree_json() -> Vec<u8> {
    br#"{"version":2,"nodes":[{"name":"a","kind":"file","mode":420,"uid":0,"gid":0,"size":3,
        "mtime":{"sec":1,"nsec":2},"content":["0000000000000000000000000000000000000000000000000000000000000000"],
        "xattrs":[{"name":"user.x","value":"00ff"}],"sparse":true},
        {"name_hex":"ff00","kind":"symlink","mode":511,"uid":0,"gid":0,"size":0,"mtime":{"sec":1,"nsec":2},
        "target":{"name_hex":"2f"}}]}"#
        .to_vec()
}

fn sample_manifest_json() -> Vec<u8> {
    br#"{"version":1,"cluster":"7","name":"000000010000000000000001","size":16777216,
        "blake3":"00","blobs":["0000000000000000000000000000000000000000000000000000000000000000"],
        "archived_at":"2026-11-01T00:00:00Z",
        "stored_at":[{"pack":"0000000000000000000000000000000000000000000000000000000000000000",
        "salt":"00","offset":37,"length":100,"raw_len":84}]}"#
        .to_vec()
}

/// Every storage decoder on `bytes`; results are ignored, panics are not.
fn decode_all(bytes: &[u8]) {
    let k = key();
    let _ = pack::read_info(&k, bytes, "pack");
    let _ = pack::header_cipher(&k, bytes, "pack");
    let _ = index::decode(bytes, "index");
    let _ = object::open(&k, bytes, "object");
    let _ = object::open_any(&k, bytes, "object");
    for format in [1, 2, 3] {
        for b in [
            Binding::new(ObjectKind::Snapshot, "ab"),
            Binding::new(ObjectKind::Wal, "7-000000010000000000000001"),
            Binding::new(ObjectKind::Config, "config"),
        ] {
            let _ = object::open_bound(&k, format, b, bytes);
        }
    }
    let _ = config::read_version(bytes, "repo");
    let _ = config::decode(&k, bytes, "repo");
    let _ = compress::decode(bytes, 1 << 16, "blob");
    let _ = serde_json::from_slice::<Tree>(bytes);
    let _ = serde_json::from_slice::<Snapshot>(bytes);
    let _ = serde_json::from_slice::<WalManifest>(bytes);
    let name = Id::of_stored(bytes).to_hex();
    if let Ok(slot) = keys::parse_slot(&name, bytes) {
        let _ = slot.try_open(&Secret::Password(b"pw"));
        let _ = slot.try_open(&Secret::KeyFile(&[1; 32]));
    }
    let _ = keys::parse_slot("x", bytes);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_packs(ms in proptest::collection::vec(mutation(), 1..4)) {
        // read_info authenticates the header and trailer only (blobs are
        // authenticated when read): a mutation there must be refused.
        let (p, _) = sample_pack();
        let m = mutate(&p, &ms);
        let tail = p.len() - trailer_start(&p);
        let header_changed = m.get(..pack::HEADER_LEN) != p.get(..pack::HEADER_LEN);
        let tail_changed = m.len() < tail || m[m.len() - tail..] != p[p.len() - tail..];
        if header_changed || tail_changed {
            prop_assert!(pack::read_info(&key(), &m, "pack").is_err());
        }
        decode_all(&m);
    }

    /// The trailer parser behind authentication: any plaintext, sealed.
    #[test]
    fn authenticated_arbitrary_trailers(
        plain in proptest::collection::vec(any::<u8>(), 0..512),
        version in prop_oneof![Just(1u8), Just(2u8)],
        count in any::<u32>(),
    ) {
        let k = key();
        let salt = [3u8; 32];
        let mut p = b"HFPK".to_vec();
        p.push(version);
        p.extend_from_slice(&salt);
        let mut t = count.to_le_bytes().to_vec();
        t.extend_from_slice(&plain);
        let sealed = k.cipher_for(&salt).seal(NONCE_TRAILER, &p.clone(), &t);
        p.extend_from_slice(&sealed);
        p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let _ = pack::read_info(&k, &p, "pack");
    }

    #[test]
    fn mutated_index_payloads(ms in proptest::collection::vec(mutation(), 1..4)) {
        let (_, info) = sample_pack();
        let mut v2 = info.clone();
        v2.entries[0].inner = 5;
        for valid in [index::encode(std::slice::from_ref(&info)), index::encode(&[v2])] {
            decode_all(&mutate(&valid, &ms));
        }
    }

    #[test]
    fn mutated_envelopes(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let k = key();
        let b = Binding::new(ObjectKind::Wal, "7-000000010000000000000001");
        for sealed in [object::seal(&k, &payload), object::seal_bound(&k, b, &payload).unwrap()] {
            let m = mutate(&sealed, &ms);
            if m != sealed {
                prop_assert!(object::open_bound(&k, 3, b, &m).is_err());
                prop_assert!(object::open_bound(&k, 2, b, &m).is_err());
            }
            decode_all(&m);
        }
        let cfg = config::encode(&k, &config::RepoConfig::new(), 3).unwrap();
        let m = mutate(&cfg, &ms);
        if m != cfg {
            prop_assert!(config::decode(&k, &m, "repo").is_err());
        }
    }

    /// Any payload that authenticates still only ever yields an error or a
    /// value from the JSON and index parsers.
    #[test]
    fn authenticated_arbitrary_payloads(payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let k = key();
        let sealed = object::seal_bound(&k, Binding::new(ObjectKind::Snapshot, ""), &payload).unwrap();
        let name = Id::of_stored(&sealed).to_hex();
        let plain = object::open_bound(&k, 3, Binding::new(ObjectKind::Snapshot, &name), &sealed).unwrap();
        prop_assert_eq!(&plain, &payload);
        decode_all(&plain);
    }

    #[test]
    fn mutated_json_objects(ms in proptest::collection::vec(mutation(), 1..4)) {
        for valid in [sample_snapshot_json(), sample_tree_json(), sample_manifest_json()] {
            decode_all(&mutate(&valid, &ms));
        }
    }

    #[test]
    fn mutated_key_slots(ms in proptest::collection::vec(mutation(), 1..3)) {
        let valid = sample_slot();
        decode_all(&mutate(&valid, &ms));
    }
}

#[test]
fn samples_are_valid() {
    // The mutations start from real encodings, or they test little.
    let (p, info) = sample_pack();
    assert_eq!(
        pack::read_info(&key(), &p, "p").unwrap().entries,
        info.entries
    );
    assert!(serde_json::from_slice::<Snapshot>(&sample_snapshot_json()).is_ok());
    assert!(serde_json::from_slice::<Tree>(&sample_tree_json()).is_ok());
    assert!(serde_json::from_slice::<WalManifest>(&sample_manifest_json()).is_ok());
    let slot = sample_slot();
    let parsed = keys::parse_slot(&Id::of_stored(&slot).to_hex(), &slot).unwrap();
    assert!(matches!(
        parsed.try_open(&Secret::Password(b"pw")),
        keys::SlotOutcome::Opened(_)
    ));
}
