//! Command-line arguments (clap derive). Parsing only: no behaviour here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Encrypted, deduplicated backups with drills, retention and legal holds",
    after_help = "Exit codes: 0 ok; 1 error; 2 usage; 3 backup finished but some files could not be read; \
4 integrity problem (check found damage, or a restore left files out); 10 not a repository; \
12 wrong password; 13 repository format newer than this holdfast."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Repository: a directory path (or s3://bucket/prefix).
    #[arg(short = 'r', long = "repo", env = "HOLDFAST_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the repository password (else HOLDFAST_PASSWORD, else a prompt).
    #[arg(long, env = "HOLDFAST_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no informational messages.
    #[arg(short, long, global = true)]
    pub quiet: bool,
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
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Memory for the password hash (argon2id), MiB.
    #[arg(long, default_value_t = 64)]
    pub kdf_memory_mib: u32,
    /// Passes of the password hash.
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
    /// zstd level for data (0 disables compression).
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
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
    /// Only this path inside the snapshot.
    pub path: Option<String>,
    /// Show mode, size and time.
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
    #[arg(long, short)]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable).
    #[arg(long = "include")]
    pub includes: Vec<String>,
    /// Replace files that already exist in the target.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub select: SnapshotSelect,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every blob of every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Read and verify a random share of packs, in percent (e.g. 10).
    #[arg(long, value_name = "PCT")]
    pub read_data_subset: Option<f64>,
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
    #[arg(long, env = "HOLDFAST_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
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
    pub a: String,
    pub b: String,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own trailers.
    Index,
}
