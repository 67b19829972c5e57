//! Past drills, read back from their records in the repository.

use holdfast_drill::DrillReport;
use holdfast_repo::Repository;

use crate::error::Result;

/// Every drill stored in the repository, oldest first, and the records
/// that cannot be read (name, why).
pub struct History {
    pub drills: Vec<DrillReport>,
    pub unreadable: Vec<(String, String)>,
}

/// Read every drill record.
pub fn history(repo: &Repository) -> Result<History> {
    let (records, mut unreadable) = repo.drills()?;
    let mut drills = Vec::new();
    for (name, rec) in records {
        match serde_json::from_value::<DrillReport>(rec.report) {
            Ok(mut r) => {
                r.id = name;
                drills.push(r);
            }
            Err(e) => unreadable.push((name, format!("its report cannot be read: {e}"))),
        }
    }
    drills.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
    Ok(History { drills, unreadable })
}

/// One stored drill by id.
pub fn drill(repo: &Repository, id: &str) -> Result<Option<DrillReport>> {
    let Some(rec) = repo.drill(id)? else {
        return Ok(None);
    };
    let mut r: DrillReport = serde_json::from_value(rec.report).map_err(|e| {
        crate::OpsError::invalid(format!("drill {id}: its report cannot be read: {e}"))
    })?;
    r.id = id.to_string();
    Ok(Some(r))
}
