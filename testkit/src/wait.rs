//! The one way tests wait: poll a condition until a deadline, retry an operation until it
//! succeeds, or bound a future by the same deadline. Every wait names what it waits for,
//! so a timeout says what did not happen.

use std::{fmt::Display, time::Duration};

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Awaits `future`, panicking with `what` if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
}

/// Retries `attempt` until it succeeds and returns its value; panics with `what` and the
/// last error if it has not succeeded within [`WAIT`].
pub async fn retry<T, E: Display>(what: &str, attempt: impl AsyncFnMut() -> Result<T, E>) -> T {
    retry_every(what, WAIT, POLL, attempt).await
}

/// [`retry`] with its own bound and pace: for what takes longer than [`WAIT`] by design
/// (a failover waits out a node timeout) or costs more per attempt (a probe of every
/// node of a cluster).
///
/// # Panics
/// When `attempt` has not succeeded within `limit`; the message names `what`, the limit
/// and the last error.
pub async fn retry_every<T, E: Display>(
    what: &str,
    limit: Duration,
    poll: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let mut last_error = String::new();
    let polled = tokio::time::timeout(limit, async {
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(poll).await;
        }
    })
    .await;
    polled.unwrap_or_else(|_| {
        panic!("timed out after {limit:?} waiting until {what}; last error: {last_error}")
    })
}

/// Polls `condition` until it holds; panics with `what` if it does not within [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    retry(what, async || {
        if condition().await {
            Ok(())
        } else {
            Err("the condition is still false")
        }
    })
    .await
}
