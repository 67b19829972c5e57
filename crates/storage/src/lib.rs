//! Storage backends for Holdfast repositories.
//!
//! A repository is a flat set of write-once objects, each addressed by an
//! [`ObjectKind`] and a name (a lowercase hex id, or `config`). This crate
//! defines the [`Backend`] trait that every store implements, the error type
//! every backend reports, the local-directory backend ([`local::LocalBackend`]),
//! and the conformance suite ([`conformance`]) that every backend must pass.
//!
//! The trait is deliberately small (put, get, head, list, delete) so that a new
//! store is cheap to add and easy to reason about. Optional features of object
//! stores (Object Lock retention, legal holds, storage classes, restores from
//! archival tiers) are further methods with default bodies that answer
//! [`StorageError::Unsupported`]; [`Backend::capabilities`] tells callers which
//! ones are real before they rely on them.
//!
//! Architecture invariant: this crate knows nothing of encryption, packs,
//! snapshots or any repository semantics. It moves opaque bytes.

pub mod conformance;
mod error;
pub mod fault;
mod kind;
pub mod local;

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use error::{clone_io, ErrorClass, StorageError, StorageResult};
pub use kind::ObjectKind;

/// Metadata about one stored object, as returned by [`Backend::list`] and
/// [`Backend::head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub kind: ObjectKind,
    pub name: String,
    pub size: u64,
    /// When the store last wrote the object, by the store's clock (a local
    /// file's mtime, S3's `LastModified`), or `None` if the store cannot
    /// say. Objects are write-once, so this is their creation time. Lease
    /// staleness and GC age checks use it as a clock the writer does not
    /// control (see `docs/format.md`, "Locks" and "Garbage collection").
    pub modified: Option<DateTime<Utc>>,
}

/// Object Lock retention mode, as in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Privileged users may shorten or remove the retention.
    Governance,
    /// Nobody can delete the object version before retain-until.
    Compliance,
}

impl LockMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// A retention to apply to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: DateTime<Utc>,
}

/// Per-write options. Backends without the matching capability ignore the
/// storage class and reject retention or legal hold with `Unsupported`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Storage class to write into (e.g. `STANDARD_IA`, `DEEP_ARCHIVE`).
    pub storage_class: Option<String>,
    /// Object Lock retention to set at creation.
    pub retention: Option<Retention>,
    /// Place a legal hold at creation.
    pub legal_hold: bool,
    /// The object holds metadata (e.g. a pack of trees) even if its kind
    /// is `Pack`: backends with storage classes keep it in the metadata
    /// class so that listing and planning never need a retrieval.
    pub metadata: bool,
}

/// What a backend can do beyond the required operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Object Lock retention can be set and extended.
    pub retention: bool,
    /// Legal holds can be placed and released.
    pub legal_hold: bool,
    /// Storage classes are meaningful (and archival classes exist).
    pub storage_classes: bool,
    /// Objects in archival classes must be restored before they can be read.
    pub archive_restore: bool,
    /// How many requests the backend serves well at once; callers use this to
    /// size their upload and download parallelism.
    pub parallelism: usize,
}

/// State of an object in an archival storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveState {
    /// Readable now (not archived, or already restored).
    Readable,
    /// A restore is in progress.
    Restoring,
    /// Archived and no restore requested yet.
    Archived,
}

/// What [`Backend::set_storage_class`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassChange {
    /// The object was already in the class: nothing was written.
    Unchanged,
    /// The object is now in the class and nothing of it is left in the
    /// old one.
    Moved,
    /// The object is now in the class, but its previous version (the same
    /// bytes, in the old class) is still stored: a versioned bucket's
    /// Object Lock keeps it until its retention ends. It is never read
    /// again; it is only billed.
    MovedPreviousKept,
}

/// An object as listed, with the storage class the store reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassedObject {
    pub meta: ObjectMeta,
    /// The class as the store names it (`STANDARD`, `DEEP_ARCHIVE`, ...);
    /// `None` when the store has no classes or did not say.
    pub storage_class: Option<String>,
}

/// An object store holding one repository.
///
/// # Contract
///
/// Every implementation must satisfy the following, and the shared suite in
/// [`conformance`] checks each point:
///
/// 1. **Write-once.** `put` of a name that already exists fails with
///    [`StorageError::AlreadyExists`] and leaves the stored object unchanged.
///    The exception is a backend that cannot detect this atomically; it must
///    then say so in its docs. No operation ever modifies an object in place.
/// 2. **Atomic visibility.** After `put` returns `Ok`, `get`, `head` and `list`
///    see the complete object, durably stored. Before that, they see nothing:
///    never a partial object, even if the process is killed mid-write.
/// 3. **Ranged reads.** `get` with a range returns exactly those bytes; a
///    range past the end is an error ([`StorageError::InvalidRange`]), never a
///    short read passed off as success.
/// 4. **Listing** returns every object of a kind exactly once, with its size,
///    in no particular order, however many objects there are.
/// 5. **Errors name the object.** `NotFound`, `AlreadyExists` and I/O errors
///    carry the key they concern, so messages can tell the user what is wrong.
/// 6. **Delete** of a missing object is `NotFound`; of a locked object it is
///    [`StorageError::Locked`] and the object stays.
/// 7. Safe to share between threads and tasks; concurrent puts of distinct
///    names all succeed, concurrent puts of one name succeed at most once.
/// 8. **Modification time.** `head` and `list` report `modified`, the time
///    the store wrote the object by the store's own clock, to a second or
///    better. A backend that cannot must report `None` and say so in its
///    docs (callers then fall back to the times written inside objects).
///
/// # Conditional put: what locks and GC rely on
///
/// Points 1 and 7 together are a *conditional put* ("create if absent"):
/// of several writers racing for one name, exactly one succeeds and the
/// others learn it with `AlreadyExists`. Nothing in Holdfast ever
/// overwrites an object, so there is no compare-and-swap: a lease refresh
/// is a put of a new name followed by a delete of the old one, and a
/// repository lock is "write my lease, then list the others", which needs
/// only that a `list` begun after a `put` returned sees that object
/// (point 2). Garbage collection relies on the same two facts plus
/// `modified` (an object's age by a clock no writer controls): see
/// `docs/format.md`.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// A human-readable location, e.g. `/srv/backups/repo` or `s3://bucket/prefix`.
    fn location(&self) -> String;

    /// Optional features this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Store a new object. See the contract: write-once, atomic.
    async fn put(
        &self,
        kind: ObjectKind,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<()>;

    /// Start writing an object of `kind` in pieces, for objects too large
    /// to hold in memory at once (a pack being repacked). The name is given
    /// at the end, since a content-addressed name is known only then, and
    /// the finished object obeys `put`'s contract (write-once, atomic,
    /// durable on `Ok`). Nothing is visible before [`Upload::finish`];
    /// dropping an unfinished upload abandons it.
    ///
    /// The default gathers the pieces in memory and calls `put` (so a
    /// decorator that only overrides `put` still sees every write); a
    /// backend that can spool elsewhere overrides it (the local one writes
    /// a temporary file beside its objects).
    fn upload<'a>(
        &'a self,
        kind: ObjectKind,
        opts: &PutOptions,
    ) -> StorageResult<Box<dyn Upload + 'a>> {
        Ok(Box::new(BufferedUpload {
            backend: self,
            kind,
            opts: opts.clone(),
            buf: Vec::new(),
        }))
    }

    /// Read an object, or a byte range of it.
    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes>;

    /// Size and existence of one object.
    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta>;

    /// Every object of a kind.
    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>>;

    /// Remove an object. Only garbage collection and lock cleanup call this.
    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()>;

    /// Remove an object that may already be gone: like [`Backend::delete`]
    /// but a missing object is success, so a backend need not find out
    /// whether it was there (on S3, `delete` pays a `HeadObject` for its
    /// `NotFound`; this is one request). For callers that do not care,
    /// such as a lease holder releasing its lease.
    async fn remove(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        match self.delete(kind, name).await {
            Err(StorageError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Extend (never shorten) an object's Object Lock retention.
    async fn extend_retention(
        &self,
        kind: ObjectKind,
        name: &str,
        _retention: Retention,
    ) -> StorageResult<()> {
        Err(StorageError::Unsupported {
            operation: "object lock retention",
            backend: self.location(),
            key: kind.key(name),
        })
    }

    /// The Object Lock retention an object has now (`None`: none).
    async fn retention(&self, kind: ObjectKind, name: &str) -> StorageResult<Option<Retention>> {
        Err(StorageError::Unsupported {
            operation: "object lock retention",
            backend: self.location(),
            key: kind.key(name),
        })
    }

    /// Place (`true`) or release (`false`) an S3 legal hold on an object.
    async fn set_legal_hold(&self, kind: ObjectKind, name: &str, _on: bool) -> StorageResult<()> {
        Err(StorageError::Unsupported {
            operation: "legal hold",
            backend: self.location(),
            key: kind.key(name),
        })
    }

    /// Whether an object carries a legal hold now.
    async fn legal_hold(&self, kind: ObjectKind, name: &str) -> StorageResult<bool> {
        Err(StorageError::Unsupported {
            operation: "legal hold",
            backend: self.location(),
            key: kind.key(name),
        })
    }

    /// Whether an object is readable or waits in an archival tier.
    async fn archive_state(&self, _kind: ObjectKind, _name: &str) -> StorageResult<ArchiveState> {
        Ok(ArchiveState::Readable)
    }

    /// Move an object's data into the storage class `class` (as the store
    /// names it, e.g. `DEEP_ARCHIVE`) without changing it. Archival of old
    /// snapshots uses this; nothing else changes an object after `put`.
    ///
    /// # Contract
    ///
    /// 1. **Content unchanged.** Same name, same bytes, same size: a `get`
    ///    after a retrieval returns exactly what `put` stored.
    /// 2. **Atomic.** At every moment the object is stored whole under its
    ///    name, in the old class or the new one; a crash anywhere leaves one
    ///    of the two, never a missing or partial object. Calling again
    ///    finishes the move.
    /// 3. **Idempotent.** An object already in `class` is left untouched
    ///    ([`ClassChange::Unchanged`]).
    /// 4. **Readable by name.** In an archival class the object answers
    ///    [`Backend::archive_state`] `Archived` and is read after
    ///    [`Backend::restore_archived`]; in any other class it reads at once.
    /// 5. **Locks carried.** On a store with Object Lock, the object in
    ///    its new class keeps at least the retention (mode and
    ///    retain-until) and the legal hold it had: a move never shortens
    ///    a lock. A previous version that its lock keeps is left
    ///    ([`ClassChange::MovedPreviousKept`]).
    /// 6. Moving an object that is in an archival class and not retrieved
    ///    into another class may need it retrieved first; a store that
    ///    requires this answers [`StorageError::Archived`] and leaves it.
    /// 7. A missing object is [`StorageError::NotFound`]; a store without
    ///    storage classes answers [`StorageError::Unsupported`] (the
    ///    default) and [`Capabilities::storage_classes`] is false.
    async fn set_storage_class(
        &self,
        kind: ObjectKind,
        name: &str,
        _class: &str,
    ) -> StorageResult<ClassChange> {
        Err(StorageError::Unsupported {
            operation: "storage class change",
            backend: self.location(),
            key: kind.key(name),
        })
    }

    /// Every object of a kind with its storage class, in one listing (on
    /// S3 the class comes with `ListObjectsV2`, so archival knows which
    /// packs are already moved without a request per pack). The default
    /// is [`Backend::list`] with no class.
    async fn list_classes(&self, kind: ObjectKind) -> StorageResult<Vec<ClassedObject>> {
        Ok(self
            .list(kind)
            .await?
            .into_iter()
            .map(|meta| ClassedObject {
                meta,
                storage_class: None,
            })
            .collect())
    }

    /// Ask for an archived object to be made readable for `days` days.
    async fn restore_archived(
        &self,
        kind: ObjectKind,
        name: &str,
        _days: u32,
    ) -> StorageResult<()> {
        Err(StorageError::Unsupported {
            operation: "restore from archive",
            backend: self.location(),
            key: kind.key(name),
        })
    }
}

/// An object being written in pieces: see [`Backend::upload`].
#[async_trait]
pub trait Upload: Send {
    /// Append bytes to the object.
    async fn write(&mut self, data: &[u8]) -> StorageResult<()>;

    /// Publish the object as `name` under `put`'s contract: write-once
    /// (`AlreadyExists`, leaving the stored object unchanged, if the name
    /// is taken), atomic, durable once this returns `Ok`.
    async fn finish(self: Box<Self>, name: &str) -> StorageResult<()>;
}

/// [`Backend::upload`]'s default: the pieces in memory, then one `put`.
struct BufferedUpload<'a, B: ?Sized> {
    backend: &'a B,
    kind: ObjectKind,
    opts: PutOptions,
    buf: Vec<u8>,
}

#[async_trait]
impl<B: Backend + ?Sized> Upload for BufferedUpload<'_, B> {
    async fn write(&mut self, data: &[u8]) -> StorageResult<()> {
        self.buf.extend_from_slice(data);
        Ok(())
    }

    async fn finish(self: Box<Self>, name: &str) -> StorageResult<()> {
        let BufferedUpload {
            backend,
            kind,
            opts,
            buf,
        } = *self;
        backend.put(kind, name, Bytes::from(buf), &opts).await
    }
}

/// Convenience: does an object exist? (Outside the trait, as in object_store:
/// it is derivable from `head`.)
pub async fn exists(backend: &dyn Backend, kind: ObjectKind, name: &str) -> StorageResult<bool> {
    match backend.head(kind, name).await {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Convenience: read a whole object.
pub async fn get_all(backend: &dyn Backend, kind: ObjectKind, name: &str) -> StorageResult<Bytes> {
    backend.get(kind, name, None).await
}
