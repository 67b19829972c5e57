//! The `command` check: a program of the operator's, run with the scratch
//! location in its environment. It passes when it exits 0 within its
//! timeout; it is killed (with its process group) on the timeout or when
//! the drill is stopped.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_drill::CheckResult;

use super::Ctx;

/// The most of a command's output kept in the report.
const OUTPUT_TAIL: usize = 2000;

/// Run `argv` with `env` added; the check's result.
pub(crate) fn run(
    ctx: &Ctx<'_>,
    name: &str,
    argv: &[String],
    timeout: Option<u64>,
    env: &[(&str, &OsStr)],
) -> CheckResult {
    let started = Instant::now();
    let result = |passed: bool, detail: String| CheckResult {
        kind: "command".into(),
        name: name.to_string(),
        passed,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    };
    let Some((prog, args)) = argv.split_first() else {
        return result(false, "no command given".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout ends its children too.
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return result(false, format!("cannot run {prog:?}: {e}")),
    };
    // Drain output on threads: a chatty command must not block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = timeout.map(|t| started + Duration::from_secs(t));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("waiting for {prog:?}: {e}")),
        }
        let why = if ctx.stopped() {
            Some("stopped with the drill".to_string())
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some(format!(
                "killed after its timeout of {}",
                holdfast_drill::duration::Human(timeout.unwrap_or(0))
            ))
        } else {
            None
        };
        if let Some(why) = why {
            kill_group(child.id());
            let _ = child.wait();
            break Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let tail = |h: std::thread::JoinHandle<Vec<u8>>| {
        let b = h.join().unwrap_or_default();
        let text = String::from_utf8_lossy(&b).trim().to_string();
        let skip = text.chars().count().saturating_sub(OUTPUT_TAIL);
        text.chars().skip(skip).collect::<String>()
    };
    let (stdout, stderr) = (tail(out), tail(err));
    let output = match (stdout.is_empty(), stderr.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!("; output: {stdout}"),
        (true, false) => format!("; stderr: {stderr}"),
        (false, false) => format!("; output: {stdout}; stderr: {stderr}"),
    };
    match status {
        Ok(s) if s.success() => result(true, format!("exited 0{output}")),
        Ok(s) => result(false, format!("{s}{output}")),
        Err(why) => result(false, format!("{why}{output}")),
    }
}

/// SIGKILL the process group `pid` leads.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals that process group;
        // no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
