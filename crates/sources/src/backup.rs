//! Backing up filesystem trees.
//!
//! The calling thread walks the paths depth-first, reads and chunks files
//! and hands the chunks to the repository's [`BlobWriter`], whose worker
//! threads hash, compress, encrypt and pack them concurrently; packs upload
//! in the background. Reading, chunking, hashing, compression, encryption and
//! writing therefore overlap, and every queue between them is bounded.
//!
//! The snapshot mirrors absolute paths (`/srv/docs` is stored under
//! `srv/docs`), like restic, so backups of several paths never collide.
//!
//! Incremental: for each directory we load the parent snapshot's tree for
//! the same path; a file whose size, mtime, ctime and inode are unchanged,
//! and whose blobs are all still indexed, keeps its blob list without being
//! opened. Unreadable files are reported as warnings, left out of the
//! snapshot, and the backup goes on (the CLI exits 3).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use holdfast_repo::chunker::{ChunkerParams, Gear, StreamChunker};
use holdfast_repo::index::Index;
use holdfast_repo::pack::BlobType;
use holdfast_repo::snapshot::{Snapshot, SnapshotEntry, Summary};
use holdfast_repo::tree::{Node, NodeKind, NodeName, Tree};
use holdfast_repo::writer::{BlobWriter, PendingBlob};
use holdfast_repo::{Id, RepoError, Repository};

use crate::error::{SourceError, SourceResult};
use crate::meta::{self, NameCache};
use crate::Progress;

/// What to back up and how to label it.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: String,
    pub tags: Vec<String>,
    /// The snapshot to compare against (latest of the same source, usually).
    pub parent: Option<SnapshotEntry>,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Files or directories that could not be read (left out).
    pub warnings: Vec<String>,
}

/// Make `p` absolute and lexically normal (no `.` or `..`), without
/// resolving symlinks: the user's path is what gets recorded.
pub fn normalize(p: &Path) -> SourceResult<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| SourceError::Read {
        path: p.to_path_buf(),
        source: e,
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Trie {
    target: bool,
    children: BTreeMap<Vec<u8>, Trie>,
}

/// Back up `paths` into a new snapshot.
pub fn backup(
    repo: &Repository,
    paths: &[PathBuf],
    opts: &BackupOptions,
    progress: &Progress,
) -> SourceResult<BackupOutcome> {
    let started = Instant::now();
    if paths.is_empty() {
        return Err(RepoError::Invalid("nothing to back up: give at least one path".into()).into());
    }
    let mut trie = Trie::default();
    let mut recorded = Vec::new();
    for p in paths {
        if fs::symlink_metadata(p).is_err() {
            return Err(SourceError::MissingSource { path: p.clone() });
        }
        let abs = normalize(p)?;
        recorded.push(abs.to_string_lossy().into_owned());
        let mut t = &mut trie;
        for c in abs.components() {
            if let Component::Normal(n) = c {
                t = t.children.entry(n.as_bytes().to_vec()).or_default();
            }
        }
        t.target = true;
    }
    if trie.target {
        // Backing up "/" itself.
        trie.children.clear();
    }

    let parent_root = match &opts.parent {
        Some(p) => Some(repo.load_tree(&p.snapshot.tree)?),
        None => None,
    };
    let mut a = Archiver {
        repo,
        writer: BlobWriter::new(repo),
        index: repo.index(),
        names: NameCache::default(),
        gear: repo.gear(),
        params: repo.config().chunker,
        buf: Vec::new(),
        warnings: Vec::new(),
        summary: Summary::default(),
        progress,
    };
    let root_tree = if trie.target {
        let m = fs::symlink_metadata("/").map_err(|e| SourceError::Read {
            path: "/".into(),
            source: e,
        })?;
        let node = a.dir(Path::new("/"), b"", &m, parent_root)?;
        match node.subtree {
            Some(id) => id,
            None => a.save_tree(Tree::default())?,
        }
    } else {
        a.virtual_dir(Path::new("/"), &trie, parent_root.as_ref())?
    };
    let Archiver {
        writer,
        warnings,
        mut summary,
        ..
    } = a;
    let stats = writer.finish(repo)?;
    summary.blobs_added = stats.blobs_added;
    summary.data_added = stats.data_added;
    summary.stored_added = stats.stored_added;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        time: Utc::now(),
        hostname: holdfast_repo::hostname(),
        username: holdfast_repo::username(),
        source: opts.source.clone(),
        kind: "files".into(),
        tags: opts.tags.clone(),
        paths: recorded,
        tree: root_tree,
        parent: opts.parent.as_ref().map(|p| p.id),
        summary,
        program_version: env!("CARGO_PKG_VERSION").into(),
        meta: BTreeMap::new(),
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
    })
}

/// A node whose file content ids are still being computed.
struct PendingNode {
    node: Node,
    blobs: Vec<PendingBlob>,
}

struct Archiver<'a> {
    repo: &'a Repository,
    writer: BlobWriter,
    index: Arc<Index>,
    names: NameCache,
    gear: Gear,
    params: ChunkerParams,
    buf: Vec<u8>,
    warnings: Vec<String>,
    summary: Summary,
    progress: &'a Progress,
}

impl Archiver<'_> {
    fn save_tree(&mut self, mut tree: Tree) -> SourceResult<Id> {
        tree.sort();
        let json = serde_json::to_vec(&tree)
            .map_err(|e| RepoError::Invalid(format!("serialising a tree: {e}")))?;
        Ok(self.writer.save(BlobType::Tree, &json)?)
    }

    fn parent_subtree(&mut self, node: Option<&Node>) -> Option<Tree> {
        let id = node?.subtree?;
        // A damaged parent tree only costs re-reading; it must not fail the backup.
        self.repo.load_tree(&id).ok()
    }

    /// An ancestor directory of the backed-up paths: only the children on
    /// the way to targets are included.
    fn virtual_dir(&mut self, path: &Path, trie: &Trie, parent: Option<&Tree>) -> SourceResult<Id> {
        let mut nodes = Vec::new();
        for (name, child) in &trie.children {
            let p = path.join(OsString::from_vec(name.clone()));
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => return Err(SourceError::Read { path: p, source: e }),
            };
            let pnode = parent.and_then(|t| t.find(name));
            if child.target {
                if let Some(pn) = self.entry(&p, name, &m, pnode)? {
                    nodes.push(self.resolve(pn)?);
                }
            } else {
                let ptree = self.parent_subtree(pnode);
                let sub = self.virtual_dir(&p, child, ptree.as_ref())?;
                let mut node = meta::node_from_metadata(name, &m, &self.names);
                node.subtree = Some(sub);
                nodes.push(node);
            }
        }
        self.save_tree(Tree { nodes })
    }

    fn resolve(&mut self, p: PendingNode) -> SourceResult<Node> {
        let PendingNode { mut node, blobs } = p;
        if !blobs.is_empty() {
            node.content = blobs
                .into_iter()
                .map(PendingBlob::wait)
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(node)
    }

    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        m: &fs::Metadata,
        parent: Option<&Node>,
    ) -> SourceResult<Option<PendingNode>> {
        let node = meta::node_from_metadata(name, m, &self.names);
        match node.kind {
            NodeKind::Dir => Ok(Some(PendingNode {
                node: {
                    let ptree = self.parent_subtree(parent);
                    self.dir(path, name, m, ptree)?
                },
                blobs: Vec::new(),
            })),
            NodeKind::File => self.file(path, node, parent),
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => {
                    let mut node = node;
                    node.target = Some(NodeName(t.into_os_string().into_vec()));
                    Ok(Some(PendingNode {
                        node,
                        blobs: Vec::new(),
                    }))
                }
                Err(e) => {
                    self.warn(path, &e);
                    Ok(None)
                }
            },
            _ => Ok(Some(PendingNode {
                node,
                blobs: Vec::new(),
            })),
        }
    }

    fn warn(&mut self, path: &Path, e: &std::io::Error) {
        self.summary.files_failed += 1;
        self.progress
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.warnings.push(format!(
            "{}: {e} (left out of the snapshot)",
            path.display()
        ));
    }

    fn dir(
        &mut self,
        path: &Path,
        name: &[u8],
        m: &fs::Metadata,
        ptree: Option<Tree>,
    ) -> SourceResult<Node> {
        self.summary.dirs += 1;
        let mut node = meta::node_from_metadata(name, m, &self.names);
        let mut names: Vec<OsString> = Vec::new();
        match fs::read_dir(path) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => {
                            self.warn(path, &e);
                            break;
                        }
                    }
                }
            }
            Err(e) => self.warn(path, &e),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut pending = Vec::with_capacity(names.len());
        for n in names {
            let child = path.join(&n);
            let m = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&child, &e);
                    continue;
                }
            };
            let pnode = ptree.as_ref().and_then(|t| t.find(n.as_bytes()));
            if let Some(p) = self.entry(&child, n.as_bytes(), &m, pnode)? {
                pending.push(p);
            }
        }
        let mut nodes = Vec::with_capacity(pending.len());
        for p in pending {
            nodes.push(self.resolve(p)?);
        }
        node.subtree = Some(self.save_tree(Tree { nodes })?);
        Ok(node)
    }

    fn file(
        &mut self,
        path: &Path,
        mut node: Node,
        parent: Option<&Node>,
    ) -> SourceResult<Option<PendingNode>> {
        self.summary.total_bytes += node.size;
        if let Some(old) = parent {
            if meta::unchanged(old, &node) && old.content.iter().all(|b| self.index.contains(b)) {
                node.content = old.content.clone();
                self.summary.files_unchanged += 1;
                self.progress.add_file();
                self.progress.add_bytes(node.size);
                return Ok(Some(PendingNode {
                    node,
                    blobs: Vec::new(),
                }));
            }
        }
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.summary.total_bytes -= node.size;
                self.warn(path, &e);
                return Ok(None);
            }
        };
        match self.read_file(f, node.size) {
            Ok((blobs, read)) => {
                // The file may have grown or shrunk since lstat: record what we read.
                self.summary.total_bytes = self.summary.total_bytes - node.size + read;
                node.size = read;
                self.summary.bytes_read += read;
                if parent.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                self.progress.add_file();
                Ok(Some(PendingNode { node, blobs }))
            }
            Err(ReadFail::Io(e)) => {
                self.summary.total_bytes -= node.size;
                self.warn(path, &e);
                Ok(None)
            }
            Err(ReadFail::Repo(e)) => Err(e.into()),
        }
    }

    fn read_file(&mut self, mut f: File, size: u64) -> Result<(Vec<PendingBlob>, u64), ReadFail> {
        if size <= u64::from(self.params.min) {
            // Small file: one chunk, no chunker buffer.
            let mut data = Vec::with_capacity(size as usize + 1);
            f.read_to_end(&mut data).map_err(ReadFail::Io)?;
            if data.len() as u64 <= u64::from(self.params.min) {
                let n = data.len() as u64;
                self.progress.add_bytes(n);
                if n == 0 {
                    return Ok((Vec::new(), 0));
                }
                let p = self
                    .writer
                    .submit(BlobType::Data, data)
                    .map_err(ReadFail::Repo)?;
                return Ok((vec![p], n));
            }
            // It grew past the chunking threshold while we looked: chunk it.
            return self.chunk(std::io::Cursor::new(data).chain(f));
        }
        self.chunk(f)
    }

    fn chunk<R: Read>(&mut self, r: R) -> Result<(Vec<PendingBlob>, u64), ReadFail> {
        let buf = std::mem::take(&mut self.buf);
        let mut c = StreamChunker::with_buffer(r, self.gear.clone(), self.params, buf);
        let mut blobs = Vec::new();
        let mut total = 0u64;
        let res = loop {
            match c.next_chunk() {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    self.progress.add_bytes(chunk.len() as u64);
                    match self.writer.submit(BlobType::Data, chunk) {
                        Ok(p) => blobs.push(p),
                        Err(e) => break Err(ReadFail::Repo(e)),
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(ReadFail::Io(e)),
            }
        };
        self.buf = c.into_parts().1;
        res.map(|()| (blobs, total))
    }
}

enum ReadFail {
    Io(std::io::Error),
    Repo(RepoError),
}
