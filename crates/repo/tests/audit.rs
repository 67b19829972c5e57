//! The audit chain at the library level: an edit by someone who holds the
//! key (re-sealed, so the envelope opens) still breaks the chain; appends
//! from several repository handles at once stay linear; the head is found
//! by probing, across a deleted entry; signatures verify, and a changed
//! entry, a wrong key or an unknown signer do not.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use holdfast_repo::audit::sign::{Signer, SigningKey};
use holdfast_repo::audit::verify::verify;
use holdfast_repo::audit::{entry_name, Draft, Outcome};
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::object::{self, Binding};
use holdfast_repo::Repository;
use holdfast_storage::local::LocalBackend;
use holdfast_storage::ObjectKind;

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};
const PW: &[u8] = b"audit test";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn create(dir: &Path, rt: &tokio::runtime::Runtime) -> Repository {
    Repository::init(
        Arc::new(LocalBackend::new(dir)),
        rt.handle().clone(),
        PW,
        FAST_KDF,
        RepoConfig::new(),
    )
    .unwrap()
}

fn open(dir: &Path, rt: &tokio::runtime::Runtime) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(dir)), rt.handle().clone(), PW).unwrap()
}

fn draft(op: &str) -> Draft {
    Draft::new(op, Outcome::Success).touch("path", "/srv/records")
}

fn entry_path(dir: &Path, seq: u64) -> std::path::PathBuf {
    dir.join("audit").join(entry_name(seq))
}

#[test]
fn an_edit_resealed_with_the_key_breaks_the_chain_after_it() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let repo = create(tmp.path(), &rt);
    for op in ["backup", "restore", "backup", "gc"] {
        repo.audit_append(&draft(op), None).unwrap();
    }
    assert!(verify(&repo, &BTreeMap::new()).unwrap().intact());
    // An insider rewrites entry 2 ("restore" becomes "backup") and seals
    // it properly under its own name.
    let stored = repo.audit_read(2).unwrap().unwrap();
    let mut e = stored.entry.clone();
    e.operation = "backup".into();
    let plain = serde_json::to_vec(&e).unwrap();
    let name = entry_name(2);
    let sealed =
        object::seal_bound(repo.key(), Binding::new(ObjectKind::Audit, &name), &plain).unwrap();
    std::fs::remove_file(entry_path(tmp.path(), 2)).unwrap();
    std::fs::write(entry_path(tmp.path(), 2), sealed).unwrap();
    let report = verify(&repo, &BTreeMap::new()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert_eq!(p.seq, Some(3));
    assert!(p.detail.contains("does not follow entry 2"), "{}", p.detail);
}

#[test]
fn appends_from_several_handles_at_once_stay_linear() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    drop(create(tmp.path(), &rt));
    let handles: Vec<Repository> = (0..4).map(|_| open(tmp.path(), &rt)).collect();
    std::thread::scope(|s| {
        for (i, repo) in handles.iter().enumerate() {
            s.spawn(move || {
                for n in 0..10 {
                    repo.audit_append(&draft(&format!("op {i} {n}")), None)
                        .unwrap();
                }
            });
        }
    });
    let chain = handles[0].audit_entries().unwrap();
    assert!(chain.unreadable.is_empty());
    assert_eq!(chain.entries.len(), 40);
    for (i, s) in chain.entries.iter().enumerate() {
        assert_eq!(s.entry.seq, i as u64 + 1);
    }
    assert!(verify(&handles[0], &BTreeMap::new()).unwrap().intact());
}

#[test]
fn the_head_is_found_by_probing_and_a_hole_is_stepped_over() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let writer = create(tmp.path(), &rt);
    for n in 0..37 {
        writer
            .audit_append(&draft(&format!("op {n}")), None)
            .unwrap();
    }
    // A fresh handle knows nothing: it probes.
    let head = open(tmp.path(), &rt).audit_head().unwrap().unwrap();
    assert_eq!(head.seq, 37);
    assert_eq!(head.hash, writer.audit_read(37).unwrap().unwrap().hash);
    // A deleted entry in the middle is not mistaken for the end, and an
    // append never fills it.
    std::fs::remove_file(entry_path(tmp.path(), 20)).unwrap();
    let other = open(tmp.path(), &rt);
    let appended = other.audit_append(&draft("after"), None).unwrap();
    assert_eq!(appended.entry.seq, 38);
    let report = verify(&other, &BTreeMap::new()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].seq, Some(20));
    assert!(report.problems[0].detail.contains("missing"));
}

fn signer(name: &str, key: &SigningKey) -> Signer {
    Signer {
        version: 1,
        name: name.into(),
        printed_name: "Dr. Jane Roe".into(),
        public_key: hex::encode(key.public_key()),
        added: Utc::now(),
        added_by: "test".into(),
    }
}

#[test]
fn signatures_verify_and_a_changed_entry_wrong_key_or_unknown_signer_fail() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let repo = create(tmp.path(), &rt);
    let (key, _) = SigningKey::generate().unwrap();
    let jane = signer("jroe", &key);
    let signers: BTreeMap<String, Signer> = [("jroe".to_string(), jane.clone())].into();
    let meaning = "release of hold H-7 for case 123";
    let signed = repo
        .audit_append(&draft("hold release"), Some((&key, &jane, meaning)))
        .unwrap();
    let mark = signed.entry.signed.clone().unwrap();
    assert_eq!(mark.printed_name, "Dr. Jane Roe");
    assert_eq!(mark.meaning, meaning);
    let report = verify(&repo, &signers).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.signatures, 1);

    // A wrong key cannot sign as Jane.
    let (other, _) = SigningKey::generate().unwrap();
    let refused = repo.audit_append(&draft("hold release"), Some((&other, &jane, meaning)));
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("not the key registered"));

    // Unknown signer: the record is gone from what verify is given.
    let report = verify(&repo, &BTreeMap::new()).unwrap();
    assert!(report.problems[0]
        .detail
        .contains("not a registered signer"));
    // A signer registered under the name with another key.
    let impostor: BTreeMap<String, Signer> = [("jroe".to_string(), signer("jroe", &other))].into();
    let report = verify(&repo, &impostor).unwrap();
    assert!(!report.intact());

    // The entry changed by a key holder (the meaning rewritten, the
    // signature line kept): the signature no longer verifies.
    let plain = {
        let mut e = signed.entry.clone();
        e.signed.as_mut().unwrap().meaning = "release of hold H-8 for case 999".into();
        let mut p = serde_json::to_vec(&e).unwrap();
        p.push(b'\n');
        p.extend_from_slice(&serde_json::to_vec(signed.signature.as_ref().unwrap()).unwrap());
        p
    };
    let name = entry_name(signed.entry.seq);
    let sealed =
        object::seal_bound(repo.key(), Binding::new(ObjectKind::Audit, &name), &plain).unwrap();
    std::fs::remove_file(entry_path(tmp.path(), signed.entry.seq)).unwrap();
    std::fs::write(entry_path(tmp.path(), signed.entry.seq), sealed).unwrap();
    let report = verify(&repo, &signers).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(signed.entry.seq) && p.detail.contains("does not verify")),
        "{:?}",
        report.problems
    );
    // Its signature line removed: it claims a signer but carries none.
    let bare = serde_json::to_vec(&signed.entry).unwrap();
    let sealed =
        object::seal_bound(repo.key(), Binding::new(ObjectKind::Audit, &name), &bare).unwrap();
    std::fs::remove_file(entry_path(tmp.path(), signed.entry.seq)).unwrap();
    std::fs::write(entry_path(tmp.path(), signed.entry.seq), sealed).unwrap();
    let report = verify(&repo, &signers).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.detail.contains("carries no signature")));
}
