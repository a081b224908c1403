//! What the edge leaves in a request's extensions for the layers behind it: the
//! handler reads the caller's confirmed transport session, idempotency key and
//! deadline here, never from headers or fields of its own.

use std::time::Duration;

use tokio::time::Instant;

/// The `idempotencyKey` of a `tools/call` (SEP-3182). rmcp keeps no unknown params
/// field, so the edge lifts it out of the body for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

/// A 2025-era transport session the edge found alive for this request. Only a request
/// that carries it may act on its connection's session: an `Mcp-Session-Id` header on
/// its own is never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSession(pub String);

/// The exported span of a request's MCP method, for the work rmcp runs on tasks of its
/// own (a 2025-era session's worker, a tool call): the handler runs it under this span
/// so its spans (Redis round trips, a task's start) join the request's trace. Present
/// only while traces are exported.
#[derive(Debug, Clone)]
pub struct TraceSpan(pub tracing::Span);

/// The instant by which a request's Redis steps must be done, whichever layer runs
/// them (`server.request_deadline_ms` after its body was read, or sooner when the
/// replica that forwarded it had less left). One deadline for all the steps: each
/// command's own timeout bounds that command, this bounds their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// What is left of it (zero once it has passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// `step`'s output, or `None` when the deadline passes first (the step is dropped
    /// at its next await point).
    ///
    /// # Cancel safety
    /// As `step`'s own: a store call dropped after it was sent may still have been
    /// applied, which is why a tool reports such a call's outcome as unknown.
    pub fn bound<F: Future>(self, step: F) -> impl Future<Output = Option<F::Output>> {
        // A combinator, not an `async fn`: one would keep `step` as an argument beside
        // the timeout that holds it, doubling what every caller's future carries.
        futures::FutureExt::map(tokio::time::timeout_at(self.0, step), Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_runs_until_the_deadline_and_no_further() {
        let deadline = Deadline::after(Duration::from_millis(100));
        assert_eq!(deadline.remaining(), Duration::from_millis(100));
        let quick = deadline.bound(tokio::time::sleep(Duration::from_millis(60)));
        assert_eq!(quick.await, Some(()));
        let slow = deadline.bound(tokio::time::sleep(Duration::from_millis(60)));
        assert_eq!(slow.await, None, "40 ms were left");
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }
}
