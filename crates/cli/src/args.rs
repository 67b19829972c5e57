//! Command-line arguments (clap derive). Parsing only: no behaviour here.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Encrypted, deduplicated backups with drills, retention and legal holds",
    after_help = "Exit codes: 0 ok; 1 error; 2 usage; 3 backup finished but some files could not be read; \
4 integrity problem (check found damage, or a restore left files out); 9 wal-fetch: WAL file not archived; \
10 not a repository; \
12 wrong password; 13 repository format newer than this holdfast; \
20, 21, 22 drill run: a check failed, a target was missed, an error before every check could run; \
23 compliance report: a control fails; \
130, 143 backup interrupted by SIGINT, SIGTERM (stored data kept for the next backup)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Repository: a directory path (or s3://bucket/prefix).
    #[arg(short = 'r', long = "repo", env = "HOLDFAST_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the repository password (else HOLDFAST_PASSWORD, else a prompt).
    #[arg(
        long,
        env = "HOLDFAST_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Key file that opens the repository with no password hashing (made by
    /// `key add --new-key-file`); for archive_command and restore_command.
    #[arg(long, env = "HOLDFAST_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no informational messages.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// S3: custom endpoint (MinIO, Ceph RGW, Garage, R2...).
    #[arg(long, env = "HOLDFAST_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3: path-style addressing (endpoint/bucket/key).
    #[arg(long, global = true)]
    pub s3_path_style: bool,
    /// S3: allow a plain-HTTP endpoint (test servers, trusted networks).
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
    /// S3: region to sign for (default AWS_REGION, else us-east-1).
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// When stderr is not a terminal (or with --json): print a status line
    /// to stderr every DURATION (e.g. 10s, 1m, 500ms); JSON lines with --json.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub progress_interval: Option<std::time::Duration>,
    /// Local cache of index, snapshot and tree data (default:
    /// $XDG_CACHE_HOME/holdfast, else ~/.cache/holdfast); safe to delete.
    #[arg(long, env = "HOLDFAST_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the local cache: fetch all metadata from the repository.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Validity of this process's repository lease, refreshed every third
    /// of it (default 10m); a crashed writer's lease is stale after it.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, env = "HOLDFAST_LEASE_DURATION")]
    pub lease_duration: Option<std::time::Duration>,
}

/// `10s`, `1m`, `500ms`, `2h`, `1d`, or a number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 10s, 1m, 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?} has an unknown unit: use ms, s, m, h or d")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?}: the interval must be more than zero"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A size for --exclude-larger-than (K, M, G, T are powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    holdfast_sources::exclude::parse_size(s)
}

#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotSelect {
    /// Narrow `latest` (or a prefix) to snapshots of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Narrow to snapshots carrying this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the contents of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot (or paths in it) to a directory.
    Restore(RestoreArgs),
    /// Verify the repository's structure and, optionally, its data.
    Check(CheckArgs),
    /// Manage the passwords (key slots) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sizes, deduplication and compression.
    Stats(StatsArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Rebuild repository metadata from the data that is there.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Archive a PostgreSQL WAL file (use as archive_command: holdfast wal-push %p).
    WalPush(WalPushArgs),
    /// Fetch an archived WAL file (restore_command: holdfast wal-fetch %f %p);
    /// exits 9 when the file is not archived.
    WalFetch(WalFetchArgs),
    /// Upgrade the repository in place to the newest format (see
    /// docs/format.md); safe to run again after a crash.
    Migrate,
    /// Internal: background prefetch for `wal-fetch --prefetch`.
    #[command(hide = true)]
    WalPrefetch(WalPrefetchArgs),
    /// Retention policy files: validate them, plan what they keep, archive
    /// and purge.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Benchmarks only: write synthetic index objects (benches/index_scale.py).
    #[command(hide = true)]
    BenchSynthIndex(crate::bench::SynthIndexArgs),
    /// Benchmarks only: open, load the index, print timings as JSON.
    #[command(hide = true)]
    BenchOpen,
    /// List the repository's locks (leases of running writers and of GC),
    /// live or stale.
    Locks,
    /// Remove stale locks (left by processes that crashed); --force: all.
    Unlock(UnlockArgs),
    /// Garbage collection: delete packs no snapshot or WAL manifest needs,
    /// repack mostly-unused ones, merge index objects. Runs beside backups.
    Gc(GcArgs),
    /// The audit trail: who did what to the repository (log, verify,
    /// export for a SIEM).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Restore drills: run playbooks that restore into scratch targets,
    /// check the data and time it against RTO and RPO (see README "DR drills").
    #[command(subcommand)]
    Drill(DrillCommand),
    /// The daemon's configuration file (holdfast.toml).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the jobs of a configuration file on schedule, with a listener
    /// for /status, /metrics and the status page (see README "Daemon").
    /// SIGTERM/SIGINT: finish running jobs within the grace period, then
    /// stop; SIGHUP: reload the file (an invalid one is refused).
    Daemon(DaemonArgs),
    /// What is backed up and how fresh: from the daemon's listener, or
    /// from the repositories when no daemon answers.
    Status(StatusArgs),
    /// Electronic signatures: register signers (ed25519 public keys), make
    /// key pairs.
    #[command(subcommand)]
    Signer(SignerCommand),
    /// Legal holds: freeze snapshots for a case; held snapshots are never
    /// purged, archived or garbage-collected until the hold is released.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// The GDPR erasure register (Art. 17): erasures every later restore
    /// of an older snapshot applies again.
    #[command(subcommand)]
    Erasure(ErasureCommand),
    /// Compliance evidence: controls (HIPAA, 21 CFR Part 11, GDPR) judged
    /// from what the repository holds (see README "Compliance evidence
    /// report").
    #[command(subcommand)]
    Compliance(ComplianceCommand),
}

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Every control with pass / attention / fail and its evidence: backups
    /// within their RPO, drills, encryption, the audit trail, retention,
    /// legal holds, Object Lock, erasures. Exit 0: no control fails
    /// (attention included); 23: a control fails; 2: an invalid
    /// configuration, policy or playbook file.
    Report(ComplianceReportArgs),
}

#[derive(Debug, Args)]
pub struct ComplianceReportArgs {
    /// Write the report as JSON to FILE (`--json` alone prints it).
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, alias = "html", value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Evaluate as of this time (RFC 3339, or a date: its end, UTC);
    /// records made after it are left out. Default: now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The daemon's configuration (`holdfast.toml`): the sources expected
    /// in this repository and their RPO.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A retention policy file (repeatable): policies in force, past due.
    #[arg(long = "policy", value_name = "FILE")]
    pub policies: Vec<PathBuf>,
    /// A playbook file, or a directory of them (`*.toml`; repeatable): the
    /// drills each must have passed (default: every playbook in the drill
    /// history).
    #[arg(long = "playbooks", value_name = "PATH")]
    pub playbooks: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ErasureCommand {
    /// Record an erasure (write-once): an SQL statement for a database
    /// (checked on the server in a transaction that is rolled back) or a
    /// path pattern of backed-up files.
    Add(ErasureAddArgs),
    /// Every recorded erasure, in recorded order.
    List,
    /// Run the erasures a physical restore left in DIR/holdfast-erasures.json
    /// on the server now running on it.
    Apply(ErasureApplyArgs),
}

#[derive(Debug, Args)]
pub struct ErasureAddArgs {
    /// The request's reference (e.g. DSAR-2026-041).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: String,
    /// The SQL statement that erases the subject (one statement).
    #[arg(long, value_name = "STMT", required_unless_present = "path", conflicts_with = "path", requires_all = ["database", "postgres"])]
    pub sql: Option<String>,
    /// The database the statement runs in (its name in the backed-up cluster).
    #[arg(long, value_name = "DB", requires = "sql")]
    pub database: Option<String>,
    /// The server to check the statement on (a transaction that is rolled
    /// back); its database name is replaced by --database.
    #[arg(long, value_name = "DSN", requires = "sql")]
    pub postgres: Option<String>,
    /// An absolute glob of backed-up source paths (`*`, `?`, `[a-z]`, `**`).
    #[arg(long, value_name = "PATTERN")]
    pub path: Option<String>,
    /// Why (the legal basis, the request).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ErasureApplyArgs {
    /// The restored data directory holding holdfast-erasures.json.
    #[arg(long, value_name = "DIR")]
    pub datadir: PathBuf,
    /// The server running on it.
    #[arg(long, value_name = "DSN")]
    pub postgres: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The configuration file (holdfast.toml).
    #[arg(long, value_name = "FILE", env = "HOLDFAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the daemon keeps its state (last run per job); default:
    /// [daemon] state_dir, else $STATE_DIRECTORY (systemd), else
    /// /var/lib/holdfast as root, else ~/.local/state/holdfast.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration file: its listener is asked; when no daemon
    /// answers, its repositories are read.
    #[arg(long, value_name = "FILE", env = "HOLDFAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Ask the daemon listening here (IP:PORT) instead.
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub address: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file; every error names file, line and column
    /// (exit 2).
    Validate {
        /// The file (e.g. /etc/holdfast/holdfast.toml).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    /// Register a signer: NAME (e.g. jroe) and an ed25519 public key file
    /// (PEM PUBLIC KEY, or an OpenSSH ssh-ed25519 line). Write-once.
    Add(SignerAddArgs),
    /// List the registered signers.
    List,
    /// Make an ed25519 key pair: the private key in FILE (mode 0600), the
    /// public key in FILE.pub. Needs no repository.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SignerAddArgs {
    /// The registered name (letters, digits, '.', '_', '-').
    pub name: String,
    /// The signer's ed25519 public key file.
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// The signer's full name as shown on signed entries (default NAME).
    #[arg(long, value_name = "TEXT")]
    pub printed_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the entries of the audit trail, oldest first.
    Log(AuditLogArgs),
    /// Verify the trail: every entry intact, none missing, reordered or
    /// inserted, the tail reaching every head a snapshot or this machine
    /// recorded, every signature valid. Exit 4 when it is broken.
    Verify,
    /// Write the trail for a SIEM: JSON lines or CSV.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// Only entries at or after this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only this operation (`backup`, `restore`, `key` for every key
    /// operation, `policy apply`, ...).
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// `jsonl` (one JSON object per line) or `csv` (RFC 4180, with a header).
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    /// Write to this file (created, never overwritten) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only entries at or after this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only this operation.
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Check playbook files; every error names file, line and column (exit 2).
    Validate {
        /// Playbook files (`playbooks/*.toml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a drill. Exit 0: every check passed and RTO and RPO were met;
    /// 20: a check failed; 21: a target (RTO, RPO) was missed; 22: an
    /// error before every check could run (also the timeout); 2: invalid
    /// playbook; 130/143: interrupted (scratch targets torn down).
    Run(DrillRunArgs),
    /// Past drills with outcome, RTO and RPO, who approved each, and the
    /// site RTO forecast.
    History(DrillHistoryArgs),
    /// Sign the review of a drill report (21 CFR 11.50): a signed audit
    /// entry naming the drill and its report's BLAKE3 digest. Each signer
    /// approves a drill once.
    Approve(DrillApproveArgs),
}

#[derive(Debug, Args)]
pub struct DrillApproveArgs {
    /// The drill id (`holdfast drill history`), e.g. 20261201T063000Z-ab12cd34.
    pub id: String,
    /// The ed25519 private key of a registered signer (`holdfast signer
    /// keygen`, `holdfast signer add`); readable by its owner alone.
    #[arg(long, value_name = "FILE")]
    pub sign_key: PathBuf,
    /// What the signature means (default: "approval of drill report ID
    /// (playbook P, outcome O)").
    #[arg(long, value_name = "TEXT")]
    pub meaning: Option<String>,
}

#[derive(Debug, Args)]
pub struct DrillRunArgs {
    /// The playbook (`playbooks/*.toml`).
    pub playbook: PathBuf,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Seed for random picks the playbook gives no seed for (default:
    /// drawn; always recorded in the report).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DrillHistoryArgs {
    /// Only the most recent N drills.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this percentage of the stored bytes is rewritten by
    /// repacking in one run (default 100: no limit; 0: never repack).
    #[arg(long, value_name = "PERCENT")]
    pub max_repack: Option<f64>,
    /// Repack partly used packs until at most this percentage of what
    /// remains is unused (default 2; restic's default is 5).
    #[arg(long, value_name = "PERCENT")]
    pub max_unused: Option<f64>,
    /// Leave packs younger than this alone (e.g. 24h; default 0: the
    /// lease protocol protects running writers).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_age: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove live locks too (their holders then fail before committing).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files; every error names file, line and column (exit 2).
    Validate {
        /// Policy files (`policies/*.toml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// For every snapshot: keep, archive or purge, and the rule that decided.
    Plan(PolicyPlanCmd),
    /// Carry out the plan: a dry run unless --yes, which purges (deletion
    /// record, then manifest; `holdfast gc` then reclaims the space).
    Apply(PolicyApplyArgs),
}

#[derive(Debug, Args)]
pub struct PolicyApplyArgs {
    #[command(flatten)]
    pub plan: PolicyPlanArgs,
    /// Delete what the plan purges (without it: a dry run).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct PolicyPlanCmd {
    #[command(flatten)]
    pub plan: PolicyPlanArgs,
    /// With --json: the decisions for archived WAL files (keep or purge, by
    /// cluster and name) instead of the snapshots'.
    #[arg(long)]
    pub wal: bool,
}

#[derive(Debug, Args)]
pub struct PolicyPlanArgs {
    /// A policy file (repeatable).
    #[arg(long = "policy", value_name = "FILE", required = true)]
    pub policies: Vec<PathBuf>,
    /// Plan as of this time instead of now (RFC 3339): preview a future date.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Path of the WAL file (%p).
    pub path: PathBuf,
    /// Cluster system identifier (default: from the file or ./global/pg_control).
    #[arg(long)]
    pub cluster: Option<u64>,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// WAL file name (%f).
    pub name: String,
    /// Where to write it (%p).
    pub dest: PathBuf,
    /// Cluster system identifier (default: from ./global/pg_control).
    #[arg(long)]
    pub cluster: Option<u64>,
    /// Fetch this many following segments in the background into a spool
    /// directory, so the next fetches are served from it (0: off).
    #[arg(
        long,
        env = "HOLDFAST_WAL_PREFETCH",
        default_value_t = 0,
        value_name = "N"
    )]
    pub prefetch: usize,
    /// Spool directory for --prefetch (default: holdfast-prefetch next to DEST,
    /// i.e. in pg_wal, which base backups leave out).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

/// The background half of `wal-fetch --prefetch` (started by it).
#[derive(Debug, Args)]
pub struct WalPrefetchArgs {
    /// The segment just fetched; the ones after it are prefetched.
    pub after: String,
    #[arg(long)]
    pub cluster: u64,
    #[arg(long)]
    pub count: usize,
    #[arg(long, value_name = "DIR")]
    pub spool: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Memory for the password hash (argon2id), MiB.
    #[arg(long, default_value_t = 64)]
    pub kdf_memory_mib: u32,
    /// Passes of the password hash.
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
    /// zstd level for data (0 disables compression; 3 stores text about
    /// 1% smaller at a third more CPU).
    #[arg(long, default_value_t = holdfast_repo::config::DEFAULT_COMPRESSION_LEVEL)]
    pub compression: i32,
    /// S3 Object Lock mode for every object written (needs a bucket with
    /// Object Lock enabled).
    #[arg(long, value_parser = ["governance", "compliance"], requires = "lock_days")]
    pub lock_mode: Option<String>,
    /// Object Lock retention period in days.
    #[arg(long, requires = "lock_mode", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub lock_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Logical source name (default: host and paths). Incremental backups
    /// compare against the latest snapshot of the same source.
    #[arg(long)]
    pub source: Option<String>,
    /// Re-read every file instead of trusting the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Record this time as the snapshot's (RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS` in UTC) instead of now: for importing history
    /// and testing retention.
    #[arg(long, value_name = "TIMESTAMP")]
    pub time: Option<String>,
    /// Leave out paths matching this glob (repeatable). Without a slash it
    /// matches a name at any depth (`*.tmp`, `node_modules`); a leading slash
    /// anchors it at the root of the absolute path (`/srv/docs/tmp`); `**`
    /// matches any number of directories.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (# comments, blank lines ignored).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Leave out directories that contain an entry named NAME (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Leave out directories tagged with a valid CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Stay on the file systems of the given paths (mount points below them
    /// are kept as empty directories).
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Leave out files larger than SIZE (e.g. 500M, 2G; powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Do not reuse the exclude rules of the source's previous snapshot
    /// (they are reused when no exclude option is given).
    #[arg(long)]
    pub no_inherit_excludes: bool,
    /// Logical PostgreSQL backup (pg_dump) of the server at this DSN.
    #[arg(long, value_name = "DSN", conflicts_with = "postgres_physical")]
    pub postgres: Option<String>,
    /// Database to dump with --postgres (repeatable; default: the DSN's, or all).
    #[arg(long = "database", value_name = "NAME", requires = "postgres")]
    pub databases: Vec<String>,
    /// Physical base backup of the cluster at this DSN (run on its host).
    #[arg(long, value_name = "DSN")]
    pub postgres_physical: Option<String>,
    /// Data directory of the cluster (default: the server's data_directory).
    #[arg(long, value_name = "DIR", requires = "postgres_physical")]
    pub pgdata: Option<PathBuf>,
    /// How a physical backup compresses its 1 MiB frames of pages: `auto`
    /// (zstd, and LZMA2 where zstd already shrinks a frame 5x: about half
    /// the bytes on structured tables, several times the CPU there) or
    /// `zstd` (zstd only: fastest).
    #[arg(long, value_name = "auto|zstd", default_value = "auto", requires = "postgres_physical",
          value_parser = ["auto", "zstd"])]
    pub page_compression: String,
    /// Do not back up extended attributes (user.*, security.*, trusted.*,
    /// and with them POSIX ACLs and file capabilities).
    #[arg(long)]
    pub no_xattrs: bool,
    /// Threads that walk, read and chunk files (default: one per core).
    /// The snapshot is the same whatever the number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub threads: Option<usize>,
    /// Split files of at least SIZE across threads (tuning and tests).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, hide = true)]
    pub split_min: Option<u64>,
    /// Bytes per segment of a split file (tuning and tests).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, hide = true)]
    pub split_segment: Option<u64>,
    /// Memory for the segment buffers of split files (tuning and tests).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, hide = true)]
    pub split_budget: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub select: SnapshotSelect,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Only this path inside the snapshot: absolute, relative to the current
    /// directory (as given to `backup`), or relative to the snapshot root.
    pub path: Option<OsString>,
    /// Show mode, owner, size and time.
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub select: SnapshotSelect,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Directory to restore into.
    #[arg(long, short, required_unless_present_any = ["to_postgres", "to_datadir"])]
    pub target: Option<PathBuf>,
    /// Restore only this path of the snapshot (repeatable): absolute,
    /// relative to the current directory (as given to `backup`), or
    /// relative to the snapshot root.
    #[arg(long = "include")]
    pub includes: Vec<OsString>,
    /// Replace entries in the target that differ from the snapshot (files
    /// that already hold the snapshot's content are kept either way, and an
    /// interrupted restore of the same snapshot resumes without it).
    #[arg(long)]
    pub overwrite: bool,
    /// Do not restore extended attributes (nor so ACLs and capabilities).
    #[arg(long)]
    pub no_xattrs: bool,
    /// Write zero runs of every file as holes (default: only for files
    /// that had holes when backed up).
    #[arg(long, conflicts_with = "no_sparse")]
    pub sparse: bool,
    /// Allocate every byte, even of files that had holes.
    #[arg(long)]
    pub no_sparse: bool,
    #[command(flatten)]
    pub select: SnapshotSelect,
    /// Restore a logical PostgreSQL snapshot into the server at this DSN.
    #[arg(long, value_name = "DSN", conflicts_with_all = ["target", "to_datadir"])]
    pub to_postgres: Option<String>,
    /// Database to create and restore into (with --to-postgres).
    #[arg(long, value_name = "NAME", requires = "to_postgres")]
    pub database: Option<String>,
    /// Which database of the snapshot (when it holds several).
    #[arg(long, value_name = "NAME", requires = "to_postgres")]
    pub from_database: Option<String>,
    /// Parallel pg_restore jobs.
    #[arg(long, default_value_t = 1, requires = "to_postgres")]
    pub jobs: usize,
    /// Drop and recreate the target database if it exists.
    #[arg(long, requires = "to_postgres")]
    pub clean: bool,
    /// Do not restore object ownership (nor the database's owner).
    #[arg(long, requires = "to_postgres")]
    pub no_owner: bool,
    /// Do not restore grants (GRANT/REVOKE, on objects and on the database).
    #[arg(long, requires = "to_postgres")]
    pub no_acl: bool,
    /// First create the snapshot's roles and tablespaces on the target
    /// server (from its globals.sql); roles and tablespaces that exist are
    /// left as they are.
    #[arg(long, requires = "to_postgres")]
    pub with_globals: bool,
    /// Restore a physical PostgreSQL snapshot into this (new or empty) data directory.
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub to_datadir: Option<PathBuf>,
    /// Recover to this time (RFC 3339; UTC if no zone) instead of the end of the backup.
    #[arg(long, value_name = "TIMESTAMP", requires = "to_datadir")]
    pub until: Option<String>,
    /// Recover through all archived WAL.
    #[arg(long, requires = "to_datadir")]
    pub until_latest: bool,
    /// Keep archive_mode in the restored cluster (off by default, so a copy
    /// never archives into the original's archive).
    #[arg(long, requires = "to_datadir")]
    pub keep_archiving: bool,
    /// Put a tablespace in DIR instead of its original location (which must
    /// otherwise be empty or absent); repeatable. OID_OR_NAME=DIR.
    #[arg(long, value_name = "OID_OR_NAME=DIR", requires = "to_datadir")]
    pub tablespace_map: Vec<String>,
    /// Mask the restored data for staging with this masking file
    /// (policies/masking/*.toml): every column of a restored database
    /// must be covered; the result is verified before it gets its name.
    /// With a directory restore, the file's [[files]] rules apply.
    #[arg(long, value_name = "FILE", conflicts_with = "to_datadir")]
    pub mask: Option<PathBuf>,
    /// Do not apply the GDPR erasure register to the restored data. Only
    /// for a legal hold that needs the erased data; audited with --reason.
    #[arg(long, requires = "reason")]
    pub skip_erasures: bool,
    /// Why the erasures are skipped (with --skip-erasures).
    #[arg(long, value_name = "TEXT", requires = "skip_erasures")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every blob of every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Read and verify a share of the packs: `10%` (or `10`) reads a
    /// random tenth; `n/m` reads part n of m, always the same packs, so
    /// `1/7` ... `7/7` on seven days read everything.
    #[arg(long, value_name = "N%|n/m")]
    pub read_data_subset: Option<holdfast_repo::check::DataSubset>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a password (prompted, or from --new-password-file).
    Add(KeyAddArgs),
    /// List key slots.
    List,
    /// Remove a key slot by id (prefix).
    Remove { id: String },
    /// Change the password you opened the repository with.
    Passwd(KeyAddArgs),
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// File with the new password.
    #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Add a key-file slot instead of a password: FILE is created with a
    /// random 256-bit key (mode 0600), or, if it exists, its key is used.
    /// `key add --key-file FILE` with a FILE that does not exist does the same.
    #[arg(long, value_name = "FILE", conflicts_with = "new_password_file")]
    pub new_key_file: Option<PathBuf>,
    /// A label for the slot (who or what uses it).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Memory for the password hash, MiB.
    #[arg(long, default_value_t = 64)]
    pub kdf_memory_mib: u32,
    /// Passes of the password hash.
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this snapshot (default: the whole repository).
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub select: SnapshotSelect,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (id, prefix or `latest`).
    pub a: String,
    /// The newer snapshot (id, prefix or `latest`).
    pub b: String,
    #[command(flatten)]
    pub select: SnapshotSelect,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own trailers; put misplaced
    /// objects found under index/ back, move unknown ones to lost+found/.
    Index,
    /// Put misplaced objects found under snapshots/ back where they belong
    /// and move anything unreadable there to lost+found/ (nothing is deleted).
    Snapshots,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold on snapshots, or on a source (and optionally a time
    /// range: later snapshots inside it are held too).
    Place(HoldPlaceArgs),
    /// Release a hold (a release record; the hold record stays).
    Release(HoldReleaseArgs),
    /// The active holds (--all: released ones too).
    List {
        /// Include released holds.
        #[arg(long)]
        all: bool,
    },
    /// One hold: what it covers, who placed and released it.
    Show {
        /// The hold id (H-7f3a2c).
        id: String,
    },
    /// S3 Object Lock: put legal holds on everything the active holds
    /// need and remove them from what only released holds needed (after
    /// an interrupted place or release, or a copy to a new bucket).
    Sync,
}

#[derive(Debug, Args)]
pub struct HoldPlaceArgs {
    /// A snapshot to hold: id or unique id prefix (repeatable).
    #[arg(
        long = "snapshot",
        value_name = "ID",
        num_args = 1..,
        required_unless_present = "source",
        conflicts_with = "source"
    )]
    pub snapshots: Vec<String>,
    /// Hold every snapshot of this source (within --from/--to).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Only snapshots taken at or after this time (RFC 3339, or a date:
    /// its start, UTC).
    #[arg(long, value_name = "TIME", requires = "source", conflicts_with = "snapshots", value_parser = parse_time_or_date)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only snapshots taken at or before this time (RFC 3339, or a date:
    /// all of that day, UTC).
    #[arg(long, value_name = "TIME", requires = "source", conflicts_with = "snapshots", value_parser = parse_time_or_date_end)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// The case or matter reference (e.g. CASE-123).
    #[arg(long, value_name = "REF")]
    pub case: String,
    /// Why the data is held.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct HoldReleaseArgs {
    /// The hold id (H-7f3a2c).
    pub id: String,
    /// Why it is released.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Sign the release with this ed25519 private key of a registered
    /// signer (21 CFR 11.50): the audit entry shows the signer's printed
    /// name, the time and "release of hold H for case C".
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Policy files whose `[holds] require_signed_release` applies
    /// (repeatable).
    #[arg(long = "policy", value_name = "FILE")]
    pub policies: Vec<PathBuf>,
}

/// A lower bound: a time, or a date alone (its first instant, UTC).
fn parse_time_or_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    holdfast_ops::time::parse_time_or_date(s).map_err(|e| e.to_string())
}

/// An inclusive upper bound: a time, or a date alone (its last instant).
fn parse_time_or_date_end(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    holdfast_ops::time::parse_time_or_date_end(s).map_err(|e| e.to_string())
}
