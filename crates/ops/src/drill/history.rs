//! Past drills, read back from their records in the repository, with the
//! signed approvals the audit trail holds for each (see `approve`).

use holdfast_drill::DrillReport;
use holdfast_repo::Repository;

use crate::error::Result;

use super::approve;

/// Every drill stored in the repository, oldest first, and the records
/// that cannot be read (name, why).
pub struct History {
    pub drills: Vec<DrillReport>,
    pub unreadable: Vec<(String, String)>,
    /// Why the approvals could not be read from the audit trail (the
    /// drills are then shown without them).
    pub approvals_error: Option<String>,
}

/// Read every drill record and its approvals.
pub fn history(repo: &Repository) -> Result<History> {
    let (records, mut unreadable) = repo.drills()?;
    let (approvals, approvals_error) = match approve::approvals(repo) {
        Ok(a) => (a, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    let mut drills = Vec::new();
    for (name, rec) in records {
        match serde_json::from_value::<DrillReport>(rec.report.clone()) {
            Ok(mut r) => {
                r.id = name;
                approve::attach(&mut r, &rec.report, &approvals);
                drills.push(r);
            }
            Err(e) => unreadable.push((name, format!("its report cannot be read: {e}"))),
        }
    }
    drills.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
    Ok(History {
        drills,
        unreadable,
        approvals_error,
    })
}

/// One stored drill by id, with its approvals.
pub fn drill(repo: &Repository, id: &str) -> Result<Option<DrillReport>> {
    let Some(rec) = repo.drill(id)? else {
        return Ok(None);
    };
    let mut r: DrillReport = serde_json::from_value(rec.report.clone()).map_err(|e| {
        crate::OpsError::invalid(format!("drill {id}: its report cannot be read: {e}"))
    })?;
    r.id = id.to_string();
    approve::attach(&mut r, &rec.report, &approve::approvals(repo)?);
    Ok(Some(r))
}
