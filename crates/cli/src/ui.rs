//! Terminal output: a progress bar on a TTY, periodic status lines (text or
//! JSON) when asked for with `--progress-interval`, and small formatting
//! helpers.
//!
//! Status lines go to stderr, so that stdout keeps exactly the command's
//! result (one JSON document with `--json`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use holdfast_sources::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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
            eprintln!("{line}");
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

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
