//! Capped exponential backoff with jitter, shared by the background loops that keep a
//! dedicated Redis connection (the bus subscriber, the event stream reader, the
//! Sentinel watcher).

use std::time::Duration;

/// Capped exponential backoff with jitter, for background loops that keep a dedicated
/// connection and must retry forever without hammering a Redis that is down.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max` (`max` below `min` is raised to `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    ///
    /// The delay is spread over ±20% so replicas that lost Redis at the same moment do
    /// not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // A failed entropy read only costs the spread, never the retry.
        let spread = getrandom::u32().unwrap_or(u32::MAX / 2);
        let factor = 0.8 + 0.4 * (f64::from(spread) / f64::from(u32::MAX));
        base.mul_f64(factor)
    }

    /// Back to the minimum delay, after a connection worked again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// After one connection of a background loop (the bus subscriber, the event stream
    /// reader) ended with `outcome` (`Ok` once `shutdown` fired, `Err` when it was
    /// lost): whether to connect again. A lost connection is logged as `task` of
    /// `replica` and the next delay waited out first; `false` when the loop ended on
    /// shutdown or `shutdown` fired meanwhile.
    pub async fn reconnect_after<E: std::fmt::Display>(
        &mut self,
        outcome: Result<(), E>,
        task: &str,
        replica: &str,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let Err(error) = outcome else { return false };
        let delay = self.next_delay();
        tracing::warn!(
            task,
            replica,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "lost Redis; reconnecting"
        );
        shutdown
            .run_until_cancelled(tokio::time::sleep(delay))
            .await
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let bases = [100, 200, 400, 800, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            assert!(
                *delay >= ms(base * 8 / 10) && *delay <= ms(base * 12 / 10),
                "{delay:?} vs {base}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(120));
    }
}
