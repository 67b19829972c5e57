//! A status view with a bit of everything (a breached RPO, a failed
//! check, a running job, a drill over its RTO target): what the tests of
//! the metrics, the page and the alerts render, and what
//! `docs/daemon.md` shows. Not used by the daemon itself.

use chrono::{TimeZone, Utc};

use crate::view::*;

/// Times are offsets in seconds from a fixed instant (2026-05-28).
pub fn view() -> StatusView {
    let t = |s: i64| Utc.timestamp_opt(1_780_000_000 + s, 0).single().unwrap();
    StatusView {
        version: STATUS_VERSION,
        generated_at: Some(t(1000)),
        daemon: DaemonInfo {
            program_version: "0.1.0".into(),
            host: "db\"1\\x\nnext".into(),
            pid: 42,
            started_at: Some(t(0)),
            config_file: "/etc/holdfast/holdfast.toml".into(),
            config_loaded_at: Some(t(0)),
            config_error: None,
            stopping: false,
        },
        sources: vec![
            SourceView {
                name: "docs".into(),
                kind: "paths".into(),
                repository: Some("main".into()),
                rpo_seconds: Some(3600.0),
                last_backup_at: Some(t(-7200)),
                last_snapshot: Some("ab12cd34".into()),
                rpo_age_seconds: Some(8200.0),
                rpo_breached: true,
                anomaly: None,
            },
            SourceView {
                name: "ehr-db".into(),
                kind: "postgres-logical".into(),
                repository: Some("main".into()),
                rpo_seconds: Some(86400.0),
                last_backup_at: Some(t(-600)),
                last_snapshot: Some("77ee0011".into()),
                rpo_age_seconds: Some(1600.0),
                rpo_breached: false,
                anomaly: None,
            },
        ],
        jobs: vec![
            JobView {
                name: "docs-backup".into(),
                kind: "backup".into(),
                repository: "main".into(),
                source: Some("docs".into()),
                schedule: "0 30 1 * * *".into(),
                timezone: "UTC".into(),
                next_run: Some(t(2000)),
                last: Some(RunResult {
                    started_at: t(500),
                    finished_at: t(512),
                    duration_seconds: 12.5,
                    outcome: RunOutcome::Success,
                    attempts: 2,
                    error: None,
                    bytes_read: 1000,
                    bytes_added: 300,
                    snapshot: Some("ab12cd34".into()),
                    drill: None,
                    summary: None,
                }),
                last_success_at: Some(t(512)),
                runs_total: 3,
                failures_total: 1,
                retries_total: 2,
                bytes_read_total: 123_456_789_012,
                bytes_added_total: 4567,
                ..Default::default()
            },
            JobView {
                name: "nightly-check".into(),
                kind: "check".into(),
                repository: "main".into(),
                schedule: "0 0 3 * * *".into(),
                timezone: "Europe/Berlin".into(),
                next_run: Some(t(80_000)),
                last: Some(RunResult {
                    started_at: t(600),
                    finished_at: t(660),
                    duration_seconds: 60.0,
                    outcome: RunOutcome::Failed,
                    attempts: 1,
                    error: Some("check: 2 errors <pack 3f>".into()),
                    bytes_read: 0,
                    bytes_added: 0,
                    snapshot: None,
                    drill: None,
                    summary: Some("check: 2 errors".into()),
                }),
                runs_total: 1,
                failures_total: 1,
                ..Default::default()
            },
            JobView {
                name: "db-backup".into(),
                kind: "backup".into(),
                repository: "main".into(),
                source: Some("ehr-db".into()),
                schedule: "0 */15 * * * *".into(),
                timezone: "UTC".into(),
                next_run: Some(t(1800)),
                running: Some(RunningView {
                    started_at: Some(t(900)),
                    attempt: 1,
                    phase: "backup".into(),
                    bytes_done: 3_000_000,
                    bytes_total: 8_000_000,
                }),
                ..Default::default()
            },
        ],
        drills: vec![DrillView {
            playbook: "ehr".into(),
            drill_id: Some("D-1".into()),
            at: Some(t(100)),
            passed: false,
            outcome: "target-missed".into(),
            rto_seconds: Some(1900.0),
            rto_target_seconds: Some(1800.0),
            rpo_seconds: Some(60.0),
            rpo_target_seconds: Some(3600.0),
        }],
        repositories: vec![RepositoryView {
            name: "main".into(),
            url: "/srv/repo".into(),
            stored_bytes: Some(1000),
            logical_bytes: Some(3500),
            snapshots: Some(7),
            stats_at: Some(t(0)),
        }],
        alerts: vec![AlertView {
            key: "rpo-breach:docs".into(),
            kind: AlertKind::RpoBreach,
            subject: "docs".into(),
            since: t(-3600),
            message: "no backup for 2h".into(),
            targets: Vec::new(),
        }],
    }
}
