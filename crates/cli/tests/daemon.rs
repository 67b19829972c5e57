//! `holdfast daemon` and `holdfast status`, through the real binary: jobs
//! on second-granularity schedules against real repositories (local and
//! a real moto S3 server on 127.0.0.1), signals, reloads and the
//! listener's `/status`.

mod common;
#[path = "../../s3/tests/harness/mod.rs"]
mod harness;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use common::*;
use serde_json::Value;

/// Generous limits for waiting on the daemon: a bound against a hang,
/// not a speed assertion.
const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET against the daemon's listener.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A running `holdfast daemon`, killed when dropped.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn start(
        config: &Path,
        state: &Path,
        log: &Path,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut c = Command::new(BIN);
        c.args(["daemon", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env_remove("HOLDFAST_PASSWORD")
            .env_remove("HOLDFAST_PASSWORD_FILE")
            .env_remove("HOLDFAST_REPOSITORY")
            .env("HOLDFAST_CACHE_DIR", state.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("starting the daemon");
        let d = Daemon {
            child: Some(child),
            addr,
            log: log.to_path_buf(),
        };
        d.wait_for(
            || http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200),
            "/healthz",
        );
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn status(&self) -> Value {
        let (code, body) = http_get(self.addr, "/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll until `cond` holds; panic with the log after [`WAIT`].
    fn wait_for(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < WAIT,
                "waiting for {what}: daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait for the process to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let t = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if t.elapsed() > WAIT {
                let _ = child.kill();
                panic!("the daemon did not exit: log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn job<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {status}"))
}

/// The JSON log lines of the daemon.
fn log_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn message(e: &Value) -> &str {
    e["fields"]["message"].as_str().unwrap_or("")
}

fn write_tree(root: &Path, files: usize) {
    fs::create_dir_all(root).unwrap();
    for i in 0..files {
        fs::write(
            root.join(format!("f{i}.txt")),
            format!("document {i}\n").repeat(50),
        )
        .unwrap();
    }
}

/// Random bytes (incompressible): a backup that takes a while.
fn write_random(path: &Path, mib: usize) {
    let mut f = fs::File::open("/dev/urandom").unwrap();
    let mut out = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.read_exact(&mut buf).unwrap();
        out.write_all(&buf).unwrap();
    }
}

/// `n` cron seconds starting `from` seconds after now, `step` apart.
fn seconds_from_now(from: u32, n: u32, step: u32) -> (String, Vec<u32>) {
    let now = Utc::now().second();
    let secs: Vec<u32> = (0..n).map(|i| (now + from + i * step) % 60).collect();
    let list: Vec<String> = secs.iter().map(|s| s.to_string()).collect();
    (format!("{} * * * * *", list.join(",")), secs)
}

fn snapshots(env: &Env) -> Vec<Value> {
    env.json(["snapshots"]).as_array().unwrap().clone()
}

fn repo_config(env: &Env, pass: &Path) -> String {
    format!(
        "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n",
        env.repo.display(),
        pass.display()
    )
}

#[test]
fn jobs_run_on_time_never_overlap_and_status_matches_what_happened() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
    let docs = env.path("docs");
    write_tree(&docs, 20);
    let playbook = env.path("drill.toml");
    fs::write(
        &playbook,
        "name = \"docs-drill\"\n[snapshot]\nsource = \"docs\"\npick = \"latest\"\n[target]\nkind = \"directory\"\n[[check]]\nkind = \"files\"\n[[check]]\nkind = \"command\"\nrun = \"sleep 3\"\n[objectives]\nrto = \"15m\"\nrpo = \"26h\"\n",
    )
    .unwrap();
    let (schedule, secs) = seconds_from_now(4, 3, 3);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "{}\n[source.docs]\npaths = [\"{}\"]\nrpo = \"1h\"\n\n[[job]]\nname = \"docs-backup\"\nkind = \"backup\"\nsource = \"docs\"\nrepository = \"main\"\nschedule = \"{schedule}\"\ntimezone = \"Europe/Berlin\"\n\n[[job]]\nname = \"drill\"\nkind = \"drill\"\nplaybook = \"{}\"\nrepository = \"main\"\nschedule = \"* * * * * *\"\n\n[listen]\naddress = \"{addr}\"\n\n[log]\nformat = \"json\"\n",
            repo_config(&env, &pass),
            docs.display(),
            playbook.display()
        ),
    )
    .unwrap();
    let state = env.path("state");
    let d = Daemon::start(
        &config,
        &state,
        &env.path("daemon.log"),
        addr,
        &[("TMPDIR", env.path("").to_str().unwrap())],
    );
    let first = d.status();
    assert_eq!(first["version"], 1);
    assert_eq!(first["daemon"]["pid"], d.pid());
    let next: DateTime<Utc> = job(&first, "docs-backup")["next_run"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        secs.contains(&next.second()),
        "next run {next} not in {secs:?}"
    );

    // Three runs of the backup, then a drill that overran its slots.
    d.wait_for(
        || {
            let s = d.status();
            job(&s, "docs-backup")["runs_total"] == 3
                && job(&s, "drill")["skipped_total"].as_u64().unwrap_or(0) >= 2
                && job(&s, "drill")["running"].is_null()
        },
        "three backups and an overrunning drill",
    );
    let s = d.status();
    let b = job(&s, "docs-backup");
    assert_eq!(b["failures_total"], 0, "{b}");
    assert_eq!(b["last"]["outcome"], "success", "{b}");
    let snaps = snapshots(&env);
    let docs_snaps: Vec<&Value> = snaps.iter().filter(|s| s["source"] == "docs").collect();
    assert_eq!(docs_snaps.len(), 3, "{snaps:?}");
    let newest = docs_snaps
        .iter()
        .max_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(b["last"]["snapshot"], newest["id"], "{b}");
    let src = source(&s, "docs");
    assert_eq!(src["last_snapshot"], newest["id"], "{src}");
    let t1: DateTime<Utc> = src["last_backup_at"].as_str().unwrap().parse().unwrap();
    let t2: DateTime<Utc> = newest["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(t1, t2);
    assert_eq!(src["rpo_breached"], false, "{src}");
    assert!(src["rpo_age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(b["bytes_read_total"].as_u64().unwrap() > 0, "{b}");
    let drill = job(&s, "drill");
    assert!(drill["runs_total"].as_u64().unwrap() >= 1, "{drill}");
    let drills = s["drills"].as_array().unwrap();
    assert!(
        drills
            .iter()
            .any(|dr| dr["playbook"] == "docs-drill" && dr["passed"] == true),
        "{drills:?}"
    );

    // The log: every run started on a scheduled second, never before it,
    // and a job's runs never overlap (start, end, start, end...).
    let events = log_events(&d.log());
    let mut open: std::collections::BTreeMap<String, bool> = Default::default();
    let mut starts = 0;
    for e in &events {
        let Some(name) = e["fields"]["job"].as_str() else {
            continue;
        };
        let m = message(e);
        if m == "job started" {
            assert!(
                !open.get(name).copied().unwrap_or(false),
                "{name} started while running: {events:?}"
            );
            open.insert(name.to_string(), true);
            if name == "docs-backup" {
                starts += 1;
                let sched: DateTime<Utc> =
                    e["fields"]["scheduled"].as_str().unwrap().parse().unwrap();
                let at: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
                assert!(secs.contains(&sched.second()), "{sched}");
                assert!(at >= sched, "started at {at}, before {sched}");
            }
        } else if m.starts_with("job succeeded")
            || m.starts_with("job failed")
            || m.starts_with("job interrupted")
        {
            open.insert(name.to_string(), false);
        }
    }
    assert_eq!(starts, 3);

    // `holdfast status` reads the same view from the listener.
    let out = env.ok(["status", "--json", "--address", &addr.to_string()]);
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job(&cli, "docs-backup")["runs_total"], 3);
    let out = env.ok(["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("docs-backup") && text.contains(&addr.to_string()),
        "{text}"
    );
}

#[test]
fn status_without_a_daemon_reads_the_repository() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let docs = env.path("docs");
    write_tree(&docs, 3);
    env.ok(["backup", docs.to_str().unwrap(), "--source", "docs"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "{}\n[source.docs]\npaths = [\"{}\"]\nrpo = \"1h\"\n[source.db]\npaths = [\"/nonexistent\"]\nrpo = \"1h\"\n[[job]]\nname = \"docs-backup\"\nkind = \"backup\"\nsource = \"docs\"\nrepository = \"main\"\nschedule = \"0 0 1 * * *\"\n[[job]]\nname = \"db-backup\"\nkind = \"backup\"\nsource = \"db\"\nrepository = \"main\"\nschedule = \"0 0 1 * * *\"\n[listen]\naddress = \"{addr}\"\n",
            repo_config(&env, &pass),
            docs.display()
        ),
    )
    .unwrap();
    let out = env.ok(["status", "--json", "--config", config.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snapshots(&env);
    let docs_src = source(&v, "docs");
    assert_eq!(docs_src["last_snapshot"], snaps[0]["id"], "{v}");
    assert_eq!(docs_src["rpo_breached"], false);
    assert!(docs_src["rpo_age_seconds"].as_f64().unwrap() < 3600.0);
    let db = source(&v, "db");
    assert!(db["last_backup_at"].is_null());
    assert_eq!(
        db["rpo_breached"], true,
        "no backup at all breaches the RPO"
    );
    let text = env.ok(["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("RPO BREACHED") && text.contains("repositories"),
        "{text}"
    );
}

#[test]
fn sigterm_during_a_long_backup_leaves_a_valid_repository_and_exits() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..6 {
        write_random(&big.join(format!("r{i}.bin")), 64);
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "{}\n[source.big]\npaths = [\"{}\"]\n[[job]]\nname = \"big-backup\"\nkind = \"backup\"\nsource = \"big\"\nrepository = \"main\"\nschedule = \"* * * * * *\"\n[listen]\naddress = \"{addr}\"\n[daemon]\ngrace = \"0s\"\n[log]\nformat = \"json\"\n",
            repo_config(&env, &pass),
            big.display()
        ),
    )
    .unwrap();
    let state = env.path("state");
    let mut d = Daemon::start(&config, &state, &env.path("daemon.log"), addr, &[]);
    d.wait_for(
        || {
            let s = d.status();
            let j = job(&s, "big-backup");
            j["running"]["bytes_done"].as_u64().unwrap_or(0) > 0
        },
        "the backup to be under way",
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0), "{}", d.log());
    let log = d.log();
    assert!(log.contains("stop signal"), "{log}");
    // The state file says what happened to the run.
    let st: Value =
        serde_json::from_slice(&fs::read(state.join("daemon-state.json")).unwrap()).unwrap();
    let outcome = st["jobs"]["big-backup"]["last"]["outcome"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(outcome == "interrupted" || outcome == "success", "{st}");
    if outcome == "interrupted" {
        assert!(
            snapshots(&env).iter().all(|s| s["source"] != "big"),
            "an interrupted backup writes no snapshot"
        );
    }
    env.ok(["check", "--read-data"]);
}

#[test]
fn sighup_keeps_the_old_config_on_a_broken_file_and_takes_a_good_one() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let docs = env.path("docs");
    write_tree(&docs, 2);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = env.path("holdfast.toml");
    let body = |jobs: &str| {
        format!(
            "{}\n[source.docs]\npaths = [\"{}\"]\n{jobs}\n[listen]\naddress = \"{addr}\"\n",
            repo_config(&env, &pass),
            docs.display()
        )
    };
    let job_a = "[[job]]\nname = \"a\"\nkind = \"backup\"\nsource = \"docs\"\nrepository = \"main\"\nschedule = \"0 0 3 * * *\"\n";
    fs::write(&config, body(job_a)).unwrap();
    let state = env.path("state");
    let d = Daemon::start(&config, &state, &env.path("daemon.log"), addr, &[]);
    let names = |s: &Value| -> Vec<String> {
        s["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&d.status()), ["a"]);
    // A broken file: unknown kind on line 9 of the new text.
    fs::write(
        &config,
        body(&job_a.replace("kind = \"backup\"", "kind = \"bakup\"")),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for(
        || !d.status()["daemon"]["config_error"].is_null(),
        "the reload error in the view",
    );
    let s = d.status();
    let err = s["daemon"]["config_error"].as_str().unwrap();
    assert!(
        err.contains("holdfast.toml:") && err.contains("bakup"),
        "{err}"
    );
    assert_eq!(names(&s), ["a"], "the old configuration stays");
    assert!(
        d.log().contains("configuration not reloaded"),
        "{}",
        d.log()
    );
    // A good file is taken, and clears the error.
    let job_b = job_a
        .replace("name = \"a\"", "name = \"b\"")
        .replace("0 0 3", "0 0 4");
    fs::write(&config, body(&format!("{job_a}\n{job_b}"))).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for(
        || d.status()["jobs"].as_array().unwrap().len() == 2,
        "the new job",
    );
    let s = d.status();
    assert!(s["daemon"]["config_error"].is_null(), "{s}");
    assert_eq!(names(&s), ["a", "b"]);
    let next: DateTime<Utc> = job(&s, "b")["next_run"].as_str().unwrap().parse().unwrap();
    assert_eq!((next.minute(), next.second()), (0, 0));
}

#[test]
fn two_daemons_share_one_s3_repository() {
    let moto = harness::Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(moto.create_bucket("fleet"));
    let env = Env::new();
    let url = "s3://fleet/repo";
    let s3_env = [
        ("HOLDFAST_S3_ENDPOINT", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let hf = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.env("HOLDFAST_REPOSITORY", url)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env("HOLDFAST_S3_PATH_STYLE", "true")
            .env("HOLDFAST_S3_ALLOW_HTTP", "true")
            .env_remove("HOLDFAST_PASSWORD_FILE")
            .stdin(Stdio::null());
        for (k, v) in &s3_env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    hf(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let (schedule, _) = seconds_from_now(4, 2, 3);
    let mut daemons = Vec::new();
    for host in ["alpha", "beta"] {
        let docs = env.path(&format!("docs-{host}"));
        write_tree(&docs, 10);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = env.path(&format!("{host}.toml"));
        fs::write(
            &config,
            format!(
                "[repository.fleet]\nurl = \"{url}\"\npassword_file = \"{}\"\ns3_endpoint = \"{}\"\ns3_path_style = true\ns3_allow_http = true\ns3_access_key_id_env = \"FLEET_KEY_ID\"\ns3_secret_access_key_env = \"FLEET_SECRET\"\n\n[source.{host}]\npaths = [\"{}\"]\n\n[[job]]\nname = \"{host}-backup\"\nkind = \"backup\"\nsource = \"{host}\"\nrepository = \"fleet\"\nschedule = \"{schedule}\"\n\n[listen]\naddress = \"{addr}\"\n",
                pass.display(),
                moto.endpoint(),
                docs.display()
            ),
        )
        .unwrap();
        let state = env.path(&format!("state-{host}"));
        daemons.push(Daemon::start(
            &config,
            &state,
            &env.path(&format!("{host}.log")),
            addr,
            &[
                ("FLEET_KEY_ID", "test"),
                ("FLEET_SECRET", "test"),
                ("AWS_REGION", "us-east-1"),
            ],
        ));
    }
    for (d, host) in daemons.iter().zip(["alpha", "beta"]) {
        d.wait_for(
            || job(&d.status(), &format!("{host}-backup"))["runs_total"] == 2,
            "two backups by each daemon",
        );
        let s = d.status();
        let j = job(&s, &format!("{host}-backup"));
        assert_eq!(j["failures_total"], 0, "{j}\n{}", d.log());
        assert_eq!(j["last"]["outcome"], "success", "{j}");
    }
    drop(daemons);
    let out = hf(&["snapshots", "--json"]);
    let snaps: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for host in ["alpha", "beta"] {
        assert_eq!(
            snaps.iter().filter(|s| s["source"] == host).count(),
            2,
            "{snaps:?}"
        );
    }
    hf(&["check", "--read-data"]);
}

/// A webhook receiver on 127.0.0.1: records each POSTed JSON body and
/// answers 200.
fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body[..len].to_string());
                    }
                }
            };
            if let Some(b) = body {
                if let Ok(v) = serde_json::from_str::<Value>(&b) {
                    g.lock().unwrap().push(v);
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn a_failing_job_retries_then_alerts_and_an_rpo_breach_fires_and_resolves() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let late = env.path("late");
    let (hook, got) = webhook_receiver();
    let (schedule, _) = seconds_from_now(6, 1, 1);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "{}\n[source.late]\npaths = [\"{}\"]\nrpo = \"1m\"\n[source.gone]\npaths = [\"{}\"]\n\n[[job]]\nname = \"late-backup\"\nkind = \"backup\"\nsource = \"late\"\nrepository = \"main\"\nschedule = \"*/2 * * * * *\"\n\n[[job]]\nname = \"gone-backup\"\nkind = \"backup\"\nsource = \"gone\"\nrepository = \"main\"\nschedule = \"{schedule}\"\nretries = 2\nretry_backoff = \"1s\"\n\n[alert.ops]\nurl = \"{hook}\"\nretries = 2\n\n[listen]\naddress = \"{addr}\"\n",
            repo_config(&env, &pass),
            late.display(),
            env.path("no-such-dir").display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        &config,
        &env.path("state"),
        &env.path("daemon.log"),
        addr,
        &[],
    );
    let has = |event: &str, key: &str| {
        got.lock()
            .unwrap()
            .iter()
            .any(|v| v["event"] == event && v["key"] == key)
    };
    // The failing job alerts once, after its retries.
    d.wait_for(
        || has("firing", "job-failed:gone-backup"),
        "the job failure notice",
    );
    let s = d.status();
    let j = job(&s, "gone-backup");
    assert_eq!(j["last"]["outcome"], "failed", "{j}");
    assert_eq!(j["last"]["attempts"], 3, "{j}");
    assert_eq!(j["retries_total"], 2, "{j}");
    assert_eq!(j["failures_total"], 1, "{j}");
    assert!(
        s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "job-failed:gone-backup"),
        "{s}"
    );
    {
        let notices = got.lock().unwrap();
        let failed = notices
            .iter()
            .find(|v| v["key"] == "job-failed:gone-backup")
            .unwrap();
        assert_eq!(failed["subject"], "gone-backup");
        assert!(
            failed["message"].as_str().unwrap().contains("3 attempts"),
            "{failed}"
        );
        let n = notices
            .iter()
            .filter(|v| v["key"] == "job-failed:gone-backup")
            .count();
        assert_eq!(n, 1, "one notice per condition, not per evaluation");
    }
    // No backup of `late` for an RPO since the start: breached.
    d.wait_for(|| has("firing", "rpo-breach:late"), "the RPO breach notice");
    // Its data appears; the next backup resolves both of its alerts.
    write_tree(&late, 2);
    d.wait_for(
        || has("resolved", "rpo-breach:late"),
        "the RPO resolved notice",
    );
    d.wait_for(
        || has("resolved", "job-failed:late-backup"),
        "the job resolved notice",
    );
    let s = d.status();
    assert_eq!(source(&s, "late")["rpo_breached"], false, "{s}");
    assert!(
        !s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "rpo-breach:late"),
        "{s}"
    );
    // No secret in any payload.
    let notices = got.lock().unwrap().clone();
    assert!(!serde_json::to_string(&notices).unwrap().contains(PASSWORD));
}

#[test]
fn a_mass_encryption_fires_the_anomaly_and_holds_the_snapshot_before_it_but_ordinary_days_do_not() {
    let env = Env::new();
    env.init();
    let pass = env.path("pass");
    fs::write(&pass, PASSWORD).unwrap();
    let docs = env.path("docs");
    write_tree(&docs, 60);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = env.path("holdfast.toml");
    fs::write(
        &config,
        format!(
            "{}\n[source.docs]\npaths = [\"{}\"]\nanomaly = true\nanomaly_hold = true\n[[job]]\nname = \"docs-backup\"\nkind = \"backup\"\nsource = \"docs\"\nrepository = \"main\"\nschedule = \"*/2 * * * * *\"\n[listen]\naddress = \"{addr}\"\n[log]\nformat = \"json\"\n",
            repo_config(&env, &pass),
            docs.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        &config,
        &env.path("state"),
        &env.path("daemon.log"),
        addr,
        &[],
    );
    let runs = |d: &Daemon| {
        job(&d.status(), "docs-backup")["runs_total"]
            .as_u64()
            .unwrap_or(0)
    };
    // A first backup, then five ordinary days: two documents edited each.
    for day in 0..6u64 {
        let before = runs(&d);
        d.wait_for(|| runs(&d) > before, "the next backup");
        let s = d.status();
        assert_eq!(job(&s, "docs-backup")["last"]["outcome"], "success", "{s}");
        assert!(source(&s, "docs")["anomaly"].is_null(), "day {day}: {s}");
        for i in [day * 2, day * 2 + 1] {
            fs::write(
                docs.join(format!("f{i}.txt")),
                format!("document {i}, revised on day {day}\n").repeat(50),
            )
            .unwrap();
        }
    }
    let held_expected = snapshots(&env)
        .iter()
        .filter(|s| s["source"] == "docs")
        .max_by_key(|s| s["time"].as_str().unwrap_or("").to_string())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap();
    // The attack: every document replaced by random bytes.
    let mut rnd = fs::File::open("/dev/urandom").unwrap();
    for i in 0..60 {
        let mut buf = vec![0u8; 32 << 10];
        rnd.read_exact(&mut buf).unwrap();
        fs::write(docs.join(format!("f{i}.txt")), &buf).unwrap();
    }
    d.wait_for(
        || !source(&d.status(), "docs")["anomaly"].is_null(),
        "the anomaly",
    );
    let s = d.status();
    let a = &source(&s, "docs")["anomaly"];
    assert!(a["changed_share"].as_f64().unwrap() > 0.9, "{a}");
    let hold = a["hold"].as_str().expect("an automatic hold").to_string();
    assert!(
        held_expected.starts_with(a["held_snapshot"].as_str().unwrap())
            || a["held_snapshot"]
                .as_str()
                .unwrap()
                .starts_with(&held_expected),
        "the last snapshot before the jump ({held_expected}) is held: {a}"
    );
    let holds = env.json(["hold", "list"]);
    let h = holds
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == hold.as_str())
        .unwrap_or_else(|| panic!("hold {hold} listed: {holds}"));
    assert!(
        h["case"].as_str().unwrap().starts_with("anomaly-docs"),
        "{h}"
    );
    // The alert condition is on the view.
    assert!(
        s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["kind"] == "anomaly" && x["subject"] == "docs"),
        "{s}"
    );
}
