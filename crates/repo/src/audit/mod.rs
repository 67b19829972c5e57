//! The audit trail (`audit/<sequence number>`): write-once, hash-chained
//! entries recording who did what to the repository, and when.
//!
//! Each entry is a sealed object (name-bound envelope, so someone without
//! the key can neither forge nor move one) whose plaintext is one line of
//! JSON, the [`Entry`], optionally followed by a line holding an ed25519
//! signature over it (see [`sign`]). An entry names the BLAKE3 of the
//! previous entry's plaintext (`prev`), so an entry changed by someone
//! holding the key breaks the chain after it. Names are zero-padded
//! sequence numbers written with the backend's conditional put: of two
//! writers racing for the next number exactly one wins, the other reads the
//! new head and tries the number after it, so the chain cannot fork.
//!
//! Appending costs one put when this process (or the local witness, see
//! [`witness`]) knows the head; otherwise the head is found by probing
//! forward (exponential, then binary search), never by listing the whole
//! prefix. Tail truncation, which a chain alone cannot show, is detected
//! against the heads recorded by every snapshot and by the local witness
//! ([`verify`]).

pub mod sign;
pub mod signers;
pub mod verify;
pub mod witness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use holdfast_storage::{ObjectKind, StorageError};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::object::{self, Binding};
use crate::repository::Repository;

/// Version of the entry layout.
pub const ENTRY_VERSION: u32 = 1;
/// Digits of an entry's name: sorts as a number, never runs out.
pub const NAME_DIGITS: usize = 20;
/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Appends that lose the race this many times in a row give up (another
/// writer appending without pause; reported, never a silent fork).
const MAX_ATTEMPTS: usize = 64;

/// The object name of entry `seq`.
pub fn entry_name(seq: u64) -> String {
    format!("{seq:0NAME_DIGITS$}")
}

/// The sequence number an object name stands for; `None` for anything that
/// is not exactly [`NAME_DIGITS`] digits of a number from 1.
pub fn parse_name(name: &str) -> Option<u64> {
    if name.len() != NAME_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&n| n > 0)
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Written before a data-revealing operation (a restore) begins: the
    /// access is on record even if the process dies during it.
    Started,
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Something an operation touched: `snapshot` and an id, `path`,
/// `database`, `target` (where a restore wrote), `key` (a key slot),
/// `hold`, `signer`, `repository`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub kind: String,
    pub id: String,
}

impl Touched {
    pub fn new(kind: &str, id: impl Into<String>) -> Touched {
        Touched {
            kind: kind.to_string(),
            id: id.into(),
        }
    }
}

/// The signer's manifestation in a signed entry (21 CFR 11.50): who
/// signed (the registered signer and the printed name), what the
/// signature means, and the key's fingerprint. The time is the entry's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBy {
    /// The signer's registered name (`signers/<name>`).
    pub signer: String,
    /// The signer's full printed name.
    pub printed_name: String,
    /// What the signature means, e.g. "release of hold H-7 for case 123".
    pub meaning: String,
    /// BLAKE3 of the signer's public key, hex.
    pub key: String,
}

/// One audit entry: the first line of an `audit/` object's plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// Who: the configured identity, else `user@host`.
    pub actor: String,
    pub host: String,
    /// `backup`, `restore`, `policy apply`, `key add`, ...
    pub operation: String,
    /// The arguments that matter (never a secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Touched>,
    pub outcome: Outcome,
    /// Why it failed (`outcome` failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Hex BLAKE3 of the previous entry's plaintext ([`GENESIS`] for the
    /// first).
    pub prev: String,
    /// Set on a signed entry; the signature itself is the plaintext's
    /// second line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedBy>,
}

/// What a caller records; [`Repository::audit_append`] adds the sequence
/// number, time, actor, host and `prev`.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub operation: String,
    pub args: BTreeMap<String, serde_json::Value>,
    pub objects: Vec<Touched>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl Draft {
    pub fn new(operation: &str, outcome: Outcome) -> Draft {
        Draft {
            operation: operation.to_string(),
            args: BTreeMap::new(),
            objects: Vec::new(),
            outcome,
            error: None,
        }
    }

    /// Add an argument.
    pub fn arg(mut self, name: &str, value: impl Into<serde_json::Value>) -> Draft {
        self.args.insert(name.to_string(), value.into());
        self
    }

    /// Add a touched object.
    pub fn touch(mut self, kind: &str, id: impl Into<String>) -> Draft {
        self.objects.push(Touched::new(kind, id));
        self
    }
}

/// Where the chain ended at some moment: the last entry's number and the
/// hex BLAKE3 of its plaintext. Recorded in snapshots and the witness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// One entry as stored: the parsed entry, its plaintext's hash, and its
/// signature line if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub entry: Entry,
    pub hash: String,
    /// The exact bytes of the first line (what a signature covers).
    pub body: Vec<u8>,
    pub signature: Option<sign::SignatureLine>,
}

/// Parse an entry's plaintext: one line of entry JSON, optionally a
/// second line with a signature.
pub fn parse_plaintext(plain: &[u8], what: &str) -> Result<Stored> {
    let hash = blake3::hash(plain).to_hex().to_string();
    let (body, rest) = match plain.iter().position(|&b| b == b'\n') {
        Some(i) => (&plain[..i], Some(&plain[i + 1..])),
        None => (plain, None),
    };
    let entry: Entry = serde_json::from_slice(body)
        .map_err(|e| RepoError::corrupt(what, format!("entry does not parse: {e}")))?;
    if entry.version != ENTRY_VERSION {
        return Err(RepoError::corrupt(
            what,
            format!("unknown audit entry version {}", entry.version),
        ));
    }
    let signature = match rest {
        None => None,
        Some(line) => Some(
            serde_json::from_slice(line)
                .map_err(|e| RepoError::corrupt(what, format!("signature does not parse: {e}")))?,
        ),
    };
    Ok(Stored {
        entry,
        hash,
        body: body.to_vec(),
        signature,
    })
}

/// This process's audit settings and what it knows of the chain.
#[derive(Debug, Default)]
pub(crate) struct State {
    inner: Mutex<StateInner>,
}

#[derive(Debug, Default)]
struct StateInner {
    actor: Option<String>,
    /// The local cache root holding the witness, if any.
    witness_root: Option<PathBuf>,
    /// The newest head this process wrote or saw.
    head: Option<Head>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Seal an entry's plaintext: always a name-bound (version-2) envelope,
/// whatever the repository's format. Builds that predate the audit trail
/// never read `audit/`, so this is safe in format-1 and -2 repositories
/// too, and an entry is never an unbound object that could be moved.
pub(crate) fn seal(repo: &Repository, name: &str, plain: &[u8]) -> Result<Vec<u8>> {
    object::seal_bound(repo.key(), Binding::new(ObjectKind::Audit, name), plain)
}

/// Open an entry's envelope, refusing anything but a version-2 envelope
/// bound to `audit/<name>`.
pub(crate) fn open(repo: &Repository, name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    object::open_bound(
        repo.key(),
        object::FIRST_BOUND_FORMAT,
        Binding::new(ObjectKind::Audit, name),
        bytes,
    )
}

impl Repository {
    /// Who the entries of this session are by. The caller (the binary, the
    /// daemon) resolves it; without one it is `user@host` of this process.
    pub fn set_audit_actor(&self, actor: Option<String>) {
        self.audit.lock().actor = actor.filter(|a| !a.is_empty());
    }

    /// The actor of this session's entries.
    pub fn audit_actor(&self) -> String {
        self.audit
            .lock()
            .actor
            .clone()
            .unwrap_or_else(|| format!("{}@{}", crate::username(), crate::hostname()))
    }

    /// Keep the witness of the last head seen under the local cache root
    /// `root` (see [`witness`]); `None`: no witness.
    pub fn set_audit_witness(&self, root: Option<PathBuf>) {
        self.audit.lock().witness_root = root;
    }

    /// The witness of this repository on this machine, if one is kept and
    /// readable.
    pub fn audit_witness(&self) -> Option<Head> {
        let root = self.audit.lock().witness_root.clone()?;
        witness::read(&root, &self.config().id)
    }

    /// The newest head this process knows without a request.
    pub fn audit_known_head(&self) -> Option<Head> {
        let known = self.audit.lock().head.clone();
        newer(known, self.audit_witness())
    }

    /// Remember `head` as seen (in this process and in the witness), if
    /// it is newer than what is known.
    pub fn audit_saw(&self, head: &Head) {
        let root = {
            let mut st = self.audit.lock();
            if st.head.as_ref().is_none_or(|h| h.seq < head.seq) {
                st.head = Some(head.clone());
            }
            st.witness_root.clone()
        };
        if let Some(root) = root {
            witness::raise(&root, &self.config().id, head);
        }
    }

    /// The head of the chain now: from the known head, probing forward
    /// (one `head` request when nothing was appended elsewhere). `None`:
    /// the trail is empty. Remembered, so that a snapshot written next
    /// records it (see [`crate::snapshot::Snapshot::audit_head`]).
    pub fn audit_head(&self) -> Result<Option<Head>> {
        let from = self.audit_known_head();
        let next = from.as_ref().map_or(1, |h| h.seq + 1);
        if !self.audit_exists(next)? {
            if let Some(h) = &from {
                self.audit_saw(h);
            }
            return Ok(from);
        }
        let head = self.audit_find_head(next)?;
        self.audit_saw(&head);
        Ok(Some(head))
    }

    /// The head a snapshot written now records: what this process knows.
    pub(crate) fn audit_head_for_snapshot(&self) -> Option<Head> {
        self.audit.lock().head.clone()
    }

    fn audit_exists(&self, seq: u64) -> Result<bool> {
        Ok(self.block_on(holdfast_storage::exists(
            self.backend().as_ref(),
            ObjectKind::Audit,
            &entry_name(seq),
        ))?)
    }

    /// The last entry of the chain, knowing that entry `known` exists:
    /// probe `known + 1, + 2, + 4, ...` until one is missing, then binary
    /// search; a single missing entry (deleted) followed by a present one
    /// is stepped over, so an append does not fill a hole.
    fn audit_find_head(&self, known: u64) -> Result<Head> {
        let mut lo = known;
        loop {
            let mut step = 1u64;
            let mut hi = loop {
                let probe = lo.saturating_add(step);
                if !self.audit_exists(probe)? {
                    break probe;
                }
                lo = probe;
                step = step.saturating_mul(2);
            };
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if self.audit_exists(mid)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            // `lo` exists, `lo + 1` does not: a hole if `lo + 2` exists.
            if self.audit_exists(lo + 2)? {
                lo += 2;
                continue;
            }
            let stored = self.audit_read(lo)?.ok_or_else(|| {
                RepoError::corrupt(
                    ObjectKind::Audit.key(&entry_name(lo)),
                    "listed while searching for the head, then missing",
                )
            })?;
            return Ok(Head {
                seq: lo,
                hash: stored.hash,
            });
        }
    }

    /// Read and open entry `seq`; `None` if it does not exist.
    pub fn audit_read(&self, seq: u64) -> Result<Option<Stored>> {
        let name = entry_name(seq);
        let bytes = match self.block_on(self.backend().get(ObjectKind::Audit, &name, None)) {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let what = ObjectKind::Audit.key(&name);
        let plain = open(self, &name, &bytes)?;
        let stored = parse_plaintext(&plain, &what)?;
        if stored.entry.seq != seq {
            return Err(RepoError::corrupt(
                &what,
                format!("holds entry number {}", stored.entry.seq),
            ));
        }
        Ok(Some(stored))
    }

    /// Append an entry for `draft` at the end of the chain, signed with
    /// `signing` if given (the draft's signer manifestation is then set
    /// from it and `meaning`). Write-once with the conditional put: a lost
    /// race reads the new head and tries the next number.
    pub fn audit_append(
        &self,
        draft: &Draft,
        signing: Option<(&sign::SigningKey, &sign::Signer, &str)>,
    ) -> Result<Stored> {
        let signed = match signing {
            Some((key, signer, meaning)) => Some(sign::manifestation(key, signer, meaning)?),
            None => None,
        };
        let actor = self.audit_actor();
        let host = crate::hostname();
        let mut head = self.audit_known_head();
        for _ in 0..MAX_ATTEMPTS {
            let (seq, prev) = match &head {
                Some(h) => (h.seq + 1, h.hash.clone()),
                None => (1, GENESIS.to_string()),
            };
            let entry = Entry {
                version: ENTRY_VERSION,
                seq,
                time: self.now(),
                actor: actor.clone(),
                host: host.clone(),
                operation: draft.operation.clone(),
                args: draft.args.clone(),
                objects: draft.objects.clone(),
                outcome: draft.outcome,
                error: draft.error.clone(),
                prev,
                signed: signed.clone(),
            };
            let body = serde_json::to_vec(&entry)
                .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
            let signature = signing.map(|(key, _, _)| key.sign_entry(&body));
            let mut plain = body.clone();
            if let Some(s) = &signature {
                plain.push(b'\n');
                plain.extend_from_slice(
                    &serde_json::to_vec(s)
                        .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?,
                );
            }
            let name = entry_name(seq);
            let sealed = seal(self, &name, &plain)?;
            match self.block_on(self.backend().put(
                ObjectKind::Audit,
                &name,
                Bytes::from(sealed),
                &self.put_options(),
            )) {
                Ok(()) => {
                    let stored = Stored {
                        hash: blake3::hash(&plain).to_hex().to_string(),
                        entry,
                        body,
                        signature,
                    };
                    self.audit_saw(&Head {
                        seq,
                        hash: stored.hash.clone(),
                    });
                    return Ok(stored);
                }
                Err(StorageError::AlreadyExists { .. }) => {
                    head = Some(self.audit_find_head(seq)?);
                }
                Err(e) => {
                    return Err(RepoError::from(e).context(format!(
                        "writing audit entry {}",
                        ObjectKind::Audit.key(&name)
                    )))
                }
            }
        }
        Err(RepoError::Invalid(format!(
            "could not append to the audit trail: {MAX_ATTEMPTS} attempts lost the race to other writers"
        )))
    }

    /// Every entry of the chain, read concurrently, in order of number, and
    /// the objects under `audit/` that could not be read or opened (with
    /// why). See [`verify`] for what is checked beyond that.
    pub fn audit_entries(&self) -> Result<verify::Chain> {
        verify::read_chain(self)
    }
}

/// The newer of two heads (by number).
fn newer(a: Option<Head>, b: Option<Head>) -> Option<Head> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_as_numbers() {
        assert_eq!(entry_name(7), "00000000000000000007");
        assert_eq!(parse_name(&entry_name(7)), Some(7));
        assert_eq!(parse_name(&entry_name(u64::MAX)), Some(u64::MAX));
        assert!(entry_name(9) < entry_name(10));
        for bad in ["7", "0000000000000000000x", "00000000000000000000", ""] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn plaintext_parses_with_and_without_signature() {
        let e = Entry {
            version: ENTRY_VERSION,
            seq: 1,
            time: Utc::now(),
            actor: "a@b".into(),
            host: "b".into(),
            operation: "init".into(),
            args: BTreeMap::new(),
            objects: vec![],
            outcome: Outcome::Success,
            error: None,
            prev: GENESIS.into(),
            signed: None,
        };
        let body = serde_json::to_vec(&e).unwrap();
        let s = parse_plaintext(&body, "x").unwrap();
        assert_eq!(s.entry, e);
        assert_eq!(s.body, body);
        assert!(s.signature.is_none());
        assert!(parse_plaintext(b"{", "x").is_err());
        let mut two = body.clone();
        two.extend_from_slice(b"\nnot json");
        assert!(parse_plaintext(&two, "x").is_err());
    }
}
