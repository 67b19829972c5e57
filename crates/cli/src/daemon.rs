//! `holdfast daemon` and `holdfast status`. The daemon itself is
//! `holdfast-daemon`'s; this module reads the configuration file and the
//! secrets it names (files, environment variables), sets up logging,
//! turns signals into control messages, and prints the status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use holdfast_config::{load_file, Config, LogFormat, Secret, SourceKind, WebhookUrl};
use holdfast_daemon::scheduler::from_repositories;
use holdfast_daemon::view::{RunOutcome, StatusView};
use holdfast_daemon::{listener, Control, Daemon, RepoAccess, Setup};
use holdfast_ops::open::{Credential, Location, S3Overrides, SessionOptions};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::args::{DaemonArgs, Global, StatusArgs};
use crate::exit;
use crate::open;
use crate::ui;

/// Where `holdfast status` looks when given no address and no file.
const DEFAULT_CONFIG: &str = "/etc/holdfast/holdfast.toml";

/// The configuration file, or every error in it as one message.
fn load(file: &Path) -> Result<Config> {
    load_file(file).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow!("invalid configuration:\n  {}", lines.join("\n  "))
    })
}

/// A secret's value: a file's content (one trailing newline dropped) or
/// an environment variable's.
fn secret(s: &Secret, what: &str) -> Result<String> {
    match s {
        Secret::File(f) => {
            let v = open::read_password_file(f)
                .with_context(|| format!("reading {what} from {}", f.display()))?;
            String::from_utf8(v).with_context(|| format!("{what} in {} is not UTF-8", f.display()))
        }
        Secret::Env(n) => open::env_nonempty(n)
            .with_context(|| format!("{what}: environment variable {n} is not set")),
    }
}

/// The configuration with its secrets read: what the daemon runs on.
fn resolve(g: &Global, config: Config) -> Result<Setup> {
    let mut repositories = BTreeMap::new();
    for (name, r) in &config.repositories {
        let ctx = || format!("repository {name:?}");
        let overrides = S3Overrides {
            endpoint: r.s3_endpoint.clone(),
            region: r.s3_region.clone(),
            path_style: r.s3_path_style,
            allow_http: r.s3_allow_http,
        };
        let mut location =
            Location::from_url(&r.url, |n| std::env::var(n).ok(), &overrides).with_context(ctx)?;
        if let (Location::S3(cfg), Some(id), Some(key)) =
            (&mut location, &r.s3_access_key_id, &r.s3_secret_access_key)
        {
            cfg.credentials = Some(holdfast_s3::S3Credentials {
                access_key_id: secret(id, "s3_access_key_id").with_context(ctx)?,
                secret_access_key: secret(key, "s3_secret_access_key").with_context(ctx)?,
                session_token: None,
            });
        }
        let credential = match (&r.key_file, &r.password) {
            (Some(k), _) => Credential::Key(open::read_key_file(k).with_context(ctx)?),
            (None, Some(p)) => {
                Credential::Password(secret(p, "password").with_context(ctx)?.into_bytes())
            }
            (None, None) => bail!("repository {name:?}: no password or key file"),
        };
        let session = SessionOptions {
            cache_dir: r.cache_dir.clone().or_else(|| open::cache_root(g)),
            lease_duration: g.lease_duration,
            actor: crate::identity::actor(),
        };
        repositories.insert(
            name.clone(),
            RepoAccess {
                location,
                credential: Arc::new(credential),
                session,
            },
        );
    }
    let mut postgres = BTreeMap::new();
    for (name, s) in &config.sources {
        if let SourceKind::Postgres { dsn, password, .. } = &s.kind {
            let pw = password
                .as_ref()
                .map(|p| secret(p, "password"))
                .transpose()
                .with_context(|| format!("source {name:?}"))?;
            let parsed = holdfast_postgres::Dsn::parse_with(dsn, |n| {
                if n == "PGPASSWORD" && pw.is_some() {
                    return pw.clone();
                }
                std::env::var(n).ok().filter(|v| !v.is_empty())
            })
            .with_context(|| format!("source {name:?}"))?;
            postgres.insert(name.clone(), parsed);
        }
    }
    let mut webhooks = BTreeMap::new();
    for (name, a) in &config.alerts {
        let url = match &a.url {
            WebhookUrl::Inline(u) => u.clone(),
            WebhookUrl::Secret(s) => secret(s, "url").with_context(|| format!("alert {name:?}"))?,
        };
        webhooks.insert(name.clone(), url.trim().to_string());
    }
    let bindir = std::env::var_os("HOLDFAST_PG_BINDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    Ok(Setup {
        pg_tools: holdfast_postgres::PgTools::discover_in(
            bindir.clone(),
            std::env::var_os("HOLDFAST_PG_DUMP")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        ),
        pg_bindir: bindir,
        config,
        repositories,
        postgres,
        webhooks,
        scratch_dir: std::env::temp_dir(),
        host: holdfast_repo::hostname(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// The state directory: the flag, the file's `[daemon] state_dir`,
/// systemd's `$STATE_DIRECTORY`, /var/lib/holdfast for root, else the
/// XDG state directory.
fn state_dir(a: &DaemonArgs, c: &Config) -> Result<PathBuf> {
    if let Some(d) = a.state_dir.clone().or_else(|| c.daemon.state_dir.clone()) {
        return Ok(d);
    }
    if let Some(d) = open::env_nonempty("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'.
        return Ok(PathBuf::from(d.split(':').next().unwrap_or(&d)));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/holdfast"));
    }
    if let Some(x) = open::env_nonempty("XDG_STATE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Ok(Path::new(&x).join("holdfast"));
    }
    match open::env_nonempty("HOME") {
        Some(h) => Ok(Path::new(&h).join(".local/state/holdfast")),
        None => bail!("no state directory: pass --state-dir or set [daemon] state_dir"),
    }
}

/// Logs to standard error or `[log] file`, as text or JSON lines.
fn init_logging(c: &Config) -> Result<()> {
    use tracing_subscriber::fmt;
    let builder = fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_target(false);
    let result = match (&c.log_file, c.log_format) {
        (Some(f), format) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("opening the log file {}", f.display()))?;
            let b = builder.with_writer(std::sync::Mutex::new(file));
            match format {
                LogFormat::Json => b.json().try_init(),
                LogFormat::Text => b.try_init(),
            }
        }
        (None, LogFormat::Json) => builder.with_writer(std::io::stderr).json().try_init(),
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).try_init(),
    };
    result.map_err(|e| anyhow!("setting up logging: {e}"))
}

/// `holdfast daemon --config FILE`.
pub fn run(g: &Global, rt: &Runtime, a: DaemonArgs) -> Result<i32> {
    let file = a
        .config
        .clone()
        .context("--config FILE is required (or HOLDFAST_CONFIG)")?;
    let config = load(&file)?;
    init_logging(&config)?;
    let dir = state_dir(&a, &config)?;
    let listen = config.listen.clone();
    let setup = resolve(g, config)?;
    let jobs = setup.config.jobs.len();
    let daemon = Daemon::new(
        setup,
        dir.clone(),
        rt.handle().clone(),
        file.display().to_string(),
    )?;
    rt.block_on(async {
        // Handlers first: a signal must never find the default action.
        let sigs = Signals::install().context("installing signal handlers")?;
        let listener = match &listen {
            Some(l) => Some(listener::bind(l.address).await?),
            None => None,
        };
        tracing::info!(
            config = %file.display(),
            state_dir = %dir.display(),
            jobs,
            listen = listen.as_ref().map(|l| l.address.to_string()).unwrap_or_else(|| "off".into()),
            pid = std::process::id(),
            "daemon started"
        );
        let serving = listener.map(|l| tokio::spawn(listener::serve(l, daemon.clone())));
        let (tx, rx) = mpsc::channel(4);
        let signals = tokio::spawn(signals(sigs, g.clone(), file.clone(), tx));
        daemon.run(rx).await;
        signals.abort();
        if let Some(s) = serving {
            s.abort();
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(exit::OK)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGTERM and SIGINT shut down (a second one exits at once); SIGHUP
/// reloads the file.
async fn signals(sigs: Signals, g: Global, file: PathBuf, tx: mpsc::Sender<Control>) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = sigs;
    let mut stopping = false;
    loop {
        let sig = tokio::select! {
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
            _ = hup.recv() => libc::SIGHUP,
        };
        if sig == libc::SIGHUP {
            tracing::info!(file = %file.display(), "SIGHUP: reloading the configuration");
            let (g, f) = (g.clone(), file.clone());
            let new = tokio::task::spawn_blocking(move || {
                load(&f)
                    .and_then(|c| resolve(&g, c))
                    .map_err(|e| format!("{}: {}", f.display(), crate::error_chain(&e)))
            })
            .await
            .unwrap_or_else(|e| Err(format!("reloading: {e}")));
            let _ = tx.send(Control::Reload(Box::new(new))).await;
            continue;
        }
        if stopping {
            tracing::warn!("second stop signal: exiting at once");
            std::process::exit(128 + sig);
        }
        stopping = true;
        tracing::info!(
            signal = crate::interrupt::name(sig),
            "stop signal: taking no new jobs"
        );
        let _ = tx.send(Control::Shutdown).await;
    }
}

/// `holdfast status`.
pub fn status(g: &Global, rt: &Runtime, a: StatusArgs) -> Result<i32> {
    let timeout = Duration::from_secs(5);
    let (view, from) = if let Some(addr) = a.address {
        (
            listener::fetch_status(addr, timeout)?,
            format!("daemon at {addr}"),
        )
    } else {
        let file = a
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let config = load(&file)?;
        let addr: Option<SocketAddr> = config.listen.as_ref().map(|l| l.address);
        match addr.map(|a| listener::fetch_status(a, timeout)) {
            Some(Ok(v)) => (
                v,
                format!(
                    "daemon at {}",
                    addr.map(|a| a.to_string()).unwrap_or_default()
                ),
            ),
            other => {
                if let Some(Err(e)) = other {
                    if !g.quiet && !g.json {
                        errln!("holdfast: {e}; reading the repositories");
                    }
                }
                let setup = resolve(g, config)?;
                (
                    from_repositories(&setup, rt.handle(), chrono::Utc::now()),
                    "repositories (no daemon answered)".to_string(),
                )
            }
        }
    };
    if g.json {
        ui::print_json(&view)?;
    } else {
        print_status(&view, &from);
    }
    Ok(exit::OK)
}

fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        Some(s) => format!("{:.1}d", s / 86400.0),
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_status(v: &StatusView, from: &str) {
    let d = &v.daemon;
    outln!("from {from}");
    if d.pid != 0 {
        outln!(
            "daemon pid {} on {}, started {}, config {}{}",
            d.pid,
            ui::escape(d.host.as_bytes()),
            time(d.started_at),
            ui::escape(d.config_file.as_bytes()),
            if d.stopping { " (stopping)" } else { "" }
        );
    }
    if let Some(e) = &d.config_error {
        outln!("config reload failed (old config in force): {e}");
    }
    outln!();
    outln!(
        "{:<20} {:<18} {:<20} {:>8} {:>8}  status",
        "source",
        "kind",
        "last backup (UTC)",
        "age",
        "rpo"
    );
    for s in &v.sources {
        outln!(
            "{:<20} {:<18} {:<20} {:>8} {:>8}  {}",
            ui::escape(s.name.as_bytes()),
            s.kind,
            time(s.last_backup_at),
            age(s.rpo_age_seconds),
            age(s.rpo_seconds),
            if s.rpo_breached { "RPO BREACHED" } else { "ok" }
        );
    }
    outln!();
    outln!(
        "{:<24} {:<10} {:<20} {:<12} last result",
        "job",
        "kind",
        "next run (UTC)",
        "running"
    );
    for j in &v.jobs {
        let last = match &j.last {
            None => "-".to_string(),
            Some(r) => format!(
                "{} at {}{}",
                match r.outcome {
                    RunOutcome::Success => "success",
                    RunOutcome::Failed => "FAILED",
                    RunOutcome::TimedOut => "TIMED OUT",
                    RunOutcome::Interrupted => "interrupted",
                    RunOutcome::Skipped => "skipped",
                },
                time(Some(r.finished_at)),
                r.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        };
        outln!(
            "{:<24} {:<10} {:<20} {:<12} {}",
            ui::escape(j.name.as_bytes()),
            j.kind,
            time(j.next_run),
            j.running
                .as_ref()
                .map(|r| r.phase.clone())
                .unwrap_or_else(|| "-".into()),
            last
        );
    }
    for dr in &v.drills {
        outln!(
            "drill {}: {} at {} (RTO {} of {})",
            ui::escape(dr.playbook.as_bytes()),
            dr.outcome,
            time(dr.at),
            age(dr.rto_seconds),
            age(dr.rto_target_seconds)
        );
    }
    for a in &v.alerts {
        outln!(
            "ALERT {}: {} (since {})",
            a.subject,
            a.message,
            time(Some(a.since))
        );
    }
}
