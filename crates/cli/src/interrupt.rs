//! SIGINT and SIGTERM during a backup.
//!
//! The first signal asks the running backup to stop cleanly: it stops
//! reading, stores and indexes what it holds, writes no snapshot, and the
//! command exits 128 + the signal (130 for SIGINT, 143 for SIGTERM). A second
//! signal ends the process at once; like a `kill -9`, that still leaves a
//! valid repository, only without the index of the last packs.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use holdfast_sources::Progress;

/// The first signal received, 0 if none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe; it is what a second Ctrl-C asks for.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Route SIGINT and SIGTERM to [`on_signal`] for the rest of the process.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is
        // valid; the handler only touches an atomic and calls _exit.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that interrupted the process, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// A thread that passes a received signal on to an operation's
/// [`Progress::stop`] (a signal handler may not do more than set a flag).
/// It polls the flag every 50 ms and is woken at once when dropped, so
/// that the end of a backup does not wait out a poll.
pub struct Watcher {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(progress: Arc<Progress>, quiet: bool) -> Watcher {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // A message or a dropped sender both mean: done.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_millis(50))
            {
                if let Some(sig) = received() {
                    progress.request_stop();
                    if !quiet {
                        errln!(
                            "holdfast: {} received: storing and indexing the data read so far (send it again to quit at once)",
                            name(sig)
                        );
                    }
                    return;
                }
            }
        });
        Watcher {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
