//! File metadata: from `lstat` into tree nodes, and from nodes back onto files.
//!
//! Ownership is restored only when running as root (anyone else cannot give
//! files away); modes and times always. Times are set last, after content,
//! because writing content updates them.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use holdfast_repo::tree::{Node, NodeKind, NodeName, Timestamp};

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

/// Apply ownership (root only), mode and times to `path` (not following symlinks).
pub fn apply(path: &Path, node: &Node) -> std::io::Result<()> {
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
    Ok(())
}

/// Create a FIFO or device node.
pub fn mknod(path: &Path, node: &Node) -> std::io::Result<()> {
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
