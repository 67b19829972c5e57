//! Reading secrets from files: password files (one line, LF or CRLF) and
//! key files. A file that others can read is not refused (a group of
//! operators may share it deliberately) but reported, for the caller to
//! show.

use std::path::Path;

use holdfast_repo::keys::{decode_key_file, strip_line_end, KEY_FILE_LEN};

use crate::error::{OpsError, Result};

/// A secret and, if its file is readable by group or others, a warning.
pub struct SecretFile<T> {
    pub value: T,
    pub warning: Option<String>,
}

/// A password file's content without one trailing LF or CRLF.
pub fn read_password_file(f: &Path) -> Result<SecretFile<Vec<u8>>> {
    let s = std::fs::read(f).map_err(|cause| OpsError::Io {
        context: format!("reading password file {}", f.display()),
        cause,
    })?;
    Ok(SecretFile {
        value: strip_line_end(&s).to_vec(),
        warning: exposure(f, "password file"),
    })
}

/// The key of a key file.
pub fn read_key_file(f: &Path) -> Result<SecretFile<[u8; KEY_FILE_LEN]>> {
    let s = std::fs::read(f).map_err(|cause| OpsError::Io {
        context: format!("reading key file {}", f.display()),
        cause,
    })?;
    Ok(SecretFile {
        value: decode_key_file(&s, &format!("key file {}", f.display()))?,
        warning: exposure(f, "key file"),
    })
}

/// A warning when a secret's file can be read by its group or by others.
pub(crate) fn exposure(f: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }
    Some(format!(
        "{what} {} is readable by {} (mode {:04o}); run `chmod 600 {}`",
        f.display(),
        match (mode & 0o040 != 0, mode & 0o004 != 0) {
            (true, true) => "its group and by others",
            (true, false) => "its group",
            _ => "others",
        },
        mode & 0o7777,
        f.display()
    ))
}
