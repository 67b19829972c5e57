//! Prometheus text exposition (format 0.0.4) of a [`StatusView`].
//!
//! Every family has `# HELP` and `# TYPE`; names carry their unit
//! (`_seconds`, `_bytes`, `_timestamp_seconds`) and counters end in
//! `_total`, so `promtool check metrics` has nothing to say. Label values
//! are escaped as the format requires (backslash, double quote, newline).
//! Families without a sample are left out: an empty family says nothing and
//! some parsers warn about it.
//!
//! Counters are the daemon's own since it started (they reset with the
//! process, which Prometheus' `rate()` handles); times are unix seconds.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::view::{AlertKind, RunOutcome, StatusView};

/// One metric family being written.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push((label_set(labels), value));
    }
}

/// `{a="x",b="y"}`, or nothing for no labels.
fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s.push('}');
    s
}

/// Label values: `\`, `"` and newline are escaped; nothing else is.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the format writes it (`+Inf`, `-Inf`, `NaN`).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Integers print without a fraction: byte counts stay exact.
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The metric names this module writes, for documentation and tests.
pub const NAMES: &[&str] = &[
    "holdfast_build_info",
    "holdfast_daemon_start_time_seconds",
    "holdfast_config_last_reload_successful",
    "holdfast_daemon_stopping",
    "holdfast_job_last_success_timestamp_seconds",
    "holdfast_job_last_run_timestamp_seconds",
    "holdfast_job_last_duration_seconds",
    "holdfast_job_last_run_failed",
    "holdfast_job_next_run_timestamp_seconds",
    "holdfast_job_running",
    "holdfast_job_runs_total",
    "holdfast_job_failures_total",
    "holdfast_job_retries_total",
    "holdfast_job_skipped_total",
    "holdfast_job_read_bytes_total",
    "holdfast_job_added_bytes_total",
    "holdfast_source_last_backup_timestamp_seconds",
    "holdfast_source_rpo_age_seconds",
    "holdfast_source_rpo_target_seconds",
    "holdfast_source_rpo_breached",
    "holdfast_source_anomaly",
    "holdfast_drill_last_timestamp_seconds",
    "holdfast_drill_passed",
    "holdfast_drill_rto_seconds",
    "holdfast_drill_rto_target_seconds",
    "holdfast_drill_rpo_seconds",
    "holdfast_drill_rpo_target_seconds",
    "holdfast_repository_stored_bytes",
    "holdfast_repository_logical_bytes",
    "holdfast_repository_dedup_ratio",
    "holdfast_repository_snapshots",
    "holdfast_alerts_firing",
];

fn alert_kind_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::JobFailed => "job-failed",
        AlertKind::RpoBreach => "rpo-breach",
        AlertKind::DrillFailed => "drill-failed",
        AlertKind::CheckFailed => "check-failed",
        AlertKind::Anomaly => "anomaly",
    }
}

/// The whole exposition for one scrape.
pub fn render(view: &StatusView) -> String {
    let d = &view.daemon;
    let mut fams: Vec<Family> = Vec::new();

    let mut f = Family::new(
        "holdfast_build_info",
        "gauge",
        "Always 1; the labels say which holdfast runs where.",
    );
    f.push(&[("version", &d.program_version), ("host", &d.host)], 1.0);
    fams.push(f);

    let mut f = Family::new(
        "holdfast_daemon_start_time_seconds",
        "gauge",
        "When the daemon started, unix seconds.",
    );
    if let Some(t) = d.started_at {
        f.push(&[], ts(t));
    }
    fams.push(f);

    let mut f = Family::new(
        "holdfast_config_last_reload_successful",
        "gauge",
        "0 when the last configuration reload failed (the previous configuration stays in force).",
    );
    f.push(&[], flag(d.config_error.is_none()));
    fams.push(f);

    let mut f = Family::new(
        "holdfast_daemon_stopping",
        "gauge",
        "1 once a stop was asked for: no new jobs start.",
    );
    f.push(&[], flag(d.stopping));
    fams.push(f);

    // ---- jobs
    let mut last_ok = Family::new(
        "holdfast_job_last_success_timestamp_seconds",
        "gauge",
        "End of the job's last successful run, unix seconds.",
    );
    let mut last_run = Family::new(
        "holdfast_job_last_run_timestamp_seconds",
        "gauge",
        "End of the job's last finished run, unix seconds.",
    );
    let mut dur = Family::new(
        "holdfast_job_last_duration_seconds",
        "gauge",
        "Duration of the job's last finished run (all attempts).",
    );
    let mut failed = Family::new(
        "holdfast_job_last_run_failed",
        "gauge",
        "1 when the job's last finished run failed or timed out.",
    );
    let mut next = Family::new(
        "holdfast_job_next_run_timestamp_seconds",
        "gauge",
        "When the job runs next, unix seconds.",
    );
    let mut running = Family::new("holdfast_job_running", "gauge", "1 while the job runs.");
    let mut runs = Family::new(
        "holdfast_job_runs_total",
        "counter",
        "Runs of the job finished since the daemon started.",
    );
    let mut fails = Family::new(
        "holdfast_job_failures_total",
        "counter",
        "Runs of the job that failed or timed out (after retries) since the daemon started.",
    );
    let mut retries = Family::new(
        "holdfast_job_retries_total",
        "counter",
        "Retry attempts of the job since the daemon started.",
    );
    let mut skipped = Family::new(
        "holdfast_job_skipped_total",
        "counter",
        "Scheduled runs of the job not started because its previous run was still going.",
    );
    let mut read = Family::new(
        "holdfast_job_read_bytes_total",
        "counter",
        "Bytes a backup job read from its source since the daemon started.",
    );
    let mut added = Family::new(
        "holdfast_job_added_bytes_total",
        "counter",
        "Bytes a backup job added (stored) to its repository since the daemon started.",
    );
    for j in &view.jobs {
        let l = [
            ("job_name", j.name.as_str()),
            ("kind", j.kind.as_str()),
            ("repository", j.repository.as_str()),
        ];
        if let Some(t) = j.last_success_at {
            last_ok.push(&l, ts(t));
        }
        if let Some(r) = &j.last {
            last_run.push(&l, ts(r.finished_at));
            dur.push(&l, r.duration_seconds);
            failed.push(
                &l,
                flag(matches!(
                    r.outcome,
                    RunOutcome::Failed | RunOutcome::TimedOut
                )),
            );
        }
        if let Some(t) = j.next_run {
            next.push(&l, ts(t));
        }
        running.push(&l, flag(j.running.is_some()));
        runs.push(&l, j.runs_total as f64);
        fails.push(&l, j.failures_total as f64);
        retries.push(&l, j.retries_total as f64);
        skipped.push(&l, j.skipped_total as f64);
        read.push(&l, j.bytes_read_total as f64);
        added.push(&l, j.bytes_added_total as f64);
    }
    fams.extend([
        last_ok, last_run, dur, failed, next, running, runs, fails, retries, skipped, read, added,
    ]);

    // ---- sources
    let mut last_backup = Family::new(
        "holdfast_source_last_backup_timestamp_seconds",
        "gauge",
        "Time of the source's newest successful backup, unix seconds.",
    );
    let mut age = Family::new(
        "holdfast_source_rpo_age_seconds",
        "gauge",
        "Age of the source's newest successful backup.",
    );
    let mut target = Family::new(
        "holdfast_source_rpo_target_seconds",
        "gauge",
        "The source's recovery point objective (rpo in holdfast.toml).",
    );
    let mut breached = Family::new(
        "holdfast_source_rpo_breached",
        "gauge",
        "1 when no successful backup of the source is younger than its RPO.",
    );
    let mut anomaly = Family::new(
        "holdfast_source_anomaly",
        "gauge",
        "1 when the source's last backup changed far more (or far less compressible) data than its history: a mass change such as encryption by ransomware.",
    );
    for s in &view.sources {
        let l = [("source", s.name.as_str()), ("kind", s.kind.as_str())];
        if let Some(t) = s.last_backup_at {
            last_backup.push(&l, ts(t));
        }
        if let Some(a) = s.rpo_age_seconds {
            age.push(&l, a);
        }
        if let Some(r) = s.rpo_seconds {
            target.push(&l, r);
            breached.push(&l, flag(s.rpo_breached));
        }
        anomaly.push(&l, flag(s.anomaly.is_some()));
    }
    fams.extend([last_backup, age, target, breached, anomaly]);

    // ---- drills
    let mut at = Family::new(
        "holdfast_drill_last_timestamp_seconds",
        "gauge",
        "When the playbook's last drill ran, unix seconds.",
    );
    let mut passed = Family::new(
        "holdfast_drill_passed",
        "gauge",
        "1 when the playbook's last drill passed (restored, checks passed, targets met).",
    );
    let mut rto = Family::new(
        "holdfast_drill_rto_seconds",
        "gauge",
        "Recovery time the playbook's last drill measured.",
    );
    let mut rto_t = Family::new(
        "holdfast_drill_rto_target_seconds",
        "gauge",
        "The playbook's recovery time objective.",
    );
    let mut rpo = Family::new(
        "holdfast_drill_rpo_seconds",
        "gauge",
        "Recovery point (age of the restored data) the playbook's last drill measured.",
    );
    let mut rpo_t = Family::new(
        "holdfast_drill_rpo_target_seconds",
        "gauge",
        "The playbook's recovery point objective.",
    );
    for dr in &view.drills {
        let l = [("playbook", dr.playbook.as_str())];
        if let Some(t) = dr.at {
            at.push(&l, ts(t));
        }
        passed.push(&l, flag(dr.passed));
        if let Some(v) = dr.rto_seconds {
            rto.push(&l, v);
        }
        if let Some(v) = dr.rto_target_seconds {
            rto_t.push(&l, v);
        }
        if let Some(v) = dr.rpo_seconds {
            rpo.push(&l, v);
        }
        if let Some(v) = dr.rpo_target_seconds {
            rpo_t.push(&l, v);
        }
    }
    fams.extend([at, passed, rto, rto_t, rpo, rpo_t]);

    // ---- repositories
    let mut stored = Family::new(
        "holdfast_repository_stored_bytes",
        "gauge",
        "Bytes the repository holds in packs (compressed, encrypted, deduplicated).",
    );
    let mut logical = Family::new(
        "holdfast_repository_logical_bytes",
        "gauge",
        "Bytes of the files and dumps the repository's snapshots describe.",
    );
    let mut ratio = Family::new(
        "holdfast_repository_dedup_ratio",
        "gauge",
        "Logical over stored bytes: what deduplication and compression save.",
    );
    let mut snaps = Family::new(
        "holdfast_repository_snapshots",
        "gauge",
        "Snapshots in the repository.",
    );
    for r in &view.repositories {
        let l = [("repository", r.name.as_str())];
        if let Some(v) = r.stored_bytes {
            stored.push(&l, v as f64);
        }
        if let Some(v) = r.logical_bytes {
            logical.push(&l, v as f64);
        }
        if let Some(v) = r.dedup_ratio() {
            ratio.push(&l, v);
        }
        if let Some(v) = r.snapshots {
            snaps.push(&l, v as f64);
        }
    }
    fams.extend([stored, logical, ratio, snaps]);

    // ---- alerts: one sample per kind, zeros included, so a query for a
    // kind always finds a series.
    let mut firing = Family::new(
        "holdfast_alerts_firing",
        "gauge",
        "Alert conditions firing now, by kind.",
    );
    for k in [
        AlertKind::JobFailed,
        AlertKind::RpoBreach,
        AlertKind::DrillFailed,
        AlertKind::CheckFailed,
        AlertKind::Anomaly,
    ] {
        let n = view.alerts.iter().filter(|a| a.kind == k).count();
        firing.push(&[("kind", alert_kind_name(k))], n as f64);
    }
    fams.push(firing);

    let mut out = String::new();
    for f in fams.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, v) in &f.samples {
            let _ = writeln!(out, "{}{} {}", f.name, labels, value(*v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::view as sample;

    #[test]
    fn every_family_has_help_and_type_and_values_are_exact() {
        let text = render(&sample());
        for name in NAMES {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
        assert!(text.contains(
            "holdfast_job_read_bytes_total{job_name=\"docs-backup\",kind=\"backup\",repository=\"main\"} 123456789012\n"
        ));
        assert!(text.contains(
            "holdfast_job_last_duration_seconds{job_name=\"docs-backup\",kind=\"backup\",repository=\"main\"} 12.5\n"
        ));
        assert!(text.contains("holdfast_source_rpo_breached{source=\"docs\",kind=\"paths\"} 1\n"));
        assert!(text.contains("holdfast_repository_dedup_ratio{repository=\"main\"} 3.5\n"));
        assert!(text.contains("holdfast_alerts_firing{kind=\"rpo-breach\"} 1\n"));
        assert!(text.contains("holdfast_alerts_firing{kind=\"anomaly\"} 0\n"));
        assert!(text.contains("holdfast_daemon_start_time_seconds 1780000000\n"));
        // Counters end in _total, and only counters.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut it = line.split(' ').skip(2);
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&sample());
        assert!(
            text.contains("host=\"db\\\"1\\\\x\\nnext\""),
            "escaped host label:\n{text}"
        );
        // Every sample line is one line: the newline in the host did not
        // split it.
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("holdfast_"),
                "{line}"
            );
        }
    }

    #[test]
    fn empty_view_renders_only_families_with_samples() {
        let text = render(&StatusView::default());
        assert!(!text.contains("holdfast_job_runs_total"));
        assert!(text.contains("holdfast_build_info"));
        assert!(!text.contains("holdfast_daemon_start_time_seconds"));
    }

    /// Debian's `promtool check metrics` (the linter Prometheus ships):
    /// the exposition parses and breaks none of its naming rules.
    pub(crate) fn promtool_check(text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is needed: apt-get install prometheus (scripts/test.sh does)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        promtool_check(&render(&sample()));
        promtool_check(&render(&StatusView::default()));
        // It does look: a counter without _total is refused.
        let bad = "# HELP x_bytes A.\n# TYPE x_bytes counter\nx_bytes 1\n";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '{bad}' | promtool check metrics"))
            .output()
            .expect("sh");
        assert!(!out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty());
    }

    #[test]
    fn special_values() {
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(3.0), "3");
        assert_eq!(value(0.25), "0.25");
    }
}
