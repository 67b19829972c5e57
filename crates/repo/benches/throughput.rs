//! Throughput of the backup pipeline's CPU stages, one at a time.
//!
//! `cargo bench -p holdfast-repo` (about two minutes with the build cached).
//! Each benchmark reports bytes per second of plaintext processed:
//!
//! - chunking: `StreamChunker` over a 64 MiB in-memory buffer of random bytes
//!   (documents and database parameters), including the copy into owned chunks;
//! - hashing: keyed BLAKE3 blob id of 1 MiB;
//! - compression: `Encoder::new(3).encode` of 1 MiB of FHIR-like JSON lines
//!   (zstd path) and of 1 MiB of random bytes (the sampled probe must pick the
//!   raw fallback, which is asserted); and decoding the JSON blob back;
//! - encryption: AES-256-GCM `seal`/`open` of 1 MiB, and `PackWriter::add` of
//!   1 MiB blobs (seal plus the copy into the pack buffer).
//!
//! Compare these with the per-stage cost a real backup pays: on 1 GiB of
//! corpus, chunk + hash + (compress or probe) + seal is the floor of the
//! backup's CPU time, divided over the worker threads.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use holdfast_repo::chunker::{ChunkerParams, Gear, StreamChunker};
use holdfast_repo::compress::{self, Encoder, FLAG_RAW, FLAG_ZSTD};
use holdfast_repo::crypto::MasterKey;
use holdfast_repo::pack::{BlobType, PackWriter};
use holdfast_repo::Id;

const MIB: usize = 1 << 20;

/// Deterministic incompressible bytes (xorshift64*), cheap to make.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// FHIR-like NDJSON, as in `shared/bench/gen_corpus.py`: compressible text
/// with varying ids, dates, numbers and notes.
fn json_lines(n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "patient",
        "encounter",
        "observation",
        "condition",
        "medication",
        "allergy",
        "procedure",
        "immunization",
        "diagnostic",
        "report",
        "practitioner",
        "hypertension",
        "diabetes",
        "asthma",
        "oral",
        "daily",
        "tablet",
        "mg",
        "blood",
        "pressure",
        "systolic",
        "glucose",
        "fasting",
        "follow",
        "up",
        "referral",
        "discharge",
        "normal",
        "abnormal",
        "negative",
        "positive",
        "history",
        "family",
        "smoker",
    ];
    const TYPES: &[&str] = &["Observation", "Condition", "MedicationRequest", "Encounter"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::with_capacity(n + 1024);
    let mut i = 0u64;
    while out.len() < n {
        let r = next();
        let words = |k: u64, next: &mut dyn FnMut() -> u64| {
            (0..k)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let display = words(3, &mut next);
        let note = words(5 + next() % 35, &mut next);
        out.push_str(&format!(
            "{{\"resourceType\": \"{}\", \"id\": \"{:08x}-{:08x}\", \"status\": \"final\", \
             \"subject\": {{\"reference\": \"Patient/{}\"}}, \"effectiveDateTime\": \
             \"20{}-{:02}-{:02}T{:02}:{:02}:00Z\", \"code\": {{\"coding\": [{{\"system\": \
             \"http://loinc.org\", \"code\": \"{}-{}\", \"display\": \"{}\"}}]}}, \
             \"valueQuantity\": {{\"value\": {}.{:02}, \"unit\": \"mmHg\"}}, \"note\": \
             [{{\"text\": \"{}\"}}]}}\n",
            TYPES[(r % 4) as usize],
            i,
            r >> 32,
            next() % 1_000_000,
            10 + next() % 16,
            1 + next() % 12,
            1 + next() % 28,
            next() % 24,
            next() % 60,
            next() % 100_000,
            next() % 10,
            display,
            next() % 300,
            next() % 100,
            note,
        ));
        i += 1;
    }
    let mut v = out.into_bytes();
    v.truncate(n);
    v
}

fn key() -> MasterKey {
    MasterKey::from_bytes([7u8; 32])
}

fn chunking(c: &mut Criterion) {
    let data = random_bytes(64 * MIB, 1);
    let key = key();
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (name, params) in [
        ("documents_64MiB", ChunkerParams::DOCUMENTS),
        ("database_64MiB", ChunkerParams::DATABASE),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut ch =
                    StreamChunker::new(&data[..], Gear::from_key(key.chunker_key()), params);
                let mut n = 0usize;
                while let Some(chunk) = ch.next_chunk().unwrap() {
                    n += chunk.len();
                    black_box(&chunk);
                }
                assert_eq!(n, data.len());
            })
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = random_bytes(MIB, 2);
    let key = key();
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blob_id_1MiB", |b| b.iter(|| key.blob_id(black_box(&data))));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let text = json_lines(MIB);
    let random = random_bytes(MIB, 3);
    let mut enc = Encoder::new(3).unwrap();
    let text_enc = enc.encode(&text);
    assert_eq!(text_enc[0], FLAG_ZSTD, "JSON must take the zstd path");
    assert_eq!(
        enc.encode(&random)[0],
        FLAG_RAW,
        "random data must hit the raw fallback"
    );
    eprintln!(
        "compression: 1 MiB JSON -> {} bytes ({:.1}%)",
        text_enc.len(),
        100.0 * text_enc.len() as f64 / text.len() as f64
    );

    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("zstd3_json_1MiB", |b| {
        b.iter(|| enc.encode(black_box(&text)))
    });
    g.bench_function("zstd3_random_1MiB_raw_fallback", |b| {
        b.iter(|| enc.encode(black_box(&random)))
    });
    g.bench_function("decode_json_1MiB", |b| {
        b.iter(|| compress::decode(black_box(&text_enc), MIB, "bench").unwrap())
    });
    g.finish();
}

fn encryption(c: &mut Criterion) {
    let key = key();
    let salt = [9u8; 32];
    let cipher = key.cipher_for(&salt);
    // What a pack holds: flag byte + body.
    let mut encoded = vec![FLAG_RAW];
    encoded.extend_from_slice(&random_bytes(MIB, 4));
    let sealed = cipher.seal(1, &[0], &encoded);

    let mut g = c.benchmark_group("encryption");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("aes256gcm_seal_1MiB", |b| {
        b.iter(|| cipher.seal(1, &[0], black_box(&encoded)))
    });
    g.bench_function("aes256gcm_open_1MiB", |b| {
        b.iter(|| cipher.open(1, &[0], black_box(&sealed), "bench").unwrap())
    });
    g.bench_function("pack_add_1MiB", |b| {
        b.iter_batched_ref(
            || PackWriter::new(&key, 2 * MIB),
            |w| w.add(BlobType::Data, Id([1; 32]), black_box(&encoded), MIB),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = chunking, hashing, compression, encryption
}
criterion_main!(benches);
