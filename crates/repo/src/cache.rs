//! The local cache: a directory per repository holding copies of its
//! metadata objects and the sorted index runs built from them, so that
//! opening a repository and backing up incrementally need no metadata
//! requests to the storage.
//!
//! Layout under the root the caller gives (the CLI uses
//! `$XDG_CACHE_HOME/holdfast`, else `~/.cache/holdfast`; this library reads
//! no environment):
//!
//! ```text
//! CACHEDIR.TAG                     marks the tree as a cache for backup tools
//! <repository id hex>/version      "1"
//! <repository id hex>/index/<name>      index objects, as stored (sealed)
//! <repository id hex>/snapshots/<name>  snapshot objects, as stored (sealed)
//! <repository id hex>/data/<name>       whole packs of trees, as stored (sealed)
//! <repository id hex>/runs/<mac>.run    sorted index runs (see `index::run`)
//! kdf-hints/<BLAKE3 of the location>    salt and argon2 parameters of the
//!                                       password slot that opened last
//!                                       (see `keys::KdfHint`)
//! ```
//!
//! Objects are kept exactly as stored, so encrypted content stays
//! encrypted, and every read is checked: the BLAKE3 of the bytes must be
//! the object's name (names are content hashes), then the object is opened
//! and authenticated as if it had just been fetched. An entry that fails is
//! removed and fetched again, never trusted. The runs are the one derived
//! form: plaintext fixed-width records (keyed blob ids, pack names, offsets
//! and lengths; no file names, no content), because a memory-mapped binary
//! search needs them in the clear; each carries MACs under a key derived
//! from the master key, checked before any record is used (see
//! `index::run`). Directories are created mode 0700, files 0600.
//!
//! Everything here can be deleted at any time, even while holdfast runs:
//! files are written to a temporary name and renamed into place, never
//! modified, and a removed file that is still mapped stays readable. Writes
//! are best effort: a full disk or a read-only cache only costs requests.

use std::fs;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::keys::KdfHint;

/// The cache layout version (the `version` file).
const CACHE_VERSION: &str = "1";

const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by holdfast.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// What a cached object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    Index,
    Snapshot,
    /// A whole pack of tree blobs.
    TreePack,
}

impl CacheKind {
    fn dir(self) -> &'static str {
        match self {
            CacheKind::Index => "index",
            CacheKind::Snapshot => "snapshots",
            CacheKind::TreePack => "data",
        }
    }
}

/// The cache of one repository.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Open (creating it if needed) the cache of repository `repo_id` under
    /// `root`. A cache written by a newer holdfast (a higher `version`) is
    /// left alone and refused.
    pub fn open(root: &Path, repo_id: &Id) -> Result<Cache> {
        let io = |what: &str, p: &Path, e| RepoError::io(format!("{what} {}", p.display()), e);
        mkdir(root).map_err(|e| io("creating cache directory", root, e))?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Best effort: the tag is a courtesy to backup tools.
            let _ = write_new(&tag, TAG.as_bytes());
        }
        let dir = root.join(repo_id.to_hex());
        mkdir(&dir).map_err(|e| io("creating cache directory", &dir, e))?;
        let version = dir.join("version");
        match fs::read_to_string(&version) {
            Ok(v) if v.trim() == CACHE_VERSION => {}
            Ok(v) if v.trim().parse::<u32>().is_ok_and(|n| n > 1) => {
                return Err(RepoError::Invalid(format!(
                    "the cache {} was written by a newer holdfast (cache version {}); use --no-cache or another cache directory",
                    dir.display(),
                    v.trim()
                )))
            }
            // Missing or unreadable: (re)start it. Entries are verified on
            // every read, so whatever is left over is harmless.
            _ => {
                let _ = fs::remove_file(&version);
                write_new(&version, CACHE_VERSION.as_bytes())
                    .map_err(|e| io("writing", &version, e))?
            }
        }
        for k in [CacheKind::Index, CacheKind::Snapshot, CacheKind::TreePack] {
            let d = dir.join(k.dir());
            mkdir(&d).map_err(|e| io("creating cache directory", &d, e))?;
        }
        let runs = dir.join("runs");
        mkdir(&runs).map_err(|e| io("creating cache directory", &runs, e))?;
        let cache = Cache { dir };
        cache.sweep_temporaries();
        // Tools that expire caches by age (as restic's users do) look at the
        // directory's modification time: mark it used.
        let _ =
            fs::File::open(&cache.dir).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(cache)
    }

    /// The repository's cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    fn path(&self, kind: CacheKind, name: &str) -> Option<PathBuf> {
        // Only names that are ids: never a path from storage into the cache.
        name.parse::<Id>().ok()?;
        Some(self.dir.join(kind.dir()).join(name))
    }

    /// The stored bytes of an object, if cached and intact. An entry whose
    /// bytes do not hash to its name is removed (and the caller fetches the
    /// object again).
    pub fn get(&self, kind: CacheKind, name: &str) -> Option<Vec<u8>> {
        let path = self.path(kind, name)?;
        let bytes = fs::read(&path).ok()?;
        if Id::of_stored(&bytes).to_hex() != name {
            let _ = fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// A byte range of a cached object, unverified: for callers that
    /// authenticate what they read (a sealed blob inside a cached pack).
    /// `None` if the object is not cached or is shorter than the range.
    pub fn get_range(&self, kind: CacheKind, name: &str, range: Range<u64>) -> Option<Vec<u8>> {
        let path = self.path(kind, name)?;
        let f = fs::File::open(path).ok()?;
        let len = usize::try_from(range.end.checked_sub(range.start)?).ok()?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, range.start).ok()?;
        Some(buf)
    }

    /// True if an object is cached (not verified: for decisions that cost
    /// nothing when wrong).
    pub fn has(&self, kind: CacheKind, name: &str) -> bool {
        self.path(kind, name).is_some_and(|p| p.exists())
    }

    /// Keep a copy of an object as stored. Best effort: a failed write
    /// only means the next read goes to storage.
    pub fn put(&self, kind: CacheKind, name: &str, bytes: &[u8]) {
        let Some(path) = self.path(kind, name) else {
            return;
        };
        if Id::of_stored(bytes).to_hex() != name || path.exists() {
            return;
        }
        let tmp = crate::index::build::temp_path(&self.dir.join(kind.dir()), "obj");
        if write_new(&tmp, bytes).is_err() || fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Drop a cached object (a corrupt one, or one no longer in storage).
    pub fn remove(&self, kind: CacheKind, name: &str) {
        if let Some(p) = self.path(kind, name) {
            let _ = fs::remove_file(p);
        }
    }

    /// Names of the cached objects of a kind.
    pub fn names(&self, kind: CacheKind) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.dir.join(kind.dir())) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<Id>().is_ok())
            .collect()
    }

    /// Remove the cached objects of a kind that are not in `keep`.
    pub fn retain(&self, kind: CacheKind, keep: &dyn Fn(&str) -> bool) {
        for n in self.names(kind) {
            if !keep(&n) {
                self.remove(kind, &n);
            }
        }
    }

    /// Remove temporary files left by a process that died while writing.
    /// Only old ones: a younger one may be another process's write.
    fn sweep_temporaries(&self) {
        let old = std::time::Duration::from_secs(3600);
        for sub in ["index", "snapshots", "data", "runs"] {
            let Ok(rd) = fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let is_tmp = e.file_name().to_string_lossy().starts_with("tmp-");
                let aged = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > old);
                if is_tmp && aged {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The directory of KDF hints: keyed by location, since a hint is read
/// before the repository (and so its id) is known.
const HINTS: &str = "kdf-hints";

fn hint_path(root: &Path, location: &str) -> PathBuf {
    root.join(HINTS)
        .join(blake3::hash(location.as_bytes()).to_hex().as_str())
}

/// The KDF hint kept for the repository at `location`, if any and
/// readable. Nothing in it is trusted: [`crate::keys::prederive`] bounds
/// its parameters and the slot read from storage decides whether the key
/// derived from it is used.
pub fn read_kdf_hint(root: &Path, location: &str) -> Option<KdfHint> {
    let bytes = fs::read(hint_path(root, location)).ok()?;
    if bytes.len() > 4096 {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Keep `hint` for the next open of the repository at `location`, unless
/// it is already there. Best effort, like every cache write.
pub fn write_kdf_hint(root: &Path, location: &str, hint: &KdfHint) {
    if read_kdf_hint(root, location).as_ref() == Some(hint) {
        return;
    }
    let dir = root.join(HINTS);
    let Ok(json) = serde_json::to_vec(hint) else {
        return;
    };
    if mkdir(&dir).is_err() {
        return;
    }
    let tmp = crate::index::build::temp_path(&dir, "hint");
    if write_new(&tmp, &json).is_err() || fs::rename(&tmp, hint_path(root, location)).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

fn mkdir(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

/// Write a new file (mode 0600). Not synced: an entry torn by a crash
/// fails its hash check and is fetched again, and an fsync per cached
/// object made a cold load of many small index objects 15 times slower.
fn write_new(p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(bytes)
}
