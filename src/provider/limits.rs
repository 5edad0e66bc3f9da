//! The one place where per-provider limits live: requests in flight (`max_concurrency`), requests
//! per minute (a sliding 60 s window, the way providers count), and the retry backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Shared by every call to one provider.
#[derive(Debug)]
pub struct ProviderLimits {
    in_flight: Arc<Semaphore>,
    per_minute: u32,
    recent_starts: Mutex<VecDeque<Instant>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl ProviderLimits {
    pub fn new(max_concurrency: usize, requests_per_minute: u32) -> Self {
        ProviderLimits {
            in_flight: Arc::new(Semaphore::new(max_concurrency.max(1))),
            per_minute: requests_per_minute,
            recent_starts: Mutex::new(VecDeque::new()),
        }
    }

    /// Wait for a free slot, then for the rate window; the permit is held for the whole request.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        self.wait_rate().await;
        permit
    }

    async fn wait_rate(&self) {
        if self.per_minute == 0 {
            return;
        }
        loop {
            let wait_until = {
                let mut starts = self.recent_starts.lock().await;
                let now = Instant::now();
                while starts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    starts.pop_front();
                }
                if starts.len() < self.per_minute as usize {
                    starts.push_back(now);
                    return;
                }
                *starts.front().expect("non-empty") + WINDOW
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
