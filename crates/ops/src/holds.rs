//! Legal holds: placing, releasing, listing and showing them, and the
//! [`HoldCheck`] that retention and archival consult. The records are the
//! repository's (`holdfast_repo::hold`); this module checks what an
//! operator asks for (the snapshots exist, the hold is not released yet)
//! and says what a hold covers now.
//!
//! A hold freezes snapshots wherever they are stored: `policy apply` keeps
//! them (no purge, no archival), `gc` walks them as roots and refuses to
//! run while a held snapshot's manifest is missing or a hold record cannot
//! be read.

use std::cell::OnceCell;

use chrono::{DateTime, Utc};
use holdfast_policy::{HoldCheck, SnapshotInfo};
use holdfast_repo::hold::{Hold, HoldRecords, HoldRelease, HoldSelector, HoldState, NewHold};
use holdfast_repo::snapshot::{SnapshotEntry, SnapshotFilter};
use holdfast_repo::{Id, Repository};
use serde::Serialize;

use holdfast_repo::audit::{Draft, Outcome as AuditOutcome};

use crate::audit;
use crate::error::{OpsError, Result};
use crate::signers::{self, Signing};

/// What to hold.
#[derive(Debug, Clone)]
pub enum Target {
    /// These snapshots (ids or unique id prefixes).
    Snapshots(Vec<String>),
    /// Every snapshot of a source inside a time range (bounds inclusive,
    /// either open), including those taken later.
    Source {
        source: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    },
}

/// `hold place`.
#[derive(Debug, Clone)]
pub struct PlaceConfig {
    pub target: Target,
    /// The case or matter reference.
    pub case: String,
    pub reason: String,
    /// Who places it (resolved by the caller: `HOLDFAST_ACTOR`, user@host).
    pub actor: String,
}

/// A snapshot a hold covers.
#[derive(Debug, Clone, Serialize)]
pub struct Covered {
    pub id: String,
    pub time: DateTime<Utc>,
    pub source: String,
    pub kind: String,
}

impl Covered {
    fn of(e: &SnapshotEntry) -> Covered {
        Covered {
            id: e.id.to_hex(),
            time: e.snapshot.time,
            source: e.snapshot.source.clone(),
            kind: e.snapshot.kind.clone(),
        }
    }
}

/// A hold, its release if any, and the snapshots it covers now.
#[derive(Debug, Clone, Serialize)]
pub struct HoldView {
    #[serde(flatten)]
    pub hold: Hold,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<HoldRelease>,
    /// Stored snapshots the hold covers (for a source hold: those taken
    /// so far; later ones inside its range join when they are taken).
    pub snapshots: Vec<Covered>,
}

/// What placing a hold did.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    #[serde(flatten)]
    pub view: HoldView,
    /// Object Lock legal holds put on what the held snapshots need.
    pub legal_holds: LegalHolds,
    pub warnings: Vec<String>,
}

/// What releasing a hold did.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    #[serde(flatten)]
    pub release: HoldRelease,
    /// Object Lock legal holds removed from what no remaining hold needs.
    pub legal_holds: LegalHolds,
}

/// What was done to Object Lock legal holds in storage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LegalHolds {
    /// The store has legal holds (S3 Object Lock). False: holds are
    /// records that holdfast honours, the files are not locked.
    pub supported: bool,
    /// Objects whose legal hold was set.
    pub placed: usize,
    /// Objects whose legal hold was removed.
    pub removed: usize,
}

/// `hold list`: the holds and what the listing could not read.
#[derive(Debug, Clone, Serialize)]
pub struct HoldList {
    pub holds: Vec<HoldView>,
    /// Hold and release records that cannot be read, with why.
    pub warnings: Vec<String>,
}

/// `hold release`.
#[derive(Debug, Clone)]
pub struct ReleaseConfig {
    /// The hold id (`H-7f3a2c`, any case).
    pub hold: String,
    pub reason: String,
    pub actor: String,
}

fn required(what: &str, v: &str) -> Result<String> {
    let t = v.trim();
    if t.is_empty() {
        return Err(OpsError::invalid(format!("{what} must not be empty")));
    }
    if t.chars().any(char::is_control) {
        return Err(OpsError::invalid(format!(
            "{what} {t:?} contains control characters"
        )));
    }
    Ok(t.to_string())
}

/// Place a hold. Every snapshot named must exist (an error names the one
/// that does not); a source hold may cover none yet (a warning says so).
/// Audited as `hold place`: the case, the reason, what it covers.
pub fn place(repo: &Repository, cfg: &PlaceConfig) -> Result<Placed> {
    let mut draft = Draft::new("hold place", AuditOutcome::Success)
        .arg("case", cfg.case.clone())
        .arg("reason", cfg.reason.clone());
    draft = match &cfg.target {
        Target::Snapshots(specs) => draft.arg("snapshots", specs.clone()),
        Target::Source { source, from, to } => draft
            .arg("source", source.clone())
            .arg("from", from.map(|t| t.to_rfc3339()))
            .arg("to", to.map(|t| t.to_rfc3339())),
    };
    audit::audited(
        repo,
        draft,
        || place_unaudited(repo, cfg),
        |p, mut d| {
            d = d.touch("hold", p.view.hold.id.clone());
            for c in &p.view.snapshots {
                d = d.touch("snapshot", c.id.clone());
            }
            d
        },
    )
}

fn place_unaudited(repo: &Repository, cfg: &PlaceConfig) -> Result<Placed> {
    let case = required("the case reference", &cfg.case)?;
    let reason = required("the reason", &cfg.reason)?;
    let placed_by = required("the actor", &cfg.actor)?;
    let entries = repo.snapshots()?;
    let selector = match &cfg.target {
        Target::Snapshots(specs) => {
            if specs.is_empty() {
                return Err(OpsError::invalid(
                    "name at least one snapshot (--snapshot) or a source (--source)",
                ));
            }
            let mut ids: Vec<Id> = Vec::new();
            for spec in specs {
                let e = repo
                    .find_snapshot(spec, &SnapshotFilter::default())
                    .map_err(|e| {
                        OpsError::from(e).context(format!("cannot hold snapshot {spec:?}"))
                    })?;
                if !ids.contains(&e.id) {
                    ids.push(e.id);
                }
            }
            HoldSelector::Snapshots { snapshots: ids }
        }
        Target::Source { source, from, to } => {
            let source = required("the source name", source)?;
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err(OpsError::invalid(format!(
                        "--from {} is after --to {}",
                        f.to_rfc3339(),
                        t.to_rfc3339()
                    )));
                }
            }
            HoldSelector::Source {
                source,
                from: *from,
                to: *to,
            }
        }
    };
    let hold = repo.put_hold(&NewHold {
        case,
        reason,
        placed_by,
        placed_at: repo.now(),
        selector,
    })?;
    let view = view(
        &HoldState {
            hold,
            release: None,
        },
        &entries,
    );
    let mut legal_holds = LegalHolds {
        supported: repo.capabilities().legal_hold,
        ..LegalHolds::default()
    };
    if legal_holds.supported {
        let held: Vec<SnapshotEntry> = entries
            .into_iter()
            .filter(|e| view.snapshots.iter().any(|c| c.id == e.id.to_hex()))
            .collect();
        legal_holds.placed = lock(repo, &held).map_err(|e| {
            e.context(format!(
                "hold {} is recorded and honoured by holdfast, but the Object Lock legal holds on what it covers are incomplete (`holdfast hold sync` completes them)",
                view.hold.id
            ))
        })?;
    }
    let mut warnings = Vec::new();
    if view.snapshots.is_empty() {
        warnings.push(format!(
            "hold {} covers no stored snapshot yet; snapshots of the source taken later inside its range will be held",
            view.hold.id
        ));
    }
    Ok(Placed {
        view,
        legal_holds,
        warnings,
    })
}

/// Put legal holds on everything `held` needs; returns how many objects.
fn lock(repo: &Repository, held: &[SnapshotEntry]) -> Result<usize> {
    let objects = repo.objects_needed(held)?;
    Ok(repo.set_legal_holds(&objects, true)?.changed)
}

/// Release a hold: a release record beside it (the hold record stays),
/// then, on a store with legal holds, [`sync`]: what no remaining hold
/// needs loses its legal hold. An unknown id and a hold released already
/// are errors.
pub fn release(repo: &Repository, cfg: &ReleaseConfig) -> Result<Released> {
    release_signed(repo, cfg, None, false)
}

/// [`release`] with an electronic signature (21 CFR 11.50, 11.70): the
/// audit entry of the release is signed by `signing`'s signer, meaning
/// "release of hold H for case C", and the release record names the
/// signer. With `require_signature` (a policy's `[holds]
/// require_signed_release`) a release without a signature is refused,
/// releasing nothing (and the refusal is on the audit trail).
pub fn release_signed(
    repo: &Repository,
    cfg: &ReleaseConfig,
    signing: Option<&Signing>,
    require_signature: bool,
) -> Result<Released> {
    let records = repo.holds()?;
    let state = find(&records, &cfg.hold)?;
    let meaning = format!(
        "release of hold {} for case {}",
        state.hold.id, state.hold.case
    );
    let draft = Draft::new("hold release", AuditOutcome::Success)
        .arg("case", state.hold.case.clone())
        .arg("reason", cfg.reason.clone())
        .touch("hold", state.hold.id.clone());
    if signing.is_none() && require_signature {
        let e = OpsError::invalid(format!(
            "a policy requires a signed release ([holds] require_signed_release): give --sign-key FILE of a registered signer; hold {} stays active",
            state.hold.id
        ));
        return Err(audit::record_failure(repo, draft, e));
    }
    let mark = match signing {
        Some(s) => Some(serde_json::json!({
            "signer": s.signer.name,
            "printed_name": s.signer.printed_name,
            "meaning": meaning,
            "key": s.signer.fingerprint()?,
            "signed_in": "the release's audit entry",
        })),
        None => None,
    };
    let released = match release_unaudited(repo, cfg, mark) {
        Ok(r) => r,
        Err(e) => return Err(audit::record_failure(repo, draft, e)),
    };
    let written = match signing {
        Some(s) => signers::record_signed(repo, &draft, s, &meaning).map(|_| ()),
        None => audit::record(repo, &draft).map(|_| ()),
    };
    written.map_err(|e| {
        e.context(format!(
            "hold {} is released but its release is not on the audit trail",
            released.release.hold
        ))
    })?;
    Ok(released)
}

fn release_unaudited(
    repo: &Repository,
    cfg: &ReleaseConfig,
    signature: Option<serde_json::Value>,
) -> Result<Released> {
    let reason = required("the reason", &cfg.reason)?;
    let released_by = required("the actor", &cfg.actor)?;
    let records = repo.holds()?;
    let state = find(&records, &cfg.hold)?;
    if let Some(r) = &state.release {
        return Err(already_released(r));
    }
    let release = HoldRelease {
        version: holdfast_repo::hold::HOLD_VERSION,
        hold: state.hold.id.clone(),
        case: state.hold.case.clone(),
        released_by,
        released_at: repo.now(),
        host: holdfast_repo::hostname(),
        reason,
        signature,
    };
    if repo.put_hold_release(&release)? {
        let legal_holds = sync(repo).map_err(|e| {
            e.context(format!(
                "hold {} is released, but its Object Lock legal holds could not all be removed; they stay (the safe side) until `holdfast hold sync` succeeds",
                release.hold
            ))
        })?;
        return Ok(Released {
            release,
            legal_holds,
        });
    }
    // Released by someone else since we read the records.
    let again = repo.holds()?;
    Err(
        match again.get(&release.hold).and_then(|s| s.release.as_ref()) {
            Some(r) => already_released(r),
            None => OpsError::invalid(format!(
                "hold {} has a release record that cannot be read; see `holdfast hold show {}`",
                release.hold, release.hold
            )),
        },
    )
}

/// Bring the legal holds in storage in line with the hold records: what
/// released holds needed and no active hold needs loses its legal hold,
/// then everything the active holds need gets one (again). The second
/// pass reads the holds and snapshots anew, so a hold placed or a covered
/// backup committed while the first pass removed legal holds is locked
/// when this returns. Idempotent; on a store without legal holds it does
/// nothing. While a hold record cannot be read nothing is removed.
pub fn sync(repo: &Repository) -> Result<LegalHolds> {
    let mut done = LegalHolds {
        supported: repo.capabilities().legal_hold,
        ..LegalHolds::default()
    };
    if !done.supported {
        return Ok(done);
    }
    let records = repo.holds()?;
    let entries = repo.snapshots()?;
    if records.unknown_holds.is_empty() {
        let (active, released) = split(&records, entries);
        let keep = repo.objects_needed(&active)?;
        let before = repo.objects_needed(&released)?;
        let off: std::collections::BTreeSet<_> = before.difference(&keep).cloned().collect();
        done.removed = repo.set_legal_holds(&off, false)?.changed;
    }
    let records = repo.holds()?;
    let (active, _) = split(&records, repo.snapshots()?);
    done.placed = lock(repo, &active)?;
    Ok(done)
}

/// The snapshots an active hold covers, and those only released holds
/// cover.
fn split(
    records: &HoldRecords,
    entries: Vec<SnapshotEntry>,
) -> (Vec<SnapshotEntry>, Vec<SnapshotEntry>) {
    let mut active = Vec::new();
    let mut released = Vec::new();
    for e in entries {
        let covers = |h: &Hold| {
            h.selector
                .covers(&e.id, &e.snapshot.source, e.snapshot.time)
        };
        if records.active().any(covers) {
            active.push(e);
        } else if records.holds.iter().any(|s| covers(&s.hold)) {
            released.push(e);
        }
    }
    (active, released)
}

/// After a backup committed snapshot `entry`: on a store with legal holds,
/// if active holds cover it (a source hold whose range includes it),
/// legal-hold what it needs. Returns the cases holding it (empty on a
/// store without legal holds, where the records alone protect it).
pub fn after_backup(repo: &Repository, entry: &SnapshotEntry) -> Result<Vec<String>> {
    if !repo.capabilities().legal_hold {
        return Ok(Vec::new());
    }
    let records = repo.holds()?;
    let cases = records.cases(&entry.id, &entry.snapshot.source, entry.snapshot.time);
    if !records
        .covering(&entry.id, &entry.snapshot.source, entry.snapshot.time)
        .is_empty()
    {
        lock(repo, std::slice::from_ref(entry)).map_err(|e| {
            e.context(format!(
                "snapshot {} is stored and held by {}, but the Object Lock legal holds on what it needs are incomplete (`holdfast hold sync` completes them)",
                entry.id.short(),
                cases.join(", ")
            ))
        })?;
    }
    Ok(cases)
}

fn already_released(r: &HoldRelease) -> OpsError {
    OpsError::invalid(format!(
        "hold {} was already released by {} at {} ({})",
        r.hold,
        r.released_by,
        r.released_at.to_rfc3339(),
        r.reason
    ))
}

fn find<'a>(records: &'a HoldRecords, id: &str) -> Result<&'a HoldState> {
    if holdfast_repo::hold::normalize_id(id).is_none() {
        return Err(OpsError::invalid(format!(
            "{id:?} is not a hold id (they look like H-7f3a2c; see `holdfast hold list --all`)"
        )));
    }
    records.get(id).ok_or_else(|| {
        let unreadable = records
            .unreadable
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(id));
        OpsError::invalid(if unreadable {
            format!("hold {id} exists but its record cannot be read (see `holdfast hold list`)")
        } else {
            format!("no hold {id} in this repository (see `holdfast hold list --all`)")
        })
    })
}

fn view(state: &HoldState, entries: &[SnapshotEntry]) -> HoldView {
    HoldView {
        hold: state.hold.clone(),
        active: state.active(),
        release: state.release.clone(),
        snapshots: entries
            .iter()
            .filter(|e| {
                state
                    .hold
                    .selector
                    .covers(&e.id, &e.snapshot.source, e.snapshot.time)
            })
            .map(Covered::of)
            .collect(),
    }
}

/// Warnings for the records that cannot be read.
pub fn warnings(records: &HoldRecords) -> Vec<String> {
    records
        .unreadable
        .iter()
        .map(|(name, why)| {
            let key = holdfast_storage::ObjectKind::Hold.key(name);
            if records.unknown_holds.contains(name) {
                format!("hold record {key} cannot be read, so every snapshot counts as held until it is repaired or released: {why}")
            } else {
                format!("hold record {key} cannot be read: {why}")
            }
        })
        .collect()
}

/// The holds, oldest first: the active ones, or with `all` the released
/// ones too.
pub fn list(repo: &Repository, all: bool) -> Result<HoldList> {
    let records = repo.holds()?;
    let entries = repo.snapshots()?;
    Ok(HoldList {
        holds: records
            .holds
            .iter()
            .filter(|s| all || s.active())
            .map(|s| view(s, &entries))
            .collect(),
        warnings: warnings(&records),
    })
}

/// One hold, released or not.
pub fn show(repo: &Repository, id: &str) -> Result<HoldView> {
    let records = repo.holds()?;
    let state = find(&records, id)?;
    Ok(view(state, &repo.snapshots()?))
}

/// The repository's holds as the retention planner sees them: the case
/// references of the active holds covering a snapshot, and every
/// unreadable hold record (fail closed).
pub struct RepoHolds(pub HoldRecords);

impl RepoHolds {
    pub fn read(repo: &Repository) -> Result<RepoHolds> {
        Ok(RepoHolds(repo.holds()?))
    }
}

impl HoldCheck for RepoHolds {
    fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
        RepoHoldsRef(&self.0).holds(s)
    }
}

/// The holds read from the repository the first time they are asked for,
/// so that `policy apply` reads them after taking its lease and listing
/// the snapshots. If they cannot be read, every snapshot counts as held.
pub struct LiveHolds<'a> {
    repo: &'a Repository,
    records: OnceCell<std::result::Result<HoldRecords, String>>,
}

impl<'a> LiveHolds<'a> {
    pub fn new(repo: &'a Repository) -> LiveHolds<'a> {
        LiveHolds {
            repo,
            records: OnceCell::new(),
        }
    }

    fn records(&self) -> &std::result::Result<HoldRecords, String> {
        self.records
            .get_or_init(|| self.repo.holds().map_err(|e| e.to_string()))
    }

    /// Warnings about hold records, once they were read.
    pub fn warnings(&self) -> Vec<String> {
        match self.records.get() {
            None => Vec::new(),
            Some(Ok(r)) => warnings(r),
            Some(Err(e)) => vec![format!(
                "the hold records cannot be read, so every snapshot counts as held: {e}"
            )],
        }
    }
}

impl HoldCheck for LiveHolds<'_> {
    fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
        match self.records() {
            Ok(r) => RepoHoldsRef(r).holds(s),
            Err(e) => vec![format!("unreadable hold records ({e})")],
        }
    }
}

struct RepoHoldsRef<'a>(&'a HoldRecords);

impl HoldCheck for RepoHoldsRef<'_> {
    fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
        // Not an id: no explicit hold can name it, source holds still can.
        let id = s.id.parse::<Id>().unwrap_or(Id([0; 32]));
        self.0.cases(&id, &s.source, s.time)
    }
}
