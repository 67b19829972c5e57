//! File metadata: from `lstat` into tree nodes, and from nodes back onto files.
//!
//! Ownership is restored only when running as root (anyone else cannot give
//! files away); modes and times always. Times are set last, after content,
//! because writing content updates them.
//!
//! Extended attributes are read and written as raw bytes without following
//! symlinks. POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`)
//! and file capabilities (`security.capability`) are extended attributes to
//! the kernel, so they travel the same way, in the kernel's own encoding.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use holdfast_repo::tree::{Node, NodeKind, NodeName, Timestamp, Xattr};

/// Build a node (without content or subtree) from `lstat` metadata.
pub fn node_from_metadata(name: &[u8], m: &Metadata, names: &NameCache) -> Node {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    let rdev = matches!(kind, NodeKind::Chardev | NodeKind::Blockdev).then(|| m.rdev());
    Node {
        name: NodeName(name.to_vec()),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        user: names.user(m.uid()),
        group: names.group(m.gid()),
        size: if kind == NodeKind::File { m.len() } else { 0 },
        mtime: Timestamp {
            sec: m.mtime(),
            nsec: m.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            sec: m.ctime(),
            nsec: m.ctime_nsec() as u32,
        },
        inode: m.ino(),
        dev: m.dev(),
        nlink: m.nlink(),
        rdev,
        content: Vec::new(),
        subtree: None,
        target: None,
        xattrs: Vec::new(),
        sparse: kind == NodeKind::File && allocated_less_than_size(m),
    }
}

/// True when a file has holes: fewer bytes allocated than its length.
/// (`st_blocks` counts 512-byte units whatever the file system's block size.)
fn allocated_less_than_size(m: &Metadata) -> bool {
    m.blocks().saturating_mul(512) < m.len()
}

/// What a restore applies to an entry after creating it: a node's
/// metadata without its name, content or backup-only fields.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// Device number of a device node.
    pub rdev: Option<u64>,
    pub xattrs: Vec<Xattr>,
}

impl Meta {
    pub fn of(node: &Node) -> Meta {
        Meta {
            kind: node.kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
            rdev: node.rdev,
            xattrs: node.xattrs.clone(),
        }
    }
}

/// True when a file is unchanged since `old` was recorded: same size, mtime,
/// ctime and inode. ctime catches changes that preserve mtime (touch -r,
/// restores), the inode catches a file replaced by another.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
}

/// Caches uid/gid to name lookups (each is a passwd/group file scan).
#[derive(Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl NameCache {
    pub fn user(&self, uid: u32) -> Option<String> {
        let mut m = self.users.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(uid).or_insert_with(|| lookup_user(uid)).clone()
    }
    pub fn group(&self, gid: u32) -> Option<String> {
        let mut m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(gid).or_insert_with(|| lookup_group(gid)).clone()
    }
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter; buffers outlive the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string in buf.
    Some(
        unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: as in lookup_user.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: as in lookup_user.
    Some(
        unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Errors that mean "this file system (or this entry type) has no extended
/// attributes": nothing to record, not a failure.
fn xattrs_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP))
}

/// The names of `path`'s extended attributes, as the kernel's NUL-separated list.
fn list_xattr_names(c: &CStr) -> std::io::Result<Vec<u8>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the needed size.
        let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if need == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; need as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        // ERANGE: an attribute was added between the two calls; ask again.
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// One attribute's value; `None` when it vanished since it was listed.
fn xattr_value(c: &CStr, name: &CStr) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the needed size.
        let need = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; need as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => continue,
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Every extended attribute of `path` (not following symlinks), sorted by
/// name. A file system without extended attributes gives an empty list.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let c = cpath(path)?;
    let names = match list_xattr_names(&c) {
        Ok(n) => n,
        Err(e) if xattrs_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "attribute name with NUL")
        })?;
        if let Some(value) = xattr_value(&c, &cname)? {
            out.push(Xattr {
                name: NodeName(name.to_vec()),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Set `node`'s extended attributes on `path` (not following symlinks).
/// Returns one message per attribute the target refused (a file system
/// without them, `trusted.*` or `security.capability` without privilege,
/// `user.*` on a symlink): those are warnings, the rest is still applied.
pub fn apply_xattrs(path: &Path, node: &Meta) -> Vec<String> {
    if node.xattrs.is_empty() {
        return Vec::new();
    }
    let c = match cpath(path) {
        Ok(c) => c,
        Err(e) => {
            return vec![format!(
                "{}: extended attributes not restored: {e}",
                path.display()
            )]
        }
    };
    let mut refused = Vec::new();
    for x in &node.xattrs {
        let Ok(name) = CString::new(x.name.0.as_slice()) else {
            refused.push(format!(
                "{}: extended attribute {:?} not restored: its name contains NUL",
                path.display(),
                x.name.display()
            ));
            continue;
        };
        // SAFETY: valid NUL-terminated strings; value is valid for its length.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name.as_ptr(),
                x.value.as_ptr().cast(),
                x.value.len(),
                0,
            )
        };
        if rc != 0 {
            refused.push(format!(
                "{}: extended attribute {} not restored: {}",
                path.display(),
                x.name.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    refused
}

/// Apply ownership (root only), mode and times to `path` (not following
/// symlinks); with `xattrs`, also its extended attributes, whose refusals
/// are returned as warnings. Order matters: `chown` clears set-id bits and
/// file capabilities, so it comes first; times come last.
pub fn apply(path: &Path, node: &Meta, xattrs: bool) -> std::io::Result<Vec<String>> {
    let c = cpath(path)?;
    if is_root() {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if node.kind != NodeKind::Symlink {
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), node.mode as libc::mode_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let warnings = if xattrs {
        apply_xattrs(path, node)
    } else {
        Vec::new()
    };
    let ts = [
        // atime: we do not record it; use mtime so restores are deterministic.
        libc::timespec {
            tv_sec: node.mtime.sec as libc::time_t,
            tv_nsec: node.mtime.nsec as libc::c_long,
        },
        libc::timespec {
            tv_sec: node.mtime.sec as libc::time_t,
            tv_nsec: node.mtime.nsec as libc::c_long,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(warnings)
}

/// Create a FIFO or device node.
pub fn mknod(path: &Path, node: &Meta) -> std::io::Result<()> {
    let c = cpath(path)?;
    let kind = match node.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Chardev => libc::S_IFCHR,
        NodeKind::Blockdev => libc::S_IFBLK,
        NodeKind::Socket => libc::S_IFSOCK,
        _ => return Ok(()),
    };
    // SAFETY: valid path; mode and dev are plain integers.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            kind | (node.mode as libc::mode_t & 0o7777),
            node.rdev.unwrap_or(0) as libc::dev_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
