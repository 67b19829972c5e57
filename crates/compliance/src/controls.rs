//! The controls and their thresholds: each takes its part of the
//! [`Evidence`] and says pass, attention or fail, why, and which facts
//! show it. The thresholds are constants here and in the README
//! ("Compliance evidence report"), and each control states its own in
//! `criteria`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use holdfast_drill::duration::{measured, Human};
use holdfast_drill::Outcome;

use crate::evidence::{self, Evidence};
use crate::{
    fact, row, time, BackupLane, Chart, Control, DrillPoint, DrillSeries, Row, Status, Table,
};

/// A playbook without `[objectives] every` must pass at least this often.
pub const DEFAULT_DRILL_EVERY: u64 = 31 * 86_400;
/// A key slot older than this is due for rotation (attention).
pub const KEY_SLOT_MAX_AGE: u64 = 365 * 86_400;
/// Argon2id below these is too cheap to guess against (OWASP's minimum
/// configurations: 19 MiB with 2 passes, or 46 MiB with 1).
pub const KDF_MIN_MEMORY_KIB: u32 = 19 * 1024;
pub const KDF_MIN_MEMORY_ONE_PASS_KIB: u32 = 46 * 1024;
/// The backup chart shows at most this much history.
pub const CHART_WINDOW: u64 = 30 * 86_400;
/// Drills per playbook in the chart.
pub const CHART_DRILLS: usize = 30;
/// Signed entries listed.
pub const SIGNED_SHOWN: usize = 20;

/// Every control, in the order of the report.
pub fn evaluate(e: &Evidence) -> Vec<Control> {
    vec![
        backup_plan(e),
        disaster_recovery(e),
        encryption(e),
        audit_controls(e),
        retention(e),
        legal_holds(e),
        object_lock(e),
        erasure(e),
    ]
}

/// An age, rounded to two units: `45s`, `12m`, `5h20m`, `3d4h`.
pub fn approx(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{m}m"),
        3600..=172_799 => {
            let h = s / 3600;
            if m == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{m}m")
            }
        }
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

fn age(at: DateTime<Utc>, t: DateTime<Utc>) -> u64 {
    (at - t).num_seconds().max(0) as u64
}

fn worst(rows: &[Row], start: Status) -> Status {
    rows.iter()
        .filter_map(|r| r.status)
        .fold(start, Status::worst)
}

fn count(rows: &[Row], s: Status) -> usize {
    rows.iter().filter(|r| r.status == Some(s)).count()
}

fn table(title: &str, columns: &[&str], rows: Vec<Row>, empty: &str) -> Table {
    Table {
        title: title.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        empty: empty.into(),
    }
}

fn refs(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn short(id: &str) -> String {
    id.get(..8).unwrap_or(id).to_string()
}

// ---- HIPAA 164.308(a)(7)(ii)(A): data backup plan ----

fn backup_plan(e: &Evidence) -> Control {
    let b = &e.backups;
    let at = e.at;
    let mut rows = Vec::new();
    let mut lanes = Vec::new();
    let mut others = Vec::new();
    let mut problems = Vec::new();
    for s in &b.sources {
        let last = s.snapshots.last();
        let gaps = s.rpo_seconds.map(|rpo| {
            let mut n = 0;
            let mut prev: Option<DateTime<Utc>> = None;
            for t in s
                .snapshots
                .iter()
                .map(|x| x.time)
                .chain(std::iter::once(at))
            {
                if let Some(p) = prev {
                    if age(t, p) > rpo {
                        n += 1;
                    }
                }
                prev = Some(t);
            }
            n
        });
        if b.config_file.is_some() && !s.configured {
            others.push(row(
                vec![
                    s.name.clone(),
                    last.map_or("-".into(), |l| time(&l.time)),
                    s.snapshots.len().to_string(),
                ],
                None,
            ));
            continue;
        }
        let (status, why) = match (last, s.rpo_seconds) {
            (None, _) => (Status::Fail, "no backup".to_string()),
            (Some(l), Some(rpo)) if age(at, l.time) > rpo => (
                Status::Fail,
                format!(
                    "last backup {} old, over its RPO of {}",
                    approx(age(at, l.time)),
                    Human(rpo)
                ),
            ),
            (Some(_), Some(_)) => (Status::Pass, "within its RPO".to_string()),
            (Some(_), None) if s.configured => (
                Status::Attention,
                "no rpo in the configuration: freshness cannot be judged".to_string(),
            ),
            (Some(_), None) => (
                Status::Attention,
                "no configuration given (--config): no RPO to judge against".to_string(),
            ),
        };
        if status != Status::Pass {
            problems.push(format!("{}: {why}", s.name));
        }
        rows.push(row(
            vec![
                s.name.clone(),
                s.rpo_seconds.map_or("-".into(), |r| Human(r).to_string()),
                last.map_or("never".into(), |l| {
                    format!("{} ({})", time(&l.time), short(&l.id))
                }),
                last.map_or("-".into(), |l| approx(age(at, l.time))),
                s.snapshots.len().to_string(),
                gaps.map_or("-".into(), |g| g.to_string()),
                why,
            ],
            Some(status),
        ));
        lanes.push((s, status));
    }
    let mut status = worst(&rows, Status::Pass);
    let finding = if rows.is_empty() {
        status = Status::Attention;
        match &b.config_file {
            Some(f) => format!("the configuration {f} names no source: no backup plan to check"),
            None => "no configuration given and no snapshot stored: no backup plan to check (give --config holdfast.toml)".into(),
        }
    } else if problems.is_empty() {
        format!(
            "all {} source(s) have a backup within their RPO",
            rows.len()
        )
    } else {
        format!(
            "{} of {} source(s) not shown within an RPO: {}",
            problems.len(),
            rows.len(),
            problems.join("; ")
        )
    };
    // The chart: the last CHART_WINDOW, or less when all history is newer.
    let oldest = lanes
        .iter()
        .filter_map(|(s, _)| {
            s.snapshots
                .iter()
                .map(|x| x.time)
                .find(|t| age(at, *t) <= CHART_WINDOW)
        })
        .min();
    let window_start = at - Duration::seconds(CHART_WINDOW as i64);
    let from = match oldest {
        Some(o) => {
            let pad = Duration::seconds((age(at, o) / 20).max(60) as i64);
            (o - pad).max(window_start)
        }
        None => window_start,
    };
    let chart = Chart::Backups {
        from,
        to: at,
        sources: lanes
            .iter()
            .map(|(s, st)| BackupLane {
                source: s.name.clone(),
                rpo_seconds: s.rpo_seconds,
                backups: s
                    .snapshots
                    .iter()
                    .map(|x| x.time)
                    .filter(|t| *t >= from)
                    .collect(),
                status: *st,
            })
            .collect(),
    };
    let mut facts = vec![fact(
        "Configuration",
        b.config_file
            .clone()
            .unwrap_or_else(|| "none given (sources from the repository)".into()),
    )];
    facts.push(fact("Sources judged", rows.len().to_string()));
    let mut tables = vec![table(
        "Sources",
        &[
            "Source",
            "RPO",
            "Last backup",
            "Age",
            "Snapshots",
            "Gaps over RPO",
            "Finding",
        ],
        rows,
        "no source",
    )];
    if !others.is_empty() {
        tables.push(table(
            "Other sources in the repository (not in the configuration)",
            &["Source", "Last backup", "Snapshots"],
            others,
            "",
        ));
    }
    Control {
        id: "backup-plan".into(),
        title: "Data backup plan".into(),
        refs: refs(&["HIPAA 45 CFR 164.308(a)(7)(ii)(A)"]),
        status,
        finding,
        facts,
        tables,
        charts: if lanes.is_empty() {
            vec![]
        } else {
            vec![chart]
        },
        criteria: "pass: every configured source's newest snapshot is younger than its rpo; \
fail: a source has no snapshot or an older one; attention: a source has no rpo, or no \
configuration was given. Gaps over RPO count every interval between backups (and since the \
last) longer than the RPO."
            .into(),
    }
}

// ---- HIPAA 164.308(a)(7)(ii)(B) and (D): DR plan and its testing ----

fn disaster_recovery(e: &Evidence) -> Control {
    let d = &e.drills;
    let at = e.at;
    let playbooks: Vec<evidence::Playbook> = if d.playbooks.is_empty() {
        let mut seen: BTreeMap<String, evidence::Playbook> = BTreeMap::new();
        for r in &d.history {
            seen.insert(
                r.playbook.clone(),
                evidence::Playbook {
                    name: r.playbook.clone(),
                    file: r.playbook_file.clone(),
                    rto_seconds: r.objectives.rto_seconds,
                    every_seconds: None,
                },
            );
        }
        seen.into_values().collect()
    } else {
        d.playbooks.clone()
    };
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut problems = Vec::new();
    for p in &playbooks {
        let drills: Vec<&holdfast_drill::DrillReport> =
            d.history.iter().filter(|r| r.playbook == p.name).collect();
        let every = p.every_seconds.unwrap_or(DEFAULT_DRILL_EVERY);
        let last = drills.last();
        let (status, why) = match last {
            None => (Status::Fail, "never drilled".to_string()),
            Some(l) if age(at, l.started) > every => (
                Status::Fail,
                format!(
                    "last drill {} ago; it must run every {}",
                    approx(age(at, l.started)),
                    Human(every)
                ),
            ),
            Some(l) => match l.outcome {
                Outcome::Passed => (Status::Pass, "passed".to_string()),
                Outcome::TargetMissed => (
                    Status::Attention,
                    format!("data restored and checked, but {}", l.misses().join("; ")),
                ),
                Outcome::CheckFailed => (Status::Fail, "a check failed".to_string()),
                Outcome::Error => (
                    Status::Fail,
                    format!(
                        "did not complete: {}",
                        l.error.as_deref().unwrap_or("error")
                    ),
                ),
            },
        };
        if status != Status::Pass {
            problems.push(format!("{}: {why}", p.name));
        }
        let passed = drills
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count();
        rows.push(row(
            vec![
                p.name.clone(),
                Human(every).to_string(),
                format!("{} ({passed} passed)", drills.len()),
                last.map_or("never".into(), |l| {
                    format!("{} ({})", time(&l.started), l.id)
                }),
                last.map_or("-".into(), |l| l.outcome.as_str().to_string()),
                last.map_or("-".into(), |l| {
                    format!(
                        "{} / {}",
                        measured(l.rto_seconds),
                        Human(l.objectives.rto_seconds)
                    )
                }),
                last.map_or("-".into(), |l| {
                    let names: Vec<String> = l
                        .approvals
                        .iter()
                        .filter(|a| a.verified)
                        .map(|a| format!("{} ({})", a.printed_name, a.signer))
                        .collect();
                    if names.is_empty() {
                        "not approved".into()
                    } else {
                        names.join(", ")
                    }
                }),
                why,
            ],
            Some(status),
        ));
        let skip = drills.len().saturating_sub(CHART_DRILLS);
        series.push(DrillSeries {
            playbook: p.name.clone(),
            rto_target_seconds: p.rto_seconds,
            drills: drills[skip..]
                .iter()
                .map(|r| DrillPoint {
                    id: r.id.clone(),
                    started: r.started,
                    rto_seconds: r.rto_seconds,
                    outcome: r.outcome.as_str().to_string(),
                })
                .collect(),
        });
    }
    let mut status = worst(&rows, Status::Pass);
    let mut facts = vec![
        fact(
            "Playbooks",
            if d.playbooks.is_empty() {
                format!("{} (from the drill history)", playbooks.len())
            } else {
                format!("{} (given)", playbooks.len())
            },
        ),
        fact("Drills recorded", d.history.len().to_string()),
    ];
    let mut notes = Vec::new();
    if let Some(f) = &d.forecast {
        let total = format!(
            "{}{}",
            if f.complete { "" } else { "at least " },
            measured(f.total_seconds)
        );
        facts.push(fact("Full-site restore forecast", total.clone()));
        facts.push(fact(
            "Site RTO",
            f.site_rto_seconds
                .map_or("none in the playbooks".into(), |t| Human(t).to_string()),
        ));
        match (f.site_rto_seconds, f.meets_site_rto) {
            (Some(t), Some(false)) => {
                status = status.worst(Status::Attention);
                notes.push(format!(
                    "the full-site forecast ({total}) is over the site RTO of {}",
                    Human(t)
                ));
            }
            (Some(_), _) if !f.complete => {
                status = status.worst(Status::Attention);
                notes.push(
                    "the site RTO is not shown to be met: some sources were never drilled".into(),
                );
            }
            _ => {}
        }
    }
    if !d.unreadable.is_empty() {
        status = status.worst(Status::Attention);
        notes.push(format!(
            "{} drill record(s) cannot be read",
            d.unreadable.len()
        ));
    }
    let finding = if playbooks.is_empty() {
        status = Status::Fail;
        "no drill recorded and no playbook given: the disaster recovery plan has never been tested"
            .into()
    } else if problems.is_empty() && notes.is_empty() {
        format!(
            "every playbook ({}) passed its last drill within its interval",
            playbooks.len()
        )
    } else {
        let mut all = problems.clone();
        all.extend(notes);
        all.join("; ")
    };
    let mut tables = vec![table(
        "Drills per playbook",
        &[
            "Playbook",
            "Every",
            "Drills",
            "Last drill",
            "Result",
            "RTO measured / target",
            "Approved by",
            "Finding",
        ],
        rows,
        "no playbook",
    )];
    if let Some(f) = &d.forecast {
        tables.push(table(
            "Full-site forecast",
            &["Source", "Kind", "Size", "Forecast", "Drills"],
            f.sources
                .iter()
                .map(|s| {
                    row(
                        vec![
                            s.source.clone(),
                            s.kind.clone(),
                            bytes(s.bytes),
                            s.seconds.map_or("never drilled".into(), measured),
                            s.drills.to_string(),
                        ],
                        None,
                    )
                })
                .collect(),
            "no source stored",
        ));
    }
    Control {
        id: "disaster-recovery".into(),
        title: "Disaster recovery plan and its testing".into(),
        refs: refs(&[
            "HIPAA 45 CFR 164.308(a)(7)(ii)(B)",
            "HIPAA 45 CFR 164.308(a)(7)(ii)(D)",
        ]),
        status,
        finding,
        facts,
        tables,
        charts: if series.is_empty() {
            vec![]
        } else {
            vec![Chart::Drills { playbooks: series }]
        },
        criteria: format!(
            "per playbook: pass when its last drill passed and started within the playbook's \
[objectives] every (default {}); attention when it restored and checked the data but missed \
its RTO or RPO; fail when a check failed, it did not complete, it is older than the interval \
or there is none. The full-site forecast over the site RTO, or incomplete, is attention.",
            Human(DEFAULT_DRILL_EVERY)
        ),
    }
}

pub(crate) fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---- HIPAA 164.312(a)(2)(iv), (e)(2)(ii): encryption ----

/// Whether argon2id with these costs meets the minimum.
pub fn kdf_strong(memory_kib: u32, iterations: u32) -> bool {
    (memory_kib >= KDF_MIN_MEMORY_KIB && iterations >= 2)
        || (memory_kib >= KDF_MIN_MEMORY_ONE_PASS_KIB && iterations >= 1)
}

fn encryption(e: &Evidence) -> Control {
    let x = &e.encryption;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for s in &x.slots {
        let a = age(e.at, s.created);
        let (kind, hashing, strong) = match (s.memory_kib, s.iterations) {
            (Some(m), Some(t)) => (
                "password",
                format!("{} ({} MiB, {} pass(es))", s.kdf, m / 1024, t),
                kdf_strong(m, t),
            ),
            _ if s.kdf.contains("keyfile") => {
                ("key file", format!("{} (256-bit key)", s.kdf), true)
            }
            _ => ("unknown", s.kdf.clone(), false),
        };
        let (status, why) = if !strong {
            (
                Status::Fail,
                "password hashing below the minimum (19 MiB with 2 passes, or 46 MiB): replace it with `holdfast key passwd`".to_string(),
            )
        } else if a > KEY_SLOT_MAX_AGE {
            (
                Status::Attention,
                format!(
                    "{} old, over {}: rotate it (`holdfast key passwd`)",
                    approx(a),
                    Human(KEY_SLOT_MAX_AGE)
                ),
            )
        } else {
            (Status::Pass, "ok".to_string())
        };
        if status != Status::Pass {
            problems.push(format!("slot {}: {why}", short(&s.id)));
        }
        rows.push(row(
            vec![
                format!(
                    "{}{}",
                    short(&s.id),
                    if s.current { " (this report's)" } else { "" }
                ),
                kind.into(),
                hashing,
                time(&s.created),
                approx(a),
                s.label.clone(),
                why,
            ],
            Some(status),
        ));
    }
    for (id, why) in &x.damaged {
        problems.push(format!("slot {} damaged", short(id)));
        rows.push(row(
            vec![
                short(id),
                "damaged".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("cannot be read: {why} (`holdfast key remove`)"),
            ],
            Some(Status::Attention),
        ));
    }
    let mut status = worst(&rows, Status::Pass);
    if x.format_version < x.newest_format {
        status = status.worst(Status::Attention);
        problems.push(format!(
            "repository format {} (newest {}): objects are not bound to their names; run `holdfast migrate`",
            x.format_version, x.newest_format
        ));
    }
    let finding = if problems.is_empty() {
        format!(
            "every object encrypted ({}); {} key slot(s), all with strong hashing and younger than {}",
            x.cipher,
            x.slots.len(),
            Human(KEY_SLOT_MAX_AGE)
        )
    } else {
        problems.join("; ")
    };
    Control {
        id: "encryption".into(),
        title: "Encryption at rest and in transit".into(),
        refs: refs(&[
            "HIPAA 45 CFR 164.312(a)(2)(iv)",
            "HIPAA 45 CFR 164.312(e)(2)(ii)",
        ]),
        status,
        finding,
        facts: vec![
            fact(
                "Repository format",
                format!("{} (newest {})", x.format_version, x.newest_format),
            ),
            fact("Cipher", x.cipher.clone()),
            fact("Key slots", x.slots.len().to_string()),
            fact(
                "In transit",
                "data leaves the host only encrypted and authenticated (the storage sees ciphertext; S3 over HTTPS unless --s3-allow-http)",
            ),
        ],
        tables: vec![table(
            "Key slots",
            &["Slot", "Kind", "Hashing", "Created", "Age", "Label", "Finding"],
            rows,
            "no key slot",
        )],
        charts: vec![],
        criteria: format!(
            "fail: a password slot's argon2id is below 19 MiB with 2 passes (or 46 MiB with one); \
attention: a slot older than {}, a damaged slot, or a repository format older than the newest.",
            Human(KEY_SLOT_MAX_AGE)
        ),
    }
}

// ---- HIPAA 164.312(b), 21 CFR 11.10(e): audit controls ----

fn audit_controls(e: &Evidence) -> Control {
    let a = &e.audit;
    let mut status = Status::Pass;
    let finding = if !a.intact {
        status = Status::Fail;
        format!(
            "the audit trail is BROKEN: {} problem(s) ({})",
            a.problems.len(),
            a.problems
                .first()
                .map(|(o, d)| format!("{o}: {d}"))
                .unwrap_or_default()
        )
    } else if a.entries_at == 0 {
        status = Status::Attention;
        "the audit trail holds no entry at this time".into()
    } else {
        format!(
            "audit trail verified intact: {} entries, {} signature(s) valid",
            a.entries_at, a.signatures
        )
    };
    let facts = vec![
        fact(
            "Verified",
            if a.intact {
                "intact (every entry, link, number and signature; reaches every head a snapshot recorded)"
            } else {
                "BROKEN"
            },
        ),
        fact(
            "Entries",
            if a.entries_at == a.entries {
                a.entries.to_string()
            } else {
                format!(
                    "{} at the report's time ({} stored now)",
                    a.entries_at, a.entries
                )
            },
        ),
        fact("First entry", a.first.map_or("-".into(), |t| time(&t))),
        fact(
            "Head",
            a.head
                .as_ref()
                .map_or("empty".into(), |(s, h)| format!("entry {s}, hash {h}")),
        ),
        fact("Signatures verified", a.signatures.to_string()),
        fact("Snapshot heads checked", a.snapshot_heads.to_string()),
        fact(
            "This host's witness",
            a.witness
                .map_or("none on this host".into(), |s| format!("entry {s}")),
        ),
        fact("Signers registered", a.signers.len().to_string()),
    ];
    let mut tables = vec![
        table(
            "Signers",
            &["Signer", "Printed name", "Key fingerprint", "Registered"],
            a.signers
                .iter()
                .map(|s| {
                    row(
                        vec![
                            s.name.clone(),
                            s.printed_name.clone(),
                            s.fingerprint.clone(),
                            time(&s.added),
                        ],
                        None,
                    )
                })
                .collect(),
            "no signer registered",
        ),
        table(
            "Signed entries (most recent)",
            &["Entry", "Time", "Signer", "Operation", "Meaning"],
            a.signed
                .iter()
                .rev()
                .take(SIGNED_SHOWN)
                .map(|s| {
                    row(
                        vec![
                            s.seq.to_string(),
                            time(&s.time),
                            s.signer.clone(),
                            s.operation.clone(),
                            s.meaning.clone(),
                        ],
                        None,
                    )
                })
                .collect(),
            "no signed entry",
        ),
    ];
    if !a.problems.is_empty() {
        tables.insert(
            0,
            table(
                "Problems",
                &["Object", "Problem"],
                a.problems
                    .iter()
                    .map(|(o, d)| row(vec![o.clone(), d.clone()], Some(Status::Fail)))
                    .collect(),
                "",
            ),
        );
    }
    Control {
        id: "audit-controls".into(),
        title: "Audit controls and audit trail".into(),
        refs: refs(&["HIPAA 45 CFR 164.312(b)", "21 CFR 11.10(e)"]),
        status,
        finding,
        facts,
        tables,
        charts: vec![],
        criteria:
            "fail: `holdfast audit verify` finds a problem (an edited, missing, reordered or \
inserted entry, a truncated trail, a bad signature); attention: no entry. The verification is of \
the trail as stored when the report is made."
                .into(),
    }
}

// ---- HIPAA 164.316(b)(2)(i), GDPR 5(1)(e): retention ----

fn retention(e: &Evidence) -> Control {
    let r = &e.retention;
    let mut status = Status::Pass;
    let mut problems = Vec::new();
    let policies = table(
        "Policies in force",
        &[
            "Policy",
            "File",
            "Selects",
            "Keep",
            "Floor",
            "Max age",
            "Archive after",
        ],
        r.policies
            .iter()
            .map(|p| {
                row(
                    vec![
                        p.name.clone(),
                        p.file.clone(),
                        p.selection.clone(),
                        p.keep.clone(),
                        p.floor.clone().unwrap_or_else(|| "-".into()),
                        p.max_age.clone().unwrap_or_else(|| "none".into()),
                        p.archive_after.clone().unwrap_or_else(|| "-".into()),
                    ],
                    None,
                )
            })
            .collect(),
        "no policy given",
    );
    let mut due = Vec::new();
    let mut unselected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut held = 0;
    for d in &r.decisions {
        if d.action == "purge" {
            let past_max = d.rule.starts_with("past max_age");
            let s = if past_max {
                Status::Fail
            } else {
                Status::Attention
            };
            due.push(row(
                vec![
                    short(&d.snapshot),
                    time(&d.time),
                    d.source.clone(),
                    d.policy.clone().unwrap_or_default(),
                    d.rule.clone(),
                ],
                Some(s),
            ));
        } else if d.policy.is_none() && !d.rule.starts_with("held by") {
            *unselected.entry(d.source.as_str()).or_default() += 1;
        }
        if d.rule.starts_with("held by") {
            held += 1;
        }
    }
    if r.files.is_empty() {
        status = Status::Attention;
        problems.push(
            "no policy file given (--policy): retention and storage limitation not evaluated"
                .into(),
        );
    } else if let Some(err) = &r.plan_error {
        status = Status::Fail;
        problems.push(format!("the policies cannot be planned: {err}"));
    } else {
        let past = count(&due, Status::Fail);
        let pending = count(&due, Status::Attention);
        if past > 0 {
            status = Status::Fail;
            problems.push(format!(
                "{past} snapshot(s) kept past their policy's max_age (storage limitation): run `holdfast policy apply --yes`"
            ));
        }
        if pending > 0 {
            status = status.worst(Status::Attention);
            problems.push(format!(
                "{pending} snapshot(s) due for purging by the keep rules"
            ));
        }
        if !unselected.is_empty() {
            status = status.worst(Status::Attention);
            problems.push(format!(
                "snapshots no policy selects (sources {}): no retention defined for them",
                unselected.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !r.policies.iter().any(|p| p.floor_six_years) {
            status = status.worst(Status::Attention);
            problems.push(
                "no policy guarantees six years (a floor of at least 6y) for what it selects"
                    .into(),
            );
        }
    }
    if !r.warnings.is_empty() {
        status = status.worst(Status::Attention);
        problems.extend(r.warnings.iter().cloned());
    }
    let finding = if problems.is_empty() {
        format!(
            "{} policy(ies) in force; nothing past due; {} snapshot(s) planned",
            r.policies.len(),
            r.decisions.len()
        )
    } else {
        problems.join("; ")
    };
    let kept = r.decisions.iter().filter(|d| d.action == "keep").count();
    let archive = r.decisions.iter().filter(|d| d.action == "archive").count();
    let facts = vec![
        fact(
            "Policy files",
            if r.files.is_empty() {
                "none given".into()
            } else {
                r.files.join(", ")
            },
        ),
        fact("Snapshots planned", r.decisions.len().to_string()),
        fact("Kept", kept.to_string()),
        fact("To archive", archive.to_string()),
        fact("Past due (purge)", due.len().to_string()),
        fact("Kept by a legal hold", held.to_string()),
    ];
    let mut tables = vec![
        policies,
        table(
            "Past due",
            &["Snapshot", "Time", "Source", "Policy", "Rule"],
            due,
            "nothing past due",
        ),
    ];
    if !unselected.is_empty() {
        tables.push(table(
            "Snapshots no policy selects",
            &["Source", "Snapshots"],
            unselected
                .iter()
                .map(|(s, n)| row(vec![s.to_string(), n.to_string()], Some(Status::Attention)))
                .collect(),
            "",
        ));
    }
    Control {
        id: "retention".into(),
        title: "Retention and storage limitation".into(),
        refs: refs(&["HIPAA 45 CFR 164.316(b)(2)(i)", "GDPR Art. 5(1)(e)"]),
        status,
        finding,
        facts,
        tables,
        charts: vec![],
        criteria:
            "the retention plan at the report's time (`holdfast policy plan --at`): fail when \
a snapshot is kept past its policy's max_age (not held) or the policies conflict; attention when \
keep rules have purges pending, a snapshot is selected by no policy, no policy has a floor of six \
years or more, or no policy file was given."
                .into(),
    }
}

// ---- Legal holds ----

fn legal_holds(e: &Evidence) -> Control {
    let h = &e.holds;
    let mut rows = Vec::new();
    let mut missing = 0;
    for x in &h.holds {
        let (state, s) = if !x.missing.is_empty() {
            missing += 1;
            (
                format!(
                    "held snapshot(s) no longer stored: {}",
                    x.missing
                        .iter()
                        .map(|m| short(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Status::Fail,
            )
        } else {
            match &x.released {
                None => ("open".to_string(), Status::Pass),
                Some((t, by, signed)) => (
                    format!(
                        "released {} by {by}{}",
                        time(t),
                        if *signed { " (signed)" } else { "" }
                    ),
                    Status::Pass,
                ),
            }
        };
        rows.push(row(
            vec![
                x.id.clone(),
                x.case.clone(),
                x.selector.clone(),
                format!("{} by {}", time(&x.placed_at), x.placed_by),
                x.covered.to_string(),
                state,
            ],
            Some(s),
        ));
    }
    let open = h.holds.iter().filter(|x| x.released.is_none()).count();
    let released = h.holds.len() - open;
    let mut status = worst(&rows, Status::Pass);
    let mut problems = Vec::new();
    if missing > 0 {
        problems.push(format!(
            "{missing} hold(s) name snapshots that are no longer stored: held evidence was deleted"
        ));
    }
    if !h.unreadable.is_empty() {
        status = status.worst(Status::Attention);
        problems.push(format!(
            "{} hold record(s) cannot be read (every snapshot counts as held until repaired)",
            h.unreadable.len()
        ));
    }
    let finding = if problems.is_empty() {
        format!("{open} hold(s) open, {released} released; every held snapshot is stored")
    } else {
        problems.join("; ")
    };
    Control {
        id: "legal-holds".into(),
        title: "Legal holds".into(),
        refs: refs(&[
            "Litigation hold (preservation of evidence)",
            "GDPR Art. 17(3)(e)",
        ]),
        status,
        finding,
        facts: vec![
            fact("Open", open.to_string()),
            fact("Released", released.to_string()),
        ],
        tables: vec![table(
            "Holds",
            &["Hold", "Case", "Holds", "Placed", "Snapshots", "State"],
            rows,
            "no hold placed",
        )],
        charts: vec![],
        criteria: "fail: a hold names a snapshot that is no longer stored; attention: a hold \
record cannot be read. Open and released holds are listed as evidence."
            .into(),
    }
}

// ---- Object Lock ----

fn object_lock(e: &Evidence) -> Control {
    let o = &e.object_lock;
    let (status, finding) = match (&o.configured, o.retention) {
        (Some((mode, days)), true) => (
            Status::Pass,
            format!("every object is written with Object Lock retention ({mode} mode, {days} days): storage refuses deletion and overwrite until then"),
        ),
        (Some((mode, days)), false) => (
            Status::Fail,
            format!("the repository was created with Object Lock ({mode}, {days} days) but its storage ({}) does not enforce it", o.storage),
        ),
        (None, true) => (
            Status::Attention,
            format!("the storage ({}) supports Object Lock but the repository sets no retention (init --lock-mode and --lock-days)", o.storage),
        ),
        (None, false) => (
            Status::Attention,
            format!("the storage ({}) has no Object Lock: objects are write-once by protocol, but anyone with access to the storage can delete them", o.storage),
        ),
    };
    Control {
        id: "object-lock".into(),
        title: "Immutable storage (Object Lock)".into(),
        refs: refs(&["HIPAA 45 CFR 164.312(c)(1)"]),
        status,
        finding,
        facts: vec![
            fact("Storage", o.storage.clone()),
            fact(
                "Retention (WORM)",
                if o.retention {
                    "supported"
                } else {
                    "not supported"
                },
            ),
            fact(
                "Legal holds in storage",
                if o.legal_hold {
                    "supported"
                } else {
                    "not supported"
                },
            ),
            fact(
                "Repository setting",
                o.configured
                    .as_ref()
                    .map_or("none".into(), |(m, d)| format!("{m} mode, {d} days")),
            ),
        ],
        tables: vec![],
        charts: vec![],
        criteria: "pass: the repository sets Object Lock retention and its storage enforces it; \
fail: set but not enforced; attention: not set."
            .into(),
    }
}

// ---- GDPR Art. 17 ----

fn erasure(e: &Evidence) -> Control {
    let x = &e.erasures;
    let mut restores = Vec::new();
    let mut missing_total = 0;
    let mut skipped = 0;
    for r in &x.restores {
        // What this restore had to apply: erasures recorded after its
        // snapshot was taken and before it ran, of its kind.
        let due: Vec<&evidence::Erasure> = match r.snapshot_time {
            Some(st) => x
                .erasures
                .iter()
                .filter(|er| er.recorded_at > st && er.recorded_at <= r.time)
                .filter(|er| match r.kind.as_str() {
                    "files" => er.kind == "path",
                    "postgres-physical" => er.kind == "sql",
                    // A logical restore applies the erasures of its source
                    // database, which the trail does not name: checked by
                    // what it says it applied.
                    _ => false,
                })
                .collect(),
            None => Vec::new(),
        };
        let done: BTreeSet<&str> = r
            .applied
            .iter()
            .chain(&r.pending)
            .chain(&r.not_applied)
            .map(String::as_str)
            .collect();
        let missing: Vec<&str> = due
            .iter()
            .map(|er| er.id.as_str())
            .filter(|id| !done.contains(id))
            .collect();
        let (status, what) = if !missing.is_empty() {
            missing_total += 1;
            (Status::Fail, format!("NOT applied: {}", missing.join(", ")))
        } else if let Some(reason) = &r.skipped_reason {
            skipped += 1;
            (
                Status::Attention,
                format!(
                    "register skipped ({reason}); not applied: {}",
                    if r.not_applied.is_empty() {
                        "none due".into()
                    } else {
                        r.not_applied.join(", ")
                    }
                ),
            )
        } else if r.applied.is_empty() && r.pending.is_empty() {
            (Status::Pass, "none due".to_string())
        } else {
            let mut s = String::new();
            if !r.applied.is_empty() {
                s.push_str(&format!("applied {}", r.applied.join(", ")));
            }
            if !r.pending.is_empty() {
                if !s.is_empty() {
                    s.push_str("; ");
                }
                s.push_str(&format!(
                    "pending in the restored data directory: {}",
                    r.pending.join(", ")
                ));
            }
            (Status::Pass, s)
        };
        restores.push(row(
            vec![
                time(&r.time),
                r.seq.to_string(),
                r.actor.clone(),
                r.kind.clone(),
                r.snapshot.as_deref().map_or("-".into(), short),
                match r.snapshot_time {
                    Some(t) => time(&t),
                    None => "no longer stored".into(),
                },
                what,
            ],
            Some(status),
        ));
    }
    let mut status = worst(&restores, Status::Pass);
    let mut problems = Vec::new();
    if !x.unreadable.is_empty() {
        status = Status::Fail;
        problems.push(format!(
            "{} erasure record(s) cannot be read: restores cannot tell what to erase again",
            x.unreadable.len()
        ));
    }
    if missing_total > 0 {
        problems.push(format!(
            "{missing_total} restore(s) did not re-apply erasures due"
        ));
    }
    if skipped > 0 {
        problems.push(format!(
            "{skipped} restore(s) skipped the register (reason on the audit trail)"
        ));
    }
    let finding = if !problems.is_empty() {
        problems.join("; ")
    } else if x.erasures.is_empty() {
        "no erasure registered".into()
    } else {
        format!(
            "{} erasure(s) registered; each of the last {} restore(s) re-applied what was due",
            x.erasures.len(),
            x.restores.len()
        )
    };
    Control {
        id: "erasure".into(),
        title: "Right to erasure in backups".into(),
        refs: refs(&["GDPR Art. 17"]),
        status,
        finding,
        facts: vec![
            fact("Erasures registered", x.erasures.len().to_string()),
            fact("Restores examined", x.restores.len().to_string()),
        ],
        tables: vec![
            table(
                "Erasure register",
                &["Erasure", "Reference", "Erases", "Recorded"],
                x.erasures
                    .iter()
                    .map(|er| {
                        row(
                            vec![
                                er.id.clone(),
                                er.reference.clone(),
                                er.target.clone(),
                                format!("{} by {}", time(&er.recorded_at), er.recorded_by),
                            ],
                            None,
                        )
                    })
                    .collect(),
                "no erasure registered",
            ),
            table(
                "Last restores",
                &[
                    "Time",
                    "Entry",
                    "Actor",
                    "Kind",
                    "Snapshot",
                    "Snapshot time",
                    "Erasures",
                ],
                restores,
                "no restore on the audit trail",
            ),
        ],
        charts: vec![],
        criteria: "for each recent restore on the audit trail: the erasures recorded after its \
snapshot and before it ran (path erasures for files, SQL for physical restores) must be applied \
or pending, else fail; a restore that skipped the register (--skip-erasures, for a legal hold) \
is attention; an unreadable erasure record is a fail."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn empty(at: DateTime<Utc>) -> Evidence {
        Evidence {
            at,
            backups: Backups {
                config_file: None,
                sources: vec![],
            },
            drills: Drills {
                playbooks: vec![],
                history: vec![],
                forecast: None,
                unreadable: vec![],
            },
            encryption: Encryption {
                format_version: 3,
                newest_format: 3,
                cipher: "AES-256-GCM".into(),
                slots: vec![],
                damaged: vec![],
            },
            audit: Audit {
                intact: true,
                entries: 1,
                entries_at: 1,
                first: None,
                head: None,
                signatures: 0,
                snapshot_heads: 0,
                witness: None,
                problems: vec![],
                signers: vec![],
                signed: vec![],
            },
            retention: Retention {
                files: vec![],
                policies: vec![],
                decisions: vec![],
                plan_error: None,
                warnings: vec![],
            },
            holds: Holds {
                holds: vec![],
                unreadable: vec![],
            },
            object_lock: ObjectLock {
                storage: "local directory".into(),
                retention: false,
                legal_hold: false,
                configured: None,
            },
            erasures: Erasures {
                erasures: vec![],
                unreadable: vec![],
                restores: vec![],
            },
        }
    }

    fn get(e: &Evidence, id: &str) -> Control {
        evaluate(e).into_iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn kdf_minimum_and_ages() {
        assert!(kdf_strong(64 * 1024, 3));
        assert!(kdf_strong(19 * 1024, 2));
        assert!(kdf_strong(46 * 1024, 1));
        assert!(!kdf_strong(19 * 1024, 1));
        assert!(!kdf_strong(8 * 1024, 3));
        assert_eq!(approx(45), "45s");
        assert_eq!(approx(12 * 60 + 5), "12m");
        assert_eq!(approx(5 * 3600 + 20 * 60), "5h20m");
        assert_eq!(approx(3 * 86_400 + 4 * 3600 + 7), "3d4h");
        assert_eq!(approx(3 * 86_400 + 59), "3d");
    }

    #[test]
    fn a_backup_is_judged_against_its_rpo_at_the_instant() {
        let mut e = empty(t("2026-12-02T12:00:00Z"));
        e.backups.config_file = Some("holdfast.toml".into());
        let snap = |s: &str| Snap {
            id: "ab".repeat(32),
            time: t(s),
            kind: "files".into(),
        };
        e.backups.sources = vec![
            Source {
                name: "fresh".into(),
                rpo_seconds: Some(26 * 3600),
                configured: true,
                snapshots: vec![snap("2026-12-01T12:00:00Z")],
            },
            Source {
                name: "stale".into(),
                rpo_seconds: Some(26 * 3600),
                configured: true,
                snapshots: vec![snap("2026-11-25T12:00:00Z"), snap("2026-11-30T12:00:00Z")],
            },
        ];
        let c = get(&e, "backup-plan");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.tables[0].rows[0].status, Some(Status::Pass));
        assert_eq!(c.tables[0].rows[1].status, Some(Status::Fail));
        // Two gaps over the RPO: between the backups and since the last.
        assert_eq!(c.tables[0].rows[1].cells[5], "2");
        assert!(
            c.finding.contains("stale: last backup 2d old"),
            "{}",
            c.finding
        );
        e.backups.sources.pop();
        assert_eq!(get(&e, "backup-plan").status, Status::Pass);
    }

    #[test]
    fn a_restore_that_left_out_a_due_erasure_fails() {
        let mut e = empty(t("2026-12-02T12:00:00Z"));
        e.erasures.erasures = vec![Erasure {
            id: "E-20261201T000000Z-aaaaaa".into(),
            reference: "DSAR-1".into(),
            kind: "path".into(),
            database: None,
            target: "path /srv/p/**".into(),
            recorded_by: "dpo".into(),
            recorded_at: t("2026-12-01T00:00:00Z"),
        }];
        let restore = |applied: Vec<String>, snapshot: &str| Restore {
            seq: 9,
            time: t("2026-12-02T00:00:00Z"),
            actor: "op".into(),
            kind: "files".into(),
            snapshot: Some("ab".repeat(32)),
            snapshot_time: Some(t(snapshot)),
            applied,
            pending: vec![],
            skipped_reason: None,
            not_applied: vec![],
        };
        e.erasures.restores = vec![restore(vec![], "2026-11-30T00:00:00Z")];
        let c = get(&e, "erasure");
        assert_eq!(c.status, Status::Fail);
        assert!(c.finding.contains("did not re-apply"), "{}", c.finding);
        // Applied: pass. A snapshot taken after the erasure: nothing due.
        e.erasures.restores = vec![restore(
            vec!["E-20261201T000000Z-aaaaaa".into()],
            "2026-11-30T00:00:00Z",
        )];
        assert_eq!(get(&e, "erasure").status, Status::Pass);
        e.erasures.restores = vec![restore(vec![], "2026-12-01T06:00:00Z")];
        assert_eq!(get(&e, "erasure").status, Status::Pass);
    }

    #[test]
    fn retention_past_max_age_fails_and_a_hold_keeps_lawfully() {
        let mut e = empty(t("2026-12-02T12:00:00Z"));
        e.retention.files = vec!["p.toml".into()];
        e.retention.policies = vec![Policy {
            name: "p".into(),
            file: "p.toml".into(),
            selection: "source docs".into(),
            keep: "last 1".into(),
            floor: Some("6y".into()),
            floor_six_years: true,
            max_age: Some("7y".into()),
            archive_after: None,
        }];
        let d = |action: &str, rule: &str| Decision {
            snapshot: "cd".repeat(32),
            time: t("2018-01-01T00:00:00Z"),
            source: "docs".into(),
            action: action.into(),
            rule: rule.into(),
            policy: Some("p".into()),
        };
        e.retention.decisions = vec![d("purge", "past max_age 7y")];
        assert_eq!(get(&e, "retention").status, Status::Fail);
        e.retention.decisions = vec![d("keep", "held by CASE-1")];
        assert_eq!(get(&e, "retention").status, Status::Pass);
        e.retention.decisions = vec![d("purge", "no keep rule keeps it")];
        assert_eq!(get(&e, "retention").status, Status::Attention);
    }

    fn drill(started: &str, outcome: &str, rto: f64) -> holdfast_drill::DrillReport {
        serde_json::from_value(serde_json::json!({
            "version": 1, "id": format!("D-{started}"), "playbook": "nightly",
            "playbook_file": "nightly.toml", "host": "h", "started": started,
            "finished": started, "outcome": outcome,
            "objectives": {"rto_seconds": 60, "rpo_seconds": 93600, "timeout_seconds": 600},
            "rto_seconds": rto, "rto_met": rto <= 60.0, "rpo_met": true, "restores": [],
        }))
        .unwrap()
    }

    #[test]
    fn drills_pass_miss_their_target_fail_and_go_stale() {
        let mut e = empty(t("2026-12-02T12:00:00Z"));
        e.drills.playbooks = vec![evidence::Playbook {
            name: "nightly".into(),
            file: "nightly.toml".into(),
            rto_seconds: 60,
            every_seconds: Some(86_400),
        }];
        e.drills.history = vec![drill("2026-12-02T06:00:00Z", "passed", 12.0)];
        assert_eq!(get(&e, "disaster-recovery").status, Status::Pass);
        e.drills
            .history
            .push(drill("2026-12-02T07:00:00Z", "target-missed", 75.0));
        let c = get(&e, "disaster-recovery");
        assert_eq!(c.status, Status::Attention, "{}", c.finding);
        let html = crate::html::render(&crate::Report::new(
            crate::Head {
                generated_at: e.at,
                at: e.at,
                repository: "/r".into(),
                repository_id: "00".into(),
                host: "h".into(),
            },
            vec![c],
            vec![],
        ));
        // The missed drill's bar is amber, the passed one green.
        assert!(html.contains("fill=\"#9a6700\"><title>D-2026-12-02T07:00:00Z"));
        e.drills
            .history
            .push(drill("2026-12-02T08:00:00Z", "check-failed", 20.0));
        assert_eq!(get(&e, "disaster-recovery").status, Status::Fail);
        e.drills.history = vec![drill("2026-11-30T08:00:00Z", "passed", 20.0)];
        let c = get(&e, "disaster-recovery");
        assert_eq!(c.status, Status::Fail);
        assert!(c.finding.contains("must run every 24h"), "{}", c.finding);
    }

    #[test]
    fn the_report_counts_and_takes_the_worst() {
        let e = empty(t("2026-12-02T12:00:00Z"));
        let r = crate::Report::new(
            crate::Head {
                generated_at: e.at,
                at: e.at,
                repository: "/r".into(),
                repository_id: "00".into(),
                host: "h".into(),
            },
            evaluate(&e),
            vec![],
        );
        assert_eq!(r.controls.len(), 8);
        assert_eq!(
            r.summary.pass + r.summary.attention + r.summary.fail,
            r.controls.len()
        );
        // No drill at all fails; no configuration, policy or Object Lock
        // is attention.
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.control("disaster-recovery").unwrap().status, Status::Fail);
        assert_eq!(r.control("backup-plan").unwrap().status, Status::Attention);
        let html = crate::html::render(&r);
        assert_eq!(html.matches("data-control=").count(), 8);
    }
}
