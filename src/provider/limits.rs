//! The one place where per-provider limits live: requests in flight (`max_concurrency`), requests
//! per minute (a sliding 60 s window, the way providers count), and the retry backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Shared by every call to one provider.
#[derive(Debug)]
pub struct ProviderLimits {
    in_flight: Arc<Semaphore>,
    per_minute: u32,
    recent: Window,
    next_id: AtomicU64,
}

const WINDOW: Duration = Duration::from_secs(60);

/// Requests counted in the rate window: (id, when it counts from).
type Window = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Held for the whole request: a slot of `max_concurrency`, and the request's place in the rate window.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    /// The rate window entry, when the provider has a per-minute limit.
    entry: Option<(u64, Window)>,
    opened: bool,
}

impl Permit {
    /// The provider answered (status and headers arrived), so it has the request: the window counts
    /// it from now. Counting from when it was sent would let a request that reached the provider
    /// late (a slow connect, a busy machine) overlap the next window as the provider sees it.
    pub fn opened(&mut self) {
        self.restamp();
        self.opened = true;
    }

    fn restamp(&self) {
        if let Some((id, recent)) = &self.entry {
            let now = Instant::now();
            if let Some(e) = recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter_mut()
                .find(|e| e.0 == *id)
            {
                e.1 = e.1.max(now);
            }
        }
    }
}

impl Drop for Permit {
    /// A request that never got an answer counts from when it ended: when the provider got it is
    /// unknown, and this is the latest it can have been.
    fn drop(&mut self) {
        if !self.opened {
            self.restamp();
        }
    }
}

impl ProviderLimits {
    pub fn new(max_concurrency: usize, requests_per_minute: u32) -> Self {
        ProviderLimits {
            in_flight: Arc::new(Semaphore::new(max_concurrency.max(1))),
            per_minute: requests_per_minute,
            recent: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(0),
        }
    }

    /// Wait for a free slot, then for the rate window; the permit is held for the whole request.
    pub async fn acquire(&self) -> Permit {
        #[allow(
            clippy::expect_used,
            reason = "the semaphore is owned here and never closed"
        )]
        let slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let entry = self.wait_rate().await.map(|id| (id, self.recent.clone()));
        Permit {
            _slot: slot,
            entry,
            opened: false,
        }
    }

    async fn wait_rate(&self) -> Option<u64> {
        if self.per_minute == 0 {
            return None;
        }
        loop {
            let wait_until = {
                let mut recent = self
                    .recent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                recent.retain(|(_, t)| now.duration_since(*t) < WINDOW);
                if recent.len() < self.per_minute as usize {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    recent.push((id, now));
                    return Some(id);
                }
                // Full, so not empty: the oldest entry says when a place frees up.
                recent
                    .iter()
                    .map(|(_, t)| *t)
                    .min()
                    .map_or(now, |t| t + WINDOW)
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }
}

/// Exponential backoff with full jitter (500 ms, 1 s, 2 s ... capped at 20 s), unless the server said
/// how long to wait, which is honoured (capped at 60 s so a bad header cannot stall a run forever).
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(Duration::from_secs(60));
    }
    let cap = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.min(10))
        .min(Duration::from_secs(20));
    let jitter: f64 = rand::random();
    // Never zero: half the cap at least, so retries cannot hammer a struggling server.
    cap.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        for attempt in 0..6 {
            let d = backoff(attempt, None);
            let cap = Duration::from_millis(500) * (1 << attempt);
            assert!(
                d <= cap.min(Duration::from_secs(20)) && d >= cap.min(Duration::from_secs(20)) / 2
            );
        }
        assert_eq!(
            backoff(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff(0, Some(Duration::from_secs(900))),
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_window_spaces_requests() {
        let l = ProviderLimits::new(100, 2);
        let t0 = Instant::now();
        drop(l.acquire().await);
        drop(l.acquire().await);
        assert_eq!(Instant::now(), t0);
        drop(l.acquire().await);
        assert!(Instant::now() - t0 >= WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_counts_from_when_the_provider_answered() {
        let l = ProviderLimits::new(100, 1);
        let t0 = Instant::now();
        let mut p = l.acquire().await;
        // The provider answers 5 s after the request was sent.
        tokio::time::sleep(Duration::from_secs(5)).await;
        p.opened();
        drop(p);
        drop(l.acquire().await);
        assert!(Instant::now() - t0 >= WINDOW + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped() {
        let l = Arc::new(ProviderLimits::new(2, 0));
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let _permit = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
