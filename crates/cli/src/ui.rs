//! Terminal output: progress bars on a TTY, nothing when not one, and small
//! formatting helpers.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use holdfast_sources::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Should progress be drawn? Only on a terminal, and never with --json/--quiet.
pub fn interactive(json: bool, quiet: bool) -> bool {
    !json && !quiet && std::io::stderr().is_terminal()
}

/// A progress bar fed from [`Progress`] counters by a polling thread.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>, enabled: bool, verb: &'static str) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Bar { stop, thread: None };
        }
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let pb = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_prefix(verb);
            while !s.load(Ordering::Relaxed) {
                let (files, bytes, total) = progress.get();
                pb.set_length(total.max(bytes));
                pb.set_position(bytes);
                pb.set_message(format!("{files} files"));
                std::thread::sleep(Duration::from_millis(100));
            }
            pb.finish_and_clear();
        });
        Bar {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
