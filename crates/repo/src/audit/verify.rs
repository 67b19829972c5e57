//! Reading the whole audit trail and verifying it: every entry opens
//! (sealed, name-bound: an edited, forged, moved or swapped object does
//! not), numbers run from 1 without a gap (a deleted entry), each entry
//! names its predecessor's hash (a replaced or inserted entry), the chain
//! reaches every head recorded by a snapshot and by the local witness (a
//! truncated tail), and every signature verifies against its registered
//! signer. Each problem names the entry it concerns.

use std::collections::{BTreeMap, BTreeSet};

use holdfast_storage::ObjectKind;
use serde::Serialize;

use super::sign::{self, Signer};
use super::{entry_name, parse_name, parse_plaintext, Head, Stored, GENESIS};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::repository::Repository;

/// The trail as read: entries that opened, in order of number, and the
/// objects under `audit/` that did not.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub entries: Vec<Stored>,
    /// (storage key, why) of objects that could not be read or opened.
    pub unreadable: Vec<(String, String)>,
    /// Every entry number found under `audit/` (readable or not).
    pub numbers: BTreeSet<u64>,
}

/// One thing wrong with the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The entry it concerns, when it is one entry.
    pub seq: Option<u64>,
    /// The storage key (or range) it concerns.
    pub object: String,
    /// What is wrong.
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Entries that opened.
    pub entries: usize,
    /// The last entry of the chain, if any.
    pub head: Option<Head>,
    /// Signed entries whose signature verified.
    pub signatures: usize,
    /// Snapshots whose recorded head was compared.
    pub snapshot_heads: usize,
    /// The local witness compared, if there was one.
    pub witness: Option<Head>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Read every object under `audit/`, concurrently.
pub(crate) fn read_chain(repo: &Repository) -> Result<Chain> {
    let listed = repo.block_on(repo.backend().list(ObjectKind::Audit))?;
    let mut chain = Chain::default();
    let mut names = Vec::new();
    for m in listed {
        match parse_name(&m.name) {
            Some(n) => {
                chain.numbers.insert(n);
                names.push(m.name);
            }
            None => chain.unreadable.push((
                ObjectKind::Audit.key(&m.name),
                "not an audit entry name (an object put there by something else)".into(),
            )),
        }
    }
    for (name, got) in repo.fetch_all(ObjectKind::Audit, names) {
        let key = ObjectKind::Audit.key(&name);
        let opened = got.map_err(RepoError::from).and_then(|b| {
            let plain = super::open(repo, &name, &b)?;
            parse_plaintext(&plain, &key)
        });
        match opened {
            Ok(s) if Some(s.entry.seq) == parse_name(&name) => chain.entries.push(s),
            Ok(s) => chain.unreadable.push((
                key,
                format!(
                    "holds entry number {} (moved within the trail)",
                    s.entry.seq
                ),
            )),
            Err(e) => chain.unreadable.push((key, e.to_string())),
        }
    }
    chain.entries.sort_by_key(|s| s.entry.seq);
    chain.unreadable.sort();
    Ok(chain)
}

/// Verify the trail of `repo` against `signers` (by registered name), the
/// heads recorded by its snapshots and the local witness.
pub fn verify(repo: &Repository, signers: &BTreeMap<String, Signer>) -> Result<Report> {
    let chain = read_chain(repo)?;
    let snapshots = repo.snapshots()?;
    Ok(verify_read(repo, &chain, &snapshots, signers))
}

/// [`verify`] of a trail and snapshots the caller has read already
/// ([`read_chain`], `Repository::snapshots`), so that a caller needing
/// them for more than the verification reads them once.
pub fn verify_read(
    repo: &Repository,
    chain: &Chain,
    snapshots: &[crate::snapshot::SnapshotEntry],
    signers: &BTreeMap<String, Signer>,
) -> Report {
    let snapshots: Vec<(Id, Head)> = snapshots
        .iter()
        .filter_map(|e| e.snapshot.audit_head.clone().map(|h| (e.id, h)))
        .collect();
    let witness = repo.audit_witness();
    let mut report = check_chain(chain, signers);
    report.snapshot_heads = snapshots.len();
    for (id, head) in &snapshots {
        check_head(
            chain,
            head,
            &format!("snapshot {}", id.short()),
            &mut report,
        );
    }
    if let Some(w) = &witness {
        check_head(chain, w, "this machine's witness", &mut report);
    }
    report.witness = witness;
    if report.intact() {
        if let Some(h) = &report.head {
            repo.audit_saw(h);
        }
    }
    report
}

fn problem(seq: Option<u64>, object: String, detail: impl Into<String>) -> Problem {
    Problem {
        seq,
        object,
        detail: detail.into(),
    }
}

/// Everything that can be checked from the chain alone.
pub fn check_chain(chain: &Chain, signers: &BTreeMap<String, Signer>) -> Report {
    let mut r = Report {
        entries: chain.entries.len(),
        ..Report::default()
    };
    for (key, why) in &chain.unreadable {
        let seq = key.strip_prefix("audit/").and_then(parse_name);
        r.problems.push(problem(
            seq,
            key.clone(),
            format!("cannot be opened: {why}"),
        ));
    }
    // Gaps, as ranges (a forged huge number must not list billions).
    let mut expect = 1u64;
    for &n in &chain.numbers {
        if n > expect {
            let object = if n - 1 == expect {
                ObjectKind::Audit.key(&entry_name(expect))
            } else {
                format!(
                    "{} to {}",
                    ObjectKind::Audit.key(&entry_name(expect)),
                    ObjectKind::Audit.key(&entry_name(n - 1))
                )
            };
            r.problems.push(problem(
                Some(expect),
                object,
                format!(
                    "missing: {} entr{} before entry {n} deleted",
                    n - expect,
                    if n - expect == 1 { "y" } else { "ies" }
                ),
            ));
        }
        expect = n.saturating_add(1);
    }
    let by_seq: BTreeMap<u64, &Stored> = chain.entries.iter().map(|s| (s.entry.seq, s)).collect();
    for s in &chain.entries {
        let e = &s.entry;
        let key = ObjectKind::Audit.key(&entry_name(e.seq));
        let expected = if e.seq == 1 {
            Some(GENESIS.to_string())
        } else {
            by_seq.get(&(e.seq - 1)).map(|p| p.hash.clone())
        };
        if let Some(want) = expected {
            if e.prev != want {
                r.problems.push(problem(
                    Some(e.seq),
                    key.clone(),
                    format!(
                        "does not follow entry {}: it names a predecessor with hash {}, entry {} hashes to {} (one of the two was replaced, or this one inserted)",
                        e.seq.saturating_sub(1),
                        short(&e.prev),
                        e.seq.saturating_sub(1),
                        short(&want)
                    ),
                ));
            }
        }
        match (&e.signed, &s.signature) {
            (None, None) => {}
            (Some(_), None) => r.problems.push(problem(
                Some(e.seq),
                key.clone(),
                "is marked signed but carries no signature",
            )),
            (None, Some(_)) => r.problems.push(problem(
                Some(e.seq),
                key.clone(),
                "carries a signature but names no signer",
            )),
            (Some(mark), Some(line)) => match signers.get(&mark.signer) {
                None => r.problems.push(problem(
                    Some(e.seq),
                    key.clone(),
                    format!(
                        "is signed by {:?}, who is not a registered signer",
                        mark.signer
                    ),
                )),
                Some(signer) => match sign::check(signer, mark, &s.body, line) {
                    Ok(()) => r.signatures += 1,
                    Err(why) => r.problems.push(problem(
                        Some(e.seq),
                        key.clone(),
                        format!("signature of {:?} is invalid: {why}", mark.signer),
                    )),
                },
            },
        }
    }
    r.head = chain.entries.last().map(|s| Head {
        seq: s.entry.seq,
        hash: s.hash.clone(),
    });
    r
}

/// Compare the chain with a head recorded by `who`.
fn check_head(chain: &Chain, head: &Head, who: &str, r: &mut Report) {
    let last = chain.numbers.iter().next_back().copied().unwrap_or(0);
    let key = ObjectKind::Audit.key(&entry_name(head.seq));
    if head.seq > last {
        r.problems.push(problem(
            Some(head.seq),
            key,
            format!(
                "missing: {who} recorded the trail up to entry {} but it ends at entry {last} (its tail was truncated)",
                head.seq
            ),
        ));
        return;
    }
    if let Some(s) = chain.entries.iter().find(|s| s.entry.seq == head.seq) {
        if s.hash != head.hash {
            r.problems.push(problem(
                Some(head.seq),
                key,
                format!(
                    "is not the entry {who} recorded (hash {}, recorded {}): it was replaced",
                    short(&s.hash),
                    short(&head.hash)
                ),
            ));
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}
