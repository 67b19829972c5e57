//! Signed reviews of drill reports (`drill approve`): a registered signer
//! (see [`crate::signers`]) signs an audit entry that names the drill and
//! the BLAKE3 digest of its stored report, meaning "approval of drill
//! report D". The audit trail is where approvals live — no separate
//! record — so they are as tamper-evident as the trail, and `drill
//! history` reads them back from it, checking each signature and that the
//! report is still the one approved.
//!
//! Each signer approves a drill once (a second approval by the same
//! signer is refused and records nothing); different signers may each
//! approve the same drill (a second reviewer).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use holdfast_drill::{Approval, DrillReport};
use holdfast_repo::audit::sign::{self, Signer};
use holdfast_repo::audit::{Draft, Outcome as AuditOutcome, Stored};
use holdfast_repo::Repository;
use serde::Serialize;

use crate::error::{OpsError, Result};
use crate::signers::{self, Signing};

/// The audit operation of an approval.
pub const OPERATION: &str = "drill approve";

/// What `approve` recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub drill: String,
    pub playbook: String,
    /// The drill's outcome as its report states it.
    pub outcome: String,
    /// BLAKE3 of the stored report, hex (named in the signed entry).
    pub report_blake3: String,
    pub signer: String,
    pub printed_name: String,
    pub meaning: String,
    pub time: DateTime<Utc>,
    pub audit_seq: u64,
}

/// BLAKE3 of a stored report (its JSON as stored, keys in order), hex.
pub fn report_digest(report: &serde_json::Value) -> String {
    // serde_json's maps are ordered by key, so the bytes are a function of
    // the value: the digest does not depend on how the record was read.
    let bytes = serde_json::to_vec(report).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// The meaning signed when the signer gives none.
pub fn default_meaning(id: &str, playbook: &str, outcome: &str) -> String {
    format!("approval of drill report {id} (playbook {playbook}, outcome {outcome})")
}

/// Sign the review of drill `id` with `signing`, meaning `meaning` (else
/// [`default_meaning`]). An unknown id, an unreadable report and a second
/// approval by the same signer are refused before anything is written.
pub fn approve(
    repo: &Repository,
    id: &str,
    meaning: Option<&str>,
    signing: &Signing,
) -> Result<Approved> {
    let rec = repo.drill(id)?.ok_or_else(|| {
        OpsError::invalid(format!(
            "there is no drill {id} in this repository; see `holdfast drill history` for the drill ids"
        ))
    })?;
    let digest = report_digest(&rec.report);
    let report: DrillReport = serde_json::from_value(rec.report.clone()).map_err(|e| {
        OpsError::invalid(format!(
            "drill {id}: its report cannot be read, so it cannot be reviewed: {e}"
        ))
    })?;
    let meaning =
        match meaning.map(str::trim) {
            Some("") => return Err(OpsError::invalid(
                "--meaning is empty; say what the signature means, or leave it out for the default",
            )),
            Some(m) if m.chars().any(char::is_control) => {
                return Err(OpsError::invalid(
                    "--meaning must be one line without control characters",
                ))
            }
            Some(m) => m.to_string(),
            None => default_meaning(id, &report.playbook, report.outcome.as_str()),
        };
    let signer = &signing.signer;
    if let Some(done) = approvals(repo)?
        .remove(id)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.signer == signer.name)
    {
        return Err(OpsError::invalid(format!(
            "drill {id} was approved by {} ({}) at {} already (audit entry {}); a signer approves a drill once, another signer may add a review",
            done.printed_name,
            done.signer,
            done.time.format("%Y-%m-%d %H:%M:%S UTC"),
            done.audit_seq
        )));
    }
    let mut draft = Draft::new(OPERATION, AuditOutcome::Success)
        .arg("playbook", report.playbook.clone())
        .arg("outcome", report.outcome.as_str())
        .arg("report_blake3", digest.clone())
        .touch("drill", id.to_string());
    for s in &rec.snapshots {
        draft = draft.touch("snapshot", s.to_hex());
    }
    let stored = signers::record_signed(repo, &draft, signing, &meaning)?;
    Ok(Approved {
        drill: id.to_string(),
        playbook: report.playbook,
        outcome: report.outcome.as_str().to_string(),
        report_blake3: digest,
        signer: signer.name.clone(),
        printed_name: signer.printed_name.clone(),
        meaning,
        time: stored.entry.time,
        audit_seq: stored.entry.seq,
    })
}

/// Every approval on the audit trail, by drill id, oldest first; each
/// with whether its signature verifies against the registered signer.
/// Whether the digest still matches is the caller's to check
/// ([`attach`]).
pub fn approvals(repo: &Repository) -> Result<BTreeMap<String, Vec<Approval>>> {
    let chain = repo.audit_entries()?;
    let (signers, _) = repo.signers()?;
    let signers: BTreeMap<String, Signer> = signers.into_iter().collect();
    let mut out: BTreeMap<String, Vec<Approval>> = BTreeMap::new();
    for s in &chain.entries {
        if let Some((id, a)) = approval(s, &signers) {
            out.entry(id).or_default().push(a);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|a| a.audit_seq);
    }
    Ok(out)
}

fn approval(s: &Stored, signers: &BTreeMap<String, Signer>) -> Option<(String, Approval)> {
    let e = &s.entry;
    if e.operation != OPERATION || e.outcome != AuditOutcome::Success {
        return None;
    }
    let mark = e.signed.as_ref()?;
    let id = e.objects.iter().find(|t| t.kind == "drill")?.id.clone();
    let problem = match (signers.get(&mark.signer), &s.signature) {
        (None, _) => Some(format!("{:?} is not a registered signer", mark.signer)),
        (_, None) => Some("the entry carries no signature".to_string()),
        (Some(signer), Some(line)) => sign::check(signer, mark, &s.body, line).err(),
    };
    Some((
        id,
        Approval {
            signer: mark.signer.clone(),
            printed_name: mark.printed_name.clone(),
            time: e.time,
            meaning: mark.meaning.clone(),
            audit_seq: e.seq,
            report_blake3: e
                .args
                .get("report_blake3")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            verified: problem.is_none(),
            problem,
        },
    ))
}

/// Give `report` (stored as `stored`) its approvals from `all`, marking
/// those whose digest is not the stored report's.
pub(crate) fn attach(
    report: &mut DrillReport,
    stored: &serde_json::Value,
    all: &BTreeMap<String, Vec<Approval>>,
) {
    let Some(list) = all.get(&report.id) else {
        return;
    };
    let digest = report_digest(stored);
    report.approvals = list
        .iter()
        .cloned()
        .map(|mut a| {
            if a.verified && a.report_blake3.as_deref().is_some_and(|d| d != digest) {
                a.verified = false;
                a.problem = Some(
                    "the report stored now is not the one approved (its digest differs)".into(),
                );
            }
            a
        })
        .collect();
}
