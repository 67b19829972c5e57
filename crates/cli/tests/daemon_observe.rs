//! Watching a real `holdfast daemon` with real tools: Debian's `promtool
//! check metrics` passes on the live `/metrics`; a real `prometheus`
//! server scrapes the daemon and a PromQL query over its HTTP API answers
//! with what happened (the runs of a job that ran three times, the bytes
//! it added); the live status page renders in headless Chromium.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A GET over HTTP/1.1 (Connection: close); chunked bodies decoded.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = Vec::new();
    s.read_to_end(&mut r).ok()?;
    let r = String::from_utf8_lossy(&r).to_string();
    let (head, body) = r.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    if !chunked {
        return Some((code, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some((code, out));
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n + 2..)?;
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, log: &Path, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < WAIT,
            "waiting for {what}: log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed: apt-get install prometheus (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One instant PromQL query: the single result's value.
fn promql(prom: SocketAddr, query: &str) -> Option<f64> {
    let mut q = String::new();
    for b in query.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    let (code, body) = http_get(prom, &format!("/api/v1/query?query={q}"))?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_daemon_and_the_page_renders() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
    let docs = env.path("docs");
    fs::create_dir_all(&docs).unwrap();
    for i in 0..30 {
        fs::write(
            docs.join(format!("f{i}.txt")),
            format!("document {i}\n").repeat(200),
        )
        .unwrap();
    }
    // Three runs, two seconds apart, starting a few seconds from now.
    let now = Utc::now().second();
    let secs: Vec<String> = (0..3)
        .map(|i| ((now + 4 + i * 2) % 60).to_string())
        .collect();
    let schedule = format!("{} * * * * *", secs.join(","));
    let addr = free_addr();
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[source.docs]\npaths = [\"{}\"]\nrpo = \"1h\"\n\n[[job]]\nname = \"docs-backup\"\nkind = \"backup\"\nsource = \"docs\"\nrepository = \"main\"\nschedule = \"{schedule}\"\n\n[listen]\naddress = \"{addr}\"\n",
            env.repo.display(),
            pass.display(),
            docs.display()
        ),
    )
    .unwrap();
    let state = env.path("state");
    let log = env.path("daemon.log");
    let _daemon = Killed(
        Command::new(BIN)
            .args(["daemon", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("HOLDFAST_PASSWORD")
            .env_remove("HOLDFAST_PASSWORD_FILE")
            .env_remove("HOLDFAST_REPOSITORY")
            .env("HOLDFAST_CACHE_DIR", state.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon"),
    );
    let status = || -> Option<Value> {
        let (c, b) = http_get(addr, "/status")?;
        (c == 200).then(|| serde_json::from_str(&b).ok())?
    };
    let backup_job = |s: &Value| -> Value {
        s["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["name"] == "docs-backup").cloned())
            .unwrap_or(Value::Null)
    };
    wait_for("three finished backups", &log, || {
        status().is_some_and(|s| {
            let j = backup_job(&s);
            j["runs_total"] == 3 && j["running"].is_null()
        })
    });
    let s = status().unwrap();
    let job = backup_job(&s);
    assert_eq!(job["failures_total"], 0, "{job}");
    let added = job["bytes_added_total"].as_u64().unwrap();
    assert!(added > 0, "{job}");
    // What happened, from the repository itself: three snapshots.
    let snaps = env.json(["snapshots"]);
    let n = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "docs")
        .count();
    assert_eq!(n, 3, "{snaps}");

    // The live exposition passes promtool and says the same.
    let (code, metrics) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    promtool_check(&metrics);
    assert!(
        metrics.contains(
            "holdfast_job_runs_total{job_name=\"docs-backup\",kind=\"backup\",repository=\"main\"} 3\n"
        ),
        "{metrics}"
    );

    // A real Prometheus scrapes it every second.
    let prom = free_addr();
    let dir = env.path("prometheus");
    fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: holdfast\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ),
    )
    .unwrap();
    let prom_log = dir.join("prometheus.log");
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&prom_log).unwrap())
            .spawn()
            .expect("prometheus is needed: apt-get install prometheus (scripts/test.sh does)"),
    );
    wait_for("prometheus ready", &prom_log, || {
        http_get(prom, "/-/ready").is_some_and(|(c, _)| c == 200)
    });
    let t = Instant::now();
    while !(promql(prom, "up{job=\"holdfast\"}") == Some(1.0)
        && promql(prom, "holdfast_job_runs_total{job_name=\"docs-backup\"}").is_some())
    {
        assert!(
            t.elapsed() < WAIT,
            "prometheus did not scrape the daemon: targets: {:?}",
            http_get(prom, "/api/v1/targets")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        promql(prom, "holdfast_job_runs_total{job_name=\"docs-backup\"}"),
        Some(3.0)
    );
    assert_eq!(
        promql(
            prom,
            "holdfast_job_added_bytes_total{job_name=\"docs-backup\"}"
        ),
        Some(added as f64)
    );
    assert_eq!(
        promql(prom, "holdfast_source_rpo_breached{source=\"docs\"}"),
        Some(0.0)
    );
    assert_eq!(promql(prom, "sum(holdfast_alerts_firing)"), Some(0.0));

    // The live status page in Chromium.
    let (code, html) = http_get(addr, "/").expect("GET /");
    assert_eq!(code, 200);
    for bad in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!html.contains(bad), "the page contains {bad:?}");
    }
    let page = env.path("status.html");
    fs::write(&page, &html).unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.path("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium is needed: apt-get install chromium (scripts/test.sh does)");
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-job=\"docs-backup\" data-last=\"success\" data-running=\"false\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-source=\"docs\" data-breached=\"false\""),
        "{dom}"
    );
    assert!(dom.contains("Alerts firing (0)"), "{dom}");
}
