//! The webhook notifier against a real HTTP receiver on 127.0.0.1: a
//! condition sends one firing notice, repeats send nothing, clearing sends
//! one resolved notice; a 500 is retried until a 2xx; payloads hold no
//! webhook URL and no password, in both templates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use holdfast_daemon::alerts::{evaluate, Event, Format, Notifier, Target};
use holdfast_daemon::example;
use holdfast_daemon::view::{RunOutcome, StatusView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    body: serde_json::Value,
}

/// A receiver answering each request with the next status of `statuses`
/// (200 once they run out).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn receiver(path: &str, statuses: Vec<u16>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (g, statuses) = (g.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head_end, len) = loop {
                    let n = sock.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "connection closed mid-request");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .expect("content-length");
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.expect("read");
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let request = lines.next().unwrap_or_default().to_string();
                let content_type = lines
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-type")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let body = serde_json::from_slice(&buf[head_end..head_end + len])
                    .expect("the body is JSON");
                g.lock().unwrap().push(Received {
                    path: request,
                    content_type,
                    body,
                });
                let status = statuses.lock().unwrap().next().unwrap_or(200);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Receiver {
        url: format!("http://{addr}{path}"),
        got,
    }
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn target(name: &str, url: &str, format: Format, retries: u32) -> Target {
    Target {
        name: name.into(),
        url: url.into(),
        format,
        retries,
    }
}

/// The example view with only a failing backup job.
fn failing_backup() -> StatusView {
    let mut v = example::view();
    v.sources.clear();
    v.drills.clear();
    v.jobs.truncate(1);
    let last = v.jobs[0].last.as_mut().unwrap();
    last.outcome = RunOutcome::Failed;
    last.error = Some("storage: connection refused".into());
    v
}

#[tokio::test]
async fn firing_once_then_resolved() {
    let json = receiver("/hook", vec![]).await;
    let slack = receiver("/services/T0/B0/x", vec![]).await;
    let mut n = Notifier::new(
        vec![
            target("pager", &json.url, Format::Json, 2),
            target("chat", &slack.url, Format::Slack, 2),
        ],
        "db1",
        "0.1.0",
    )
    .with_backoff(Duration::from_millis(10));
    let now = Utc::now();
    let v = failing_backup();
    let firing = evaluate(&v, now);
    assert_eq!(firing.len(), 1, "{firing:?}");
    let d = n.update(&firing, now).await;
    assert_eq!(d.len(), 2);
    assert!(
        d.iter().all(|d| d.error.is_none() && d.attempts == 1),
        "{d:?}"
    );
    // The same conditions again: nothing new to say.
    assert!(n.update(&evaluate(&v, now), now).await.is_empty());
    // The job succeeds: resolved.
    let mut ok = v.clone();
    ok.jobs[0].last.as_mut().unwrap().outcome = RunOutcome::Success;
    let d = n.update(&evaluate(&ok, now), now).await;
    assert_eq!(d.len(), 2);
    assert!(d
        .iter()
        .all(|d| d.event == Event::Resolved && d.error.is_none()));

    let got = json.got();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].path.starts_with("POST /hook HTTP/1.1"),
        "{}",
        got[0].path
    );
    assert_eq!(got[0].content_type, "application/json");
    assert_eq!(got[0].body["event"], "firing");
    assert_eq!(got[0].body["key"], "job-failed:docs-backup");
    assert_eq!(got[0].body["kind"], "job-failed");
    assert_eq!(got[0].body["subject"], "docs-backup");
    assert_eq!(got[0].body["host"], "db1");
    assert!(got[0].body["message"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
    assert_eq!(got[1].body["event"], "resolved");
    assert_eq!(got[1].body["key"], "job-failed:docs-backup");

    let got = slack.got();
    assert_eq!(got.len(), 2);
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.contains("FIRING job-failed: docs-backup"), "{text}");
    assert!(got[0].body["blocks"]
        .as_array()
        .is_some_and(|b| !b.is_empty()));
    assert!(got[1].body["text"].as_str().unwrap().contains("RESOLVED"));
}

#[tokio::test]
async fn a_500_is_retried_until_it_succeeds_and_gives_up_after_retries() {
    let flaky = receiver("/h", vec![500, 503, 200]).await;
    let mut n = Notifier::new(vec![target("flaky", &flaky.url, Format::Json, 3)], "h", "v")
        .with_backoff(Duration::from_millis(20));
    let now = Utc::now();
    let d = n.update(&evaluate(&failing_backup(), now), now).await;
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].attempts, d[0].error.as_deref()), (3, None), "{d:?}");
    let got = flaky.got();
    assert_eq!(got.len(), 3, "three POSTs of the same notice");
    assert!(got.iter().all(|r| r.body == got[0].body));

    let down = receiver("/h", vec![500; 10]).await;
    let mut n = Notifier::new(vec![target("down", &down.url, Format::Json, 1)], "h", "v")
        .with_backoff(Duration::from_millis(20));
    let d = n.update(&evaluate(&failing_backup(), now), now).await;
    assert_eq!(d[0].attempts, 2);
    let e = d[0].error.as_deref().expect("failed");
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(!e.contains(&down.url), "the error names no URL: {e}");
    assert_eq!(down.got().len(), 2);

    // Nothing listens: a connection error, retried, reported.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut n = Notifier::new(
        vec![target(
            "gone",
            &format!("http://{closed}/h"),
            Format::Slack,
            1,
        )],
        "h",
        "v",
    )
    .with_backoff(Duration::from_millis(10));
    let d = n.update(&evaluate(&failing_backup(), now), now).await;
    assert_eq!(d[0].attempts, 2);
    assert!(
        d[0].error.as_deref().unwrap().contains("cannot connect"),
        "{d:?}"
    );
}

#[tokio::test]
async fn payloads_hold_no_secret() {
    let password = "correct-horse-battery-staple";
    let json = receiver("/hooks/SECRET-TOKEN-1234", vec![]).await;
    let slack = receiver("/services/T000/SECRET-TOKEN-5678", vec![]).await;
    let mut n = Notifier::new(
        vec![
            target("pager", &json.url, Format::Json, 0),
            target("chat", &slack.url, Format::Slack, 0),
        ],
        "db1",
        "0.1.0",
    )
    .with_redactions(vec![password.to_string()]);
    let mut v = failing_backup();
    // An error message that (wrongly) carried a secret and a hook URL.
    v.jobs[0].last.as_mut().unwrap().error = Some(format!(
        "auth failed with password {password} posting to {} & <{}>",
        json.url, slack.url
    ));
    let now = Utc::now();
    let d = n.update(&evaluate(&v, now), now).await;
    assert!(d.iter().all(|d| d.error.is_none()), "{d:?}");
    let all: Vec<Received> = json.got().into_iter().chain(slack.got()).collect();
    assert_eq!(all.len(), 2);
    for r in all {
        let text = r.body.to_string();
        for secret in [password, "SECRET-TOKEN", "127.0.0.1"] {
            assert!(!text.contains(secret), "{secret:?} in payload {text}");
        }
        assert!(text.contains("[redacted]"), "{text}");
    }
    // Debug output of a target does not show its URL either.
    let t = target("x", &json.url, Format::Json, 0);
    assert!(!format!("{t:?}").contains("SECRET-TOKEN"));
}
