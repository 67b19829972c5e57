//! Per-key serialisation of writes inside one process.
//!
//! Write-once across processes is the server's job (`If-None-Match: *`).
//! Inside one process we also queue concurrent puts of the *same* key, so
//! the second one sees the first's object and answers `AlreadyExists`
//! without uploading megabytes only to be refused, and so write-once holds
//! in-process even on S3-compatible servers whose conditional writes are
//! not atomic under concurrency (moto's are not). Distinct keys never wait
//! for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while a write of one key is in progress.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    entry: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = entry.clone().lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.to_string(),
            entry,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits, forget the key.
        if Arc::strong_count(&self.entry) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_key_serialises_and_map_is_emptied() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("k").await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(locks.len(), 0);
        // Distinct keys do not wait for each other.
        let _a = locks.lock("a").await;
        let _b = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
    }
}
