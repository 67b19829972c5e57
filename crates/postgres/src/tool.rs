//! Running the PostgreSQL client tools as child processes.
//!
//! stderr is always captured (on a thread, so a chatty tool can never block
//! on a full pipe) and its tail goes into the error when the tool fails:
//! pg_dump and pg_restore say exactly what went wrong, and the operator
//! must see it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::error::{PgError, Result};

/// Keep at most this much of a tool's stderr (the end is what matters).
const STDERR_KEEP: usize = 64 * 1024;

pub(crate) struct Running {
    pub child: Child,
    pub tool: String,
    stderr: Option<JoinHandle<String>>,
}

pub(crate) fn spawn(
    path: &Path,
    args: &[String],
    env: &[(String, String)],
    stdin: bool,
    stdout: bool,
) -> Result<Running> {
    let tool = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| PgError::ToolMissing {
        tool: tool.clone(),
        path: path.display().to_string(),
        cause: e,
    })?;
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut keep: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        keep.extend_from_slice(&buf[..n]);
                        if keep.len() > 2 * STDERR_KEEP {
                            keep.drain(..keep.len() - STDERR_KEEP);
                        }
                    }
                }
            }
            if keep.len() > STDERR_KEEP {
                keep.drain(..keep.len() - STDERR_KEEP);
            }
            String::from_utf8_lossy(&keep).into_owned()
        })
    });
    Ok(Running {
        child,
        tool,
        stderr,
    })
}

/// Copy `reader` into the tool's stdin on a thread of its own (the tool
/// may be writing its output at the same time); join it for the bytes fed.
pub(crate) fn feed(
    running: &mut Running,
    reader: impl std::io::Read + Send + 'static,
) -> Result<JoinHandle<std::io::Result<u64>>> {
    use std::io::Write;
    let stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| PgError::Invalid(format!("{} has no stdin pipe", running.tool)))?;
    Ok(std::thread::spawn(move || -> std::io::Result<u64> {
        let mut reader = reader;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
        let n = std::io::copy(&mut reader, &mut w)?;
        w.flush()?;
        Ok(n)
    }))
}

/// Grow a pipe to 1 MiB (Linux; best effort). A dump arrives through a
/// 64 KiB pipe in many small reads, each a context switch between the tool
/// and us; a wider pipe lets both sides work in larger batches.
pub(crate) fn widen_pipe<F: std::os::unix::io::AsRawFd>(fd: &F) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor we own; failure is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

impl Running {
    /// Wait for exit; a non-zero status becomes [`PgError::ToolFailed`]
    /// carrying the tool's stderr. Returns stderr on success (warnings).
    pub fn finish(mut self) -> Result<String> {
        let status = self
            .child
            .wait()
            .map_err(|e| PgError::io(format!("waiting for {}", self.tool), e))?;
        let stderr = self.take_stderr();
        check(&self.tool, status, stderr)
    }

    /// Kill the tool (after our side failed) and reap it.
    pub fn abort(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take_stderr()
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn check(tool: &str, status: ExitStatus, stderr: String) -> Result<String> {
    if status.success() {
        return Ok(stderr);
    }
    let status = match (status.code(), unix_signal(&status)) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    let stderr = if stderr.trim().is_empty() {
        "(no output)".to_string()
    } else {
        stderr.trim_end().to_string()
    };
    Err(PgError::ToolFailed {
        tool: tool.to_string(),
        status,
        stderr,
    })
}

#[cfg(unix)]
fn unix_signal(s: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    s.signal()
}

#[cfg(not(unix))]
fn unix_signal(_: &ExitStatus) -> Option<i32> {
    None
}
