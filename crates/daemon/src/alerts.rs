//! Alert conditions and the webhook notifier.
//!
//! [`evaluate`] computes the conditions firing now from a [`StatusView`]
//! (pure: the caller passes "now"). [`Notifier`] keeps the previous set,
//! and for every condition that appeared sends one "firing" notice, and
//! for every one that cleared one "resolved" notice, to each configured
//! webhook, with retries and backoff. A payload carries what the view
//! shows (names, times, the message) and nothing else: never a webhook
//! URL, a password or a repository credential (repository URLs in the
//! view are already without credentials, and the notifier does not put
//! them in payloads at all).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;

use crate::view::{AlertKind, AlertView, JobView, RunOutcome, StatusView};

/// The conditions firing at `now`, sorted by key.
///
/// - job failed: a job's last finished run failed or timed out (a later
///   success clears it). A check job's failure is a check failure.
/// - RPO breach: a source with an RPO has no successful backup younger
///   than it at `now` (or none at all).
/// - drill failed: the last drill of a playbook did not pass.
/// - anomaly: the source's last backup was a mass change.
pub fn evaluate(view: &StatusView, now: DateTime<Utc>) -> Vec<AlertView> {
    let mut out = Vec::new();
    for j in &view.jobs {
        let Some(last) = &j.last else { continue };
        if !matches!(last.outcome, RunOutcome::Failed | RunOutcome::TimedOut) {
            continue;
        }
        // A drill job that failed to run at all is a job failure; a drill
        // that ran and did not pass is reported through `drills` below.
        let kind = if j.kind == "check" {
            AlertKind::CheckFailed
        } else {
            AlertKind::JobFailed
        };
        let how = if last.outcome == RunOutcome::TimedOut {
            "timed out"
        } else {
            "failed"
        };
        let mut message = format!(
            "{} job {:?} {how} after {} attempt{}",
            j.kind,
            j.name,
            last.attempts,
            if last.attempts == 1 { "" } else { "s" }
        );
        if let Some(e) = &last.error {
            message.push_str(": ");
            message.push_str(e);
        }
        out.push(AlertView {
            key: format!("{}:{}", kind_name(kind), j.name),
            kind,
            subject: j.name.clone(),
            since: last.finished_at,
            message,
            targets: routed(std::iter::once(j)),
        });
    }
    for s in &view.sources {
        let Some(rpo) = s.rpo_seconds else { continue };
        let rpo_ms = (rpo * 1000.0) as i64;
        let (breached, since, message) = match s.last_backup_at {
            Some(at) => {
                let age = (now - at).num_milliseconds();
                let due = at + chrono::Duration::milliseconds(rpo_ms);
                (
                    age > rpo_ms,
                    due,
                    format!(
                        "source {:?}: last good backup {} ago, RPO is {}",
                        s.name,
                        human_seconds(age as f64 / 1000.0),
                        human_seconds(rpo)
                    ),
                )
            }
            None => {
                // No backup ever: breached once the daemon has run for an
                // RPO without making one (a fresh install is not an alarm
                // in its first minute).
                let start = view.daemon.started_at.unwrap_or(now);
                let due = start + chrono::Duration::milliseconds(rpo_ms);
                (
                    now > due,
                    due,
                    format!(
                        "source {:?} has no successful backup, RPO is {}",
                        s.name,
                        human_seconds(rpo)
                    ),
                )
            }
        };
        if breached {
            out.push(AlertView {
                key: format!("rpo-breach:{}", s.name),
                kind: AlertKind::RpoBreach,
                subject: s.name.clone(),
                since,
                message,
                targets: routed(backups_of(view, &s.name)),
            });
        }
    }
    for d in &view.drills {
        if d.passed || d.at.is_none() {
            continue;
        }
        let mut message = format!("drill of playbook {:?}: {}", d.playbook, d.outcome);
        if let (Some(rto), Some(t)) = (d.rto_seconds, d.rto_target_seconds) {
            message.push_str(&format!(
                " (RTO {} against a target of {})",
                human_seconds(rto),
                human_seconds(t)
            ));
        }
        out.push(AlertView {
            key: format!("drill-failed:{}", d.playbook),
            kind: AlertKind::DrillFailed,
            subject: d.playbook.clone(),
            since: d.at.unwrap_or(now),
            message,
            targets: routed(view.jobs.iter().filter(|j| j.kind == "drill")),
        });
    }
    for s in &view.sources {
        if let Some(a) = &s.anomaly {
            let mut message = format!(
                "source {:?}: mass change in backup {}: {}",
                s.name, a.snapshot, a.reason
            );
            if let (Some(snap), Some(hold)) = (&a.held_snapshot, &a.hold) {
                message.push_str(&format!("; hold {hold} placed on snapshot {snap}"));
            }
            out.push(AlertView {
                key: format!("anomaly:{}", s.name),
                kind: AlertKind::Anomaly,
                subject: s.name.clone(),
                since: a.at.unwrap_or(now),
                message,
                targets: routed(backups_of(view, &s.name)),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// The backup jobs of source `name`.
fn backups_of<'a>(view: &'a StatusView, name: &'a str) -> impl Iterator<Item = &'a JobView> {
    view.jobs
        .iter()
        .filter(move |j| j.kind == "backup" && j.source.as_deref() == Some(name))
}

/// Where an alert about `jobs` goes: the union of their `alert` lists.
/// Empty (every target) when one of them names none — a job without
/// `alert` alerts everyone — or when no job is concerned (an RPO on a
/// source no job backs up is everyone's business).
fn routed<'a>(jobs: impl Iterator<Item = &'a JobView>) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for j in jobs {
        if j.alert.is_empty() {
            return Vec::new();
        }
        out.extend(j.alert.iter().cloned());
    }
    out.into_iter().collect()
}

/// The kebab-case name of a kind, as in keys and payloads.
pub fn kind_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::JobFailed => "job-failed",
        AlertKind::RpoBreach => "rpo-breach",
        AlertKind::DrillFailed => "drill-failed",
        AlertKind::CheckFailed => "check-failed",
        AlertKind::Anomaly => "anomaly",
    }
}

/// "3h 5m", "42s": durations people read.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

// ---- notices ---------------------------------------------------------------

/// A notice's body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The generic JSON template (see [`json_payload`]).
    Json,
    /// Slack-compatible incoming webhook (`{"text": ..., "blocks": ...}`).
    Slack,
}

impl From<holdfast_config::AlertFormat> for Format {
    fn from(f: holdfast_config::AlertFormat) -> Format {
        match f {
            holdfast_config::AlertFormat::Json => Format::Json,
            holdfast_config::AlertFormat::Slack => Format::Slack,
        }
    }
}

/// One webhook, with its URL resolved by the caller (the config may name
/// a file or a variable for it).
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub format: Format,
    /// Attempts after the first on failure or a non-2xx answer.
    pub retries: u32,
}

// The URL may itself be a secret (Slack hook URLs are): keep it out of
// Debug output and so out of logs.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &"(not shown)")
            .field("format", &self.format)
            .field("retries", &self.retries)
            .finish()
    }
}

impl Target {
    /// From the configuration and the URL the binary resolved.
    pub fn from_config(a: &holdfast_config::Alert, url: String) -> Target {
        Target {
            name: a.name.clone(),
            url,
            format: a.format.into(),
            retries: a.retries,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Firing,
    Resolved,
}

/// What a delivery did, for the daemon's log.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub target: String,
    pub event: Event,
    pub key: String,
    pub attempts: u32,
    /// None: delivered (a 2xx answer). Some: why the last attempt failed.
    pub error: Option<String>,
}

/// The generic JSON template.
///
/// ```json
/// {"event":"firing","key":"rpo-breach:docs","kind":"rpo-breach",
///  "subject":"docs","since":"2026-12-02T01:00:00Z","at":"...",
///  "message":"source \"docs\": last good backup 27h 3m ago, RPO is 26h 0m",
///  "host":"db1","version":"0.1.0"}
/// ```
pub fn json_payload(
    event: Event,
    a: &AlertView,
    at: DateTime<Utc>,
    host: &str,
    version: &str,
) -> serde_json::Value {
    json!({
        "event": event,
        "key": a.key,
        "kind": kind_name(a.kind),
        "subject": a.subject,
        "since": a.since,
        "at": at,
        "message": a.message,
        "host": host,
        "version": version,
    })
}

/// The Slack-compatible template: `text` for notifications and clients
/// without blocks, `blocks` for the message itself.
pub fn slack_payload(
    event: Event,
    a: &AlertView,
    at: DateTime<Utc>,
    host: &str,
) -> serde_json::Value {
    let head = match event {
        Event::Firing => format!(
            ":rotating_light: FIRING {}: {}",
            kind_name(a.kind),
            a.subject
        ),
        Event::Resolved => format!(
            ":white_check_mark: RESOLVED {}: {}",
            kind_name(a.kind),
            a.subject
        ),
    };
    let text = format!("[holdfast on {host}] {head}: {}", a.message);
    json!({
        "text": slack_escape(&text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&head, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&a.message)}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": slack_escape(&format!(
                    "host {host} · since {} · {}", a.since.to_rfc3339(), at.to_rfc3339()))}
            ]}
        ]
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Sends firing and resolved notices for the changes between one
/// evaluation and the next.
pub struct Notifier {
    targets: Vec<Target>,
    host: String,
    version: String,
    /// What was firing at the last [`Notifier::update`], by key.
    firing: BTreeMap<String, AlertView>,
    /// The wait before the first retry; it doubles per attempt.
    backoff: Duration,
    timeout: Duration,
    /// Strings never to send (passwords, webhook URLs): replaced by
    /// `[redacted]` wherever an error message carried one.
    redact: Vec<String>,
}

impl Notifier {
    pub fn new(targets: Vec<Target>, host: &str, version: &str) -> Notifier {
        Notifier {
            targets,
            host: host.to_string(),
            version: version.to_string(),
            firing: BTreeMap::new(),
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            redact: Vec::new(),
        }
    }

    /// Secrets the binary resolved (repository passwords, S3 keys): a
    /// payload that would contain one has it replaced. The targets' own
    /// URLs are always redacted.
    pub fn with_redactions(mut self, secrets: Vec<String>) -> Notifier {
        self.redact = secrets;
        self
    }

    /// Replace each secret (and each target URL) in every string of `v`.
    fn scrub(&self, v: &mut serde_json::Value) {
        let secrets: Vec<&str> = self
            .redact
            .iter()
            .map(String::as_str)
            .chain(self.targets.iter().map(|t| t.url.as_str()))
            .filter(|s| s.len() >= 4)
            .collect();
        scrub(v, &secrets);
    }

    /// The first retry waits `d`, each later one twice the one before.
    pub fn with_backoff(mut self, d: Duration) -> Notifier {
        self.backoff = d;
        self
    }

    /// Per-attempt limit for connecting, sending and the answer.
    pub fn with_timeout(mut self, d: Duration) -> Notifier {
        self.timeout = d;
        self
    }

    /// Replace the targets (a reloaded config); what is firing is kept,
    /// so a reload does not repeat notices.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        self.targets = targets;
    }

    /// What the notifier believes is firing.
    pub fn firing(&self) -> impl Iterator<Item = &AlertView> {
        self.firing.values()
    }

    /// Diff `now_firing` against the previous call and send the notices:
    /// firing for new keys, resolved for keys gone. Deliveries to all
    /// targets run concurrently; returns what each did.
    pub async fn update(&mut self, now_firing: &[AlertView], at: DateTime<Utc>) -> Vec<Delivery> {
        let mut notices: Vec<(Event, AlertView)> = Vec::new();
        let next: BTreeMap<String, AlertView> = now_firing
            .iter()
            .map(|a| (a.key.clone(), a.clone()))
            .collect();
        for (k, a) in &next {
            if !self.firing.contains_key(k) {
                notices.push((Event::Firing, a.clone()));
            }
        }
        for (k, a) in &self.firing {
            if !next.contains_key(k) {
                notices.push((Event::Resolved, a.clone()));
            }
        }
        self.firing = next;
        let mut tasks = tokio::task::JoinSet::new();
        for (event, mut a) in notices {
            // Scrub before templating too: an escaped secret (Slack's
            // `&amp;`) would not match afterwards.
            let mut fields = json!([a.subject, a.message]);
            self.scrub(&mut fields);
            if let (Some(subject), Some(message)) = (fields[0].as_str(), fields[1].as_str()) {
                (a.subject, a.message) = (subject.to_string(), message.to_string());
            }
            let routed = self
                .targets
                .iter()
                .filter(|t| a.targets.is_empty() || a.targets.contains(&t.name));
            for t in routed {
                let mut body = match t.format {
                    Format::Json => json_payload(event, &a, at, &self.host, &self.version),
                    Format::Slack => slack_payload(event, &a, at, &self.host),
                };
                self.scrub(&mut body);
                let (t, key, backoff, timeout) =
                    (t.clone(), a.key.clone(), self.backoff, self.timeout);
                tasks.spawn(async move {
                    let (attempts, error) = deliver(&t, &body, backoff, timeout).await;
                    Delivery {
                        target: t.name,
                        event,
                        key,
                        attempts,
                        error,
                    }
                });
            }
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(d) => out.push(d),
                Err(e) => out.push(Delivery {
                    target: String::new(),
                    event: Event::Firing,
                    key: String::new(),
                    attempts: 0,
                    error: Some(format!("delivery task failed: {e}")),
                }),
            }
        }
        out
    }
}

fn scrub(v: &mut serde_json::Value, secrets: &[&str]) {
    match v {
        serde_json::Value::String(s) => {
            for secret in secrets {
                if s.contains(secret) {
                    *s = s.replace(secret, "[redacted]");
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secrets)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| scrub(x, secrets)),
        _ => {}
    }
}

/// POST `body` with retries: returns attempts made and the last error.
async fn deliver(
    t: &Target,
    body: &serde_json::Value,
    backoff: Duration,
    timeout: Duration,
) -> (u32, Option<String>) {
    let bytes = Bytes::from(body.to_string());
    let mut wait = backoff;
    let mut last = None;
    for attempt in 1..=t.retries + 1 {
        let r = tokio::time::timeout(timeout, post(&t.url, bytes.clone())).await;
        match r {
            Ok(Ok(status)) if (200..300).contains(&status) => return (attempt, None),
            Ok(Ok(status)) => last = Some(format!("webhook {:?} answered HTTP {status}", t.name)),
            Ok(Err(e)) => last = Some(format!("webhook {:?}: {e}", t.name)),
            Err(_) => {
                last = Some(format!(
                    "webhook {:?}: no answer within {}s",
                    t.name,
                    timeout.as_secs_f64()
                ))
            }
        }
        if attempt <= t.retries {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(Duration::from_secs(300));
        }
    }
    (t.retries + 1, last)
}

/// Why a POST did not get an answer. Never carries the URL: it may be a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("the webhook URL is not a valid http:// or https:// URL")]
    BadUrl,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
}

/// One POST of a JSON body; the answer's status code.
async fn post(url: &str, body: Bytes) -> Result<u16, PostError> {
    let uri: hyper::Uri = url.parse().map_err(|_| PostError::BadUrl)?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(PostError::BadUrl),
    };
    let host = uri.host().ok_or(PostError::BadUrl)?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or(PostError::BadUrl)?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let host_for_connect = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host_for_connect, port))
        .await
        .map_err(PostError::Connect)?;
    let req = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("holdfast/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|_| PostError::BadUrl)?;
    if https {
        let tls = tls::connect(host_for_connect, tcp).await?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<u16, PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(PostError::Http)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(PostError::Http)?;
    let status = resp.status().as_u16();
    // Read the answer to its end so the connection closes cleanly.
    let _ = resp.into_body().collect().await;
    conn.abort();
    Ok(status)
}

mod tls {
    //! https:// webhooks: rustls with the ring provider (already built for
    //! the S3 client) and the system's trust store.

    use std::sync::{Arc, OnceLock};

    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::rustls::{self, pki_types::ServerName};

    use super::PostError;

    fn config() -> Result<Arc<rustls::ClientConfig>, PostError> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err("no trusted CA certificates found on this system".into());
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(PostError::Tls)
    }

    pub async fn connect(host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, PostError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| PostError::BadUrl)?;
        tokio_rustls::TlsConnector::from(config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| PostError::Tls(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::view as sample;
    use std::sync::Arc;

    #[test]
    fn evaluate_finds_each_kind() {
        let v = sample();
        let now = v.generated_at.unwrap();
        let keys: Vec<String> = evaluate(&v, now).into_iter().map(|a| a.key).collect();
        assert!(keys.contains(&"rpo-breach:docs".to_string()), "{keys:?}");
        assert!(keys.contains(&"drill-failed:ehr".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"check-failed:nightly-check".to_string()),
            "{keys:?}"
        );
        assert!(
            !keys.iter().any(|k| k.starts_with("job-failed:docs-backup")),
            "{keys:?}"
        );
    }

    #[test]
    fn rpo_breach_follows_now() {
        let v = sample();
        let s = &v.sources[0];
        let at = s.last_backup_at.unwrap();
        let just_before = at + chrono::Duration::seconds(3599);
        let just_after = at + chrono::Duration::seconds(3601);
        let has = |now| evaluate(&v, now).iter().any(|a| a.key == "rpo-breach:docs");
        assert!(!has(just_before));
        assert!(has(just_after));
    }

    #[test]
    fn a_later_success_clears_job_failed() {
        let mut v = sample();
        let now = v.generated_at.unwrap();
        let last = v.jobs[0].last.as_mut().unwrap();
        last.outcome = RunOutcome::Failed;
        last.error = Some("disk full".into());
        assert!(evaluate(&v, now)
            .iter()
            .any(|a| a.key == "job-failed:docs-backup" && a.message.contains("disk full")));
        v.jobs[0].last.as_mut().unwrap().outcome = RunOutcome::Success;
        assert!(!evaluate(&v, now)
            .iter()
            .any(|a| a.key == "job-failed:docs-backup"));
    }

    #[test]
    fn alerts_are_routed_by_their_jobs_alert_lists() {
        let mut v = sample();
        let now = v.generated_at.unwrap();
        let last = v.jobs[0].last.as_mut().unwrap();
        last.outcome = RunOutcome::Failed;
        let targets = |v: &StatusView, key: &str| {
            evaluate(v, now)
                .into_iter()
                .find(|a| a.key == key)
                .unwrap_or_else(|| panic!("{key} not firing"))
                .targets
        };
        // No `alert` anywhere: every target (empty).
        assert!(targets(&v, "job-failed:docs-backup").is_empty());
        assert!(targets(&v, "rpo-breach:docs").is_empty());
        v.jobs[0].alert = vec!["pager".into(), "oncall".into()];
        assert_eq!(targets(&v, "job-failed:docs-backup"), ["oncall", "pager"]);
        // The source's RPO follows its backup job's list.
        assert_eq!(targets(&v, "rpo-breach:docs"), ["oncall", "pager"]);
        // A second backup job of the source without a list: everyone.
        let mut other = v.jobs[0].clone();
        other.name = "docs-backup-2".into();
        other.alert.clear();
        other.last = None;
        v.jobs.push(other);
        assert!(targets(&v, "rpo-breach:docs").is_empty());
        // A check job's own list.
        let check = v
            .jobs
            .iter_mut()
            .find(|j| j.name == "nightly-check")
            .unwrap();
        check.alert = vec!["oncall".into()];
        assert_eq!(targets(&v, "check-failed:nightly-check"), ["oncall"]);
    }

    /// A webhook receiver on 127.0.0.1 that answers 200 and counts POSTs.
    async fn receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body by its length.
                    loop {
                        let Ok(n) = c.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = c
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn notices_go_only_to_the_routed_targets() {
        use std::sync::atomic::Ordering::SeqCst;
        let (a_url, a) = receiver().await;
        let (b_url, b) = receiver().await;
        let target = |name: &str, url: String| Target {
            name: name.into(),
            url,
            format: Format::Json,
            retries: 0,
        };
        let mut n = Notifier::new(
            vec![target("oncall", a_url), target("pager", b_url)],
            "db1",
            "test",
        );
        let now = Utc::now();
        let alert = |key: &str, targets: &[&str]| AlertView {
            key: key.into(),
            kind: AlertKind::JobFailed,
            subject: "docs-backup".into(),
            since: now,
            message: "failed".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        };
        let routed = alert("job-failed:docs-backup", &["pager"]);
        let everyone = alert("rpo-breach:docs", &[]);
        let sent = |d: Vec<Delivery>| {
            assert!(d.iter().all(|d| d.error.is_none()), "{d:?}");
            let mut t: Vec<String> = d.into_iter().map(|d| d.target).collect();
            t.sort();
            t
        };
        assert_eq!(
            sent(n.update(std::slice::from_ref(&routed), now).await),
            ["pager"]
        );
        assert_eq!((a.load(SeqCst), b.load(SeqCst)), (0, 1));
        assert_eq!(
            sent(n.update(&[routed, everyone], now).await),
            ["oncall", "pager"]
        );
        assert_eq!((a.load(SeqCst), b.load(SeqCst)), (1, 2));
        // Resolved notices go where the firing ones went.
        assert_eq!(sent(n.update(&[], now).await), ["oncall", "pager", "pager"]);
        assert_eq!((a.load(SeqCst), b.load(SeqCst)), (2, 4));
    }

    #[test]
    fn slack_payload_has_text_and_blocks_and_escapes() {
        let v = sample();
        let mut a = evaluate(&v, v.generated_at.unwrap()).remove(0);
        a.message = "a <b> & c".into();
        let p = slack_payload(Event::Firing, &a, v.generated_at.unwrap(), "db1");
        assert!(p["text"].as_str().unwrap().contains("a &lt;b&gt; &amp; c"));
        assert_eq!(p["blocks"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_seconds(42.0), "42s");
        assert_eq!(human_seconds(3700.0), "1h 1m");
        assert_eq!(human_seconds(90000.0), "1d 1h");
    }
}
