//! Terminal output: every line the binary writes goes through here, so a
//! closed pipe (`holdfast ls latest | head`) ends output quietly instead of
//! panicking; a progress bar on a TTY, periodic status lines (text or JSON)
//! when asked for with `--progress-interval`; small formatting helpers.
//!
//! Status lines go to stderr, so that stdout keeps exactly the command's
//! result (one JSON document with `--json`).
//!
//! `std`'s `println!` panics when stdout is gone (Rust ignores SIGPIPE, so a
//! write to a closed pipe is an `EPIPE` error). The [`outln!`]/[`errln!`]
//! macros never panic: after `EPIPE` stdout is marked closed and further
//! output is dropped (loops ask [`stdout_closed`] to stop early), and the
//! command keeps its own exit code, as ripgrep does. Any other stdout
//! failure (a full disk behind `> file`) is kept and reported by `main`.
//! A test (`no_std_print_macros`) keeps the `std` print macros out of `src/`.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use holdfast_sources::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Set once stdout can take no more output (closed pipe or failed write).
static STDOUT_DONE: AtomicBool = AtomicBool::new(false);
/// The first stdout failure that was not a closed pipe.
static STDOUT_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Print a line to stdout; never panics (see the module documentation).
macro_rules! outln {
    () => { $crate::ui::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::ui::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print a line to stderr; never panics (nowhere is left to report to).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::ui::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Write to stdout unless it is already closed; remember why it failed.
pub fn write_stdout(args: fmt::Arguments) {
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        STDOUT_DONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut slot = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    }
}

/// Write to stderr, ignoring failure: a closed stderr has no one to tell.
pub fn write_stderr(args: fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// True once stdout takes no more output: long listings stop early.
pub fn stdout_closed() -> bool {
    STDOUT_DONE.load(Ordering::Relaxed)
}

/// The stdout failure that was not a closed pipe, if any (for `main`).
pub fn stdout_error() -> Option<std::io::Error> {
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressMode {
    Off,
    /// An indicatif bar on the terminal (stderr).
    Bar,
    /// One status line on stderr every `every`, as text or as a JSON object.
    Lines {
        every: Duration,
        json: bool,
    },
}

/// The bar on a terminal (never with --json or --quiet); elsewhere status
/// lines only when `--progress-interval` asks for them (JSON with --json).
pub fn progress_mode(json: bool, quiet: bool, interval: Option<Duration>) -> ProgressMode {
    if quiet {
        return ProgressMode::Off;
    }
    let tty = std::io::stderr().is_terminal();
    match interval {
        Some(every) if json || !tty => ProgressMode::Lines { every, json },
        _ if tty && !json => ProgressMode::Bar,
        _ => ProgressMode::Off,
    }
}

/// Progress shown from [`Progress`] counters by a polling thread.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>, mode: ProgressMode, verb: &'static str) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = match mode {
            ProgressMode::Off => None,
            ProgressMode::Bar => Some(std::thread::spawn(move || draw_bar(&progress, &s, verb))),
            ProgressMode::Lines { every, json } => Some(std::thread::spawn(move || {
                status_lines(&progress, &s, verb, every, json)
            })),
        };
        Bar { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw_bar(progress: &Progress, stop: &AtomicBool, verb: &str) {
    let pb = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(verb.to_string());
    while !stop.load(Ordering::Relaxed) {
        let s = Status::now(progress);
        pb.set_length(s.total_bytes.max(s.bytes));
        pb.set_position(s.bytes);
        pb.set_message(s.files_and_eta(pb.eta()));
        std::thread::sleep(Duration::from_millis(100));
    }
    pb.finish_and_clear();
}

fn status_lines(progress: &Progress, stop: &AtomicBool, verb: &str, every: Duration, json: bool) {
    let started = Instant::now();
    let mut next = started + every;
    loop {
        let done = stop.load(Ordering::Relaxed);
        if done || Instant::now() >= next {
            let s = Status::now(progress);
            let line = if json {
                s.json(verb, started.elapsed(), done).to_string()
            } else {
                s.text(verb, started.elapsed())
            };
            errln!("{line}");
            next += every;
        }
        if done {
            return;
        }
        std::thread::sleep(Duration::from_millis(50).min(every));
    }
}

/// One reading of the counters.
struct Status {
    files: u64,
    bytes: u64,
    total_files: u64,
    total_bytes: u64,
    /// The totals are final (the scan ahead finished, or they were known).
    known: bool,
    errors: u64,
}

impl Status {
    fn now(p: &Progress) -> Status {
        let (files, total_files, known) = p.file_totals();
        let (_, bytes, total_bytes) = p.get();
        Status {
            files,
            bytes,
            total_files,
            total_bytes,
            known,
            errors: p.errors.load(Ordering::Relaxed),
        }
    }

    fn percent(&self) -> Option<f64> {
        (self.known && self.total_bytes > 0)
            .then(|| (self.bytes as f64 * 100.0 / self.total_bytes as f64).min(100.0))
    }

    /// Seconds left at the average rate so far.
    fn eta(&self, elapsed: Duration) -> Option<u64> {
        if !self.known || self.bytes == 0 {
            return None;
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64().max(0.001);
        Some((self.total_bytes.saturating_sub(self.bytes) as f64 / rate).round() as u64)
    }

    fn files_and_eta(&self, eta: Duration) -> String {
        if self.known {
            format!(
                "{}/{} files, ETA {}",
                self.files,
                self.total_files,
                clock(eta.as_secs())
            )
        } else if self.total_files > 0 {
            format!(
                "{} files (counting: {} so far)",
                self.files, self.total_files
            )
        } else {
            format!("{} files", self.files)
        }
    }

    fn text(&self, verb: &str, elapsed: Duration) -> String {
        let mut s = format!(
            "{verb} [{}] {}",
            clock(elapsed.as_secs()),
            bytes(self.bytes)
        );
        match (self.percent(), self.eta(elapsed)) {
            (Some(pct), Some(eta)) => s.push_str(&format!(
                " of {} ({pct:.1}%), {} of {} files, ETA {}",
                bytes(self.total_bytes),
                self.files,
                self.total_files,
                clock(eta)
            )),
            _ if self.known => s.push_str(&format!(
                " of {}, {} of {} files",
                bytes(self.total_bytes),
                self.files,
                self.total_files
            )),
            _ => s.push_str(&format!(
                ", {} files (still counting: {} files, {} so far)",
                self.files,
                self.total_files,
                bytes(self.total_bytes)
            )),
        }
        if self.errors > 0 {
            s.push_str(&format!(", {} error(s)", self.errors));
        }
        s
    }

    fn json(&self, verb: &str, elapsed: Duration, done: bool) -> serde_json::Value {
        json!({
            "message_type": "status",
            "operation": verb,
            "seconds_elapsed": elapsed.as_secs_f64(),
            "files_done": self.files,
            "bytes_done": self.bytes,
            "total_files": self.total_files,
            "total_bytes": self.total_bytes,
            "totals_final": self.known,
            "percent_done": self.percent(),
            "eta_seconds": self.eta(elapsed),
            "errors": self.errors,
            "finished": done,
        })
    }
}

/// h:mm:ss
fn clock(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// The exit status of an invalid input file (policy, playbook, config).
pub const INVALID_INPUT: i32 = 2;

/// One error of an input file, as every validator reports it: where, and
/// what (`shown` is its `file:line:column: message` form).
pub struct FileError {
    file: std::path::PathBuf,
    line: usize,
    column: usize,
    message: String,
    shown: String,
}

macro_rules! file_error_from {
    ($($t:ty),*) => {$(
        impl From<&$t> for FileError {
            fn from(e: &$t) -> FileError {
                FileError {
                    file: e.file.clone(),
                    line: e.line,
                    column: e.column,
                    message: e.message.to_string(),
                    shown: e.to_string(),
                }
            }
        }
    )*};
}
file_error_from!(
    holdfast_policy::PolicyError,
    holdfast_drill::PlaybookError,
    holdfast_config::ConfigError
);

/// Report input-file errors — `--json`: `{"valid": false, "errors":
/// [...]}` on stdout; each on stderr — and return [`INVALID_INPUT`].
pub fn invalid_files<'a, E>(g: &crate::args::Global, errors: &'a [E]) -> anyhow::Result<i32>
where
    &'a E: Into<FileError>,
{
    let errors: Vec<FileError> = errors.iter().map(Into::into).collect();
    if g.json {
        let v: Vec<_> = errors
            .iter()
            .map(|e| json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message}))
            .collect();
        print_json(&json!({"valid": false, "errors": v}))?;
    }
    for e in &errors {
        errln!("holdfast: error: {}", e.shown);
    }
    Ok(INVALID_INPUT)
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    outln!("{text}");
    Ok(())
}

/// A name for human output: printable text as is; `\` and control
/// characters escaped C-style (`\n`, `\t`, `\x1b`), invisible characters
/// that reorder or break lines as `\u{202e}`, and bytes that are not UTF-8
/// as `\xff`, so one name is one unambiguous line (like `ls -b`).
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() || is_invisible_format(c) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Line and paragraph separators and bidirectional controls: they can
/// make a listing show a name other than the stored one.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    ) || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Exact bytes for JSON: `(key, string)` when UTF-8, else
/// (`key_hex`, hex string), the convention trees use for names.
pub fn json_bytes(key: &str, bytes: &[u8]) -> (String, serde_json::Value) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (key.to_string(), serde_json::Value::from(s)),
        Err(_) => (format!("{key}_hex"), serde_json::Value::from(hex(bytes))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user name recorded as `uid N` (where the name was unknown at the
/// time) shown as this host's name for N when there is one.
pub fn user_name(recorded: &str, names: &holdfast_sources::meta::NameCache) -> String {
    recorded
        .strip_prefix("uid ")
        .and_then(|n| n.parse::<u32>().ok())
        .and_then(|uid| names.user(uid))
        .unwrap_or_else(|| recorded.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every print in the binary must go through `outln!`/`errln!`: the
    /// `std` macros panic on a closed pipe.
    #[test]
    fn no_std_print_macros() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let banned = ["println!(", "eprintln!(", "print!(", "eprint!("];
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests (this one names the macros) may print.
            let code_part = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code_part.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for b in banned {
                    let hit = code.match_indices(b).any(|(i, _)| {
                        // `outln!(` and `errln!(` end in `ln!(` too.
                        !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    assert!(
                        !hit,
                        "{}:{}: {b} (use outln!/errln!)",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
    }

    /// Architecture invariant: library crates never read the environment;
    /// the binary reads it and passes settings in explicitly (so the daemon
    /// and tests configure the libraries the same way). Doc comments and
    /// unit tests may name `env::var`; binaries (`src/bin`) may call it.
    #[test]
    fn libraries_read_no_environment() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack = vec![];
        for entry in std::fs::read_dir(&crates).unwrap() {
            let dir = entry.unwrap().path();
            if dir.file_name().is_some_and(|n| n != "cli") {
                stack.push(dir.join("src"));
            }
        }
        let mut checked = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "bin") {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code_part = text.split("#[cfg(test)]").next().unwrap_or("");
                for (n, line) in code_part.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for banned in ["env::var(", "env::var_os(", "env::vars("] {
                        assert!(
                            !code.contains(banned),
                            "{}:{}: {banned} in a library (read it in the binary and pass it in)",
                            path.display(),
                            n + 1
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} library files found");
    }

    #[test]
    fn escape_keeps_text_and_escapes_what_could_mislead() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(
            escape("caf\u{e9} \u{65e5}".as_bytes()),
            "caf\u{e9} \u{65e5}"
        );
        assert_eq!(escape(b"a\nb"), "a\\nb");
        assert_eq!(escape(b"a\\nb"), "a\\\\nb");
        assert_eq!(escape(b"t\tr\r"), "t\\tr\\r");
        assert_eq!(escape(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape(b"del\x7f"), "del\\x7f");
        assert_eq!(escape("\u{85}".as_bytes()), "\\u{85}");
        assert_ne!(escape("\u{85}".as_bytes()), escape(b"\x85"));
        assert_eq!(
            escape("evil\u{202e}txt.exe".as_bytes()),
            "evil\\u{202e}txt.exe"
        );
        assert_eq!(escape("l\u{2028}s".as_bytes()), "l\\u{2028}s");
        assert_eq!(escape(b"bad\xff\xfe"), "bad\\xff\\xfe");
        // Escapes are unambiguous: different names never print the same.
        assert_ne!(escape(b"\\x41"), escape(b"\x41"));
        assert_ne!(escape(b"\xff"), escape(b"\\xff"));
    }

    #[test]
    fn json_bytes_is_exact() {
        assert_eq!(json_bytes("path", b"/a\nb").1, "/a\nb");
        assert_eq!(json_bytes("path", b"/a\nb").0, "path");
        let (k, v) = json_bytes("path", b"/\xff");
        assert_eq!((k.as_str(), v.as_str()), ("path_hex", Some("2fff")));
    }
}
