//! The retry loop every S3 request goes through, and the bound on requests
//! in flight.
//!
//! The SDK's own retries are switched off: this loop replaces them so that
//! one policy covers every operation, including reading the response body
//! (which the SDK's retries do not cover), and so that callers learn whether
//! an earlier attempt *may* have taken effect (see [`Outcome::ambiguous`]):
//! a write-once `PUT` whose `200 OK` was lost, retried, then refused with
//! `412` is not a conflict but our own write, and `put` checks for it.
//!
//! Policy: exponential backoff with full jitter (sleep a uniformly random
//! time in `0..=min(max_backoff, base * 2^n)`), at most `max_attempts`
//! attempts. Throttling (`503 SlowDown`), 5xx, timeouts, resets and dropped
//! or truncated responses are retried; permanent answers (403, 404, 400,
//! 412...) fail at once. Each attempt holds one permit of the backend's
//! semaphore, so no more than `parallelism` requests are ever in flight;
//! backoff sleeps hold none.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;

use crate::failure::{Failure, FailureKind};

/// Retry policy and the in-flight bound.
#[derive(Debug)]
pub(crate) struct Retrier {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub permits: Semaphore,
}

/// The end of a retried request.
#[derive(Debug)]
pub(crate) struct Outcome<T> {
    pub result: Result<T, Failure>,
    /// An earlier attempt failed in a way that leaves open whether the
    /// server applied it (a timeout, reset or 5xx after the request went out).
    pub ambiguous: bool,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Retrier {
    pub fn new(max_attempts: u32, base: Duration, max: Duration, parallelism: usize) -> Self {
        Retrier {
            max_attempts: max_attempts.max(1),
            base_backoff: base,
            max_backoff: max,
            permits: Semaphore::new(parallelism.max(1)),
        }
    }

    /// Run `attempt` until it succeeds, fails permanently, or the attempts
    /// run out. `timeout` bounds each attempt (`None`: the attempt bounds
    /// itself, e.g. a download with an idle timeout per chunk).
    pub async fn run<T, F, Fut>(&self, timeout: Option<Duration>, mut attempt: F) -> Outcome<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run_limited(self.max_attempts, timeout, &mut attempt)
            .await
    }

    /// [`Retrier::run`] with a different attempt cap (connection probes use
    /// fewer attempts so a wrong endpoint is reported quickly).
    pub async fn run_limited<T, F, Fut>(
        &self,
        max_attempts: u32,
        timeout: Option<Duration>,
        attempt: &mut F,
    ) -> Outcome<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let start = Instant::now();
        let mut ambiguous = false;
        let mut n = 0u32;
        loop {
            n += 1;
            let res = {
                // The semaphore is never closed, so acquire cannot fail; if it
                // ever did, going on without a permit is the safe fallback.
                let _permit = self.permits.acquire().await.ok();
                match timeout {
                    Some(t) => match tokio::time::timeout(t, attempt()).await {
                        Ok(r) => r,
                        Err(_) => Err(Failure::local(
                            FailureKind::Timeout,
                            format!("no complete answer within {t:?} (stalled connection?)"),
                        )),
                    },
                    None => attempt().await,
                }
            };
            match res {
                Ok(v) => {
                    return Outcome {
                        result: Ok(v),
                        ambiguous,
                        attempts: n,
                        elapsed: start.elapsed(),
                    }
                }
                Err(f) if f.retryable() && n < max_attempts => {
                    ambiguous = true;
                    tokio::time::sleep(self.backoff(n)).await;
                }
                Err(f) => {
                    return Outcome {
                        result: Err(f),
                        ambiguous,
                        attempts: n,
                        elapsed: start.elapsed(),
                    }
                }
            }
        }
    }

    /// Full-jitter backoff after failed attempt number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff);
        let ms = cap.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn retrier(max: u32) -> Retrier {
        Retrier::new(max, Duration::from_millis(1), Duration::from_millis(5), 2)
    }

    #[test]
    fn backoff_is_capped() {
        let r = Retrier::new(10, Duration::from_millis(100), Duration::from_secs(1), 1);
        for n in 1..40 {
            assert!(r.backoff(n) <= Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let out = retrier(5)
            .run(None, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Failure::local(FailureKind::Network, "reset"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.result.unwrap(), 7);
        assert_eq!(out.attempts, 3);
        assert!(out.ambiguous);
    }

    #[tokio::test]
    async fn permanent_fails_fast_and_cap_holds() {
        let calls = AtomicU32::new(0);
        let out: Outcome<()> = retrier(5)
            .run(None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::local(FailureKind::Credentials, "none"))
            })
            .await;
        assert!(out.result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!out.ambiguous);

        let out: Outcome<()> = retrier(4)
            .run(Some(Duration::from_millis(5)), || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .await;
        assert_eq!(out.attempts, 4);
        assert_eq!(out.result.unwrap_err().kind, FailureKind::Timeout);
    }
}
