//! One principal's tokens leased to this replica ([`PrincipalGrant`]), spent locally,
//! and the rule that says when a spend should renew them ahead of time.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

// tokio's clock, so tests can run on paused time.
use tokio::time::Instant;

/// How long leased tokens may be spent.
pub(super) const LEASE_LIFETIME: Duration = Duration::from_secs(1);
/// How long after a failed renewal the bucket counts as unreachable without asking.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// How this replica leases a principal's tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terms {
    /// Tokens one renewal asks for (a fifth of the burst, at least one).
    pub(super) block: u32,
    /// A spend that leaves at most this many tokens renews the lease ahead (a quarter
    /// of the block, rounded down: with a block under four, the spend of the last one).
    pub(super) low_water: u32,
}

impl Terms {
    /// The terms for a bucket of `burst` tokens.
    pub(super) fn for_burst(burst: u32) -> Self {
        let block = (burst / 5).max(1);
        Self {
            block,
            low_water: block / 4,
        }
    }
}

/// One principal's lease on this replica, and the lock held by whichever renewal of it
/// runs: a request's, or one ahead of need in the background. Requests that find the
/// lease empty while a renewal runs wait for that renewal and spend from it, rather than
/// each taking a lease of their own from the shared bucket (which drained it, refusing
/// requests while leased tokens sat unspent).
#[derive(Debug, Default)]
pub(super) struct PrincipalGrant {
    lease: Mutex<Grant>,
    /// An `Arc` so a renewal ahead can take it before it is spawned and hold it until it
    /// lands: never two renewals of one principal in flight on a replica.
    pub(super) renewal: Arc<tokio::sync::Mutex<()>>,
}

/// What a renewal brought back from the bucket.
pub(super) type Taken = Result<(u32, Duration), String>;

impl PrincipalGrant {
    fn lease(&self) -> MutexGuard<'_, Grant> {
        // Every write leaves the grant whole, so a poisoned lock guards a usable one.
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends one leased token: `None` when none is left, else whether the lease should
    /// now be renewed ahead.
    pub(super) fn spend(&self, terms: Terms) -> Option<bool> {
        self.lease().spend(Instant::now(), terms)
    }

    /// Whether a renewal failed less than [`FAILURE_HOLD`] ago.
    pub(super) fn failed_recently(&self) -> bool {
        self.lease().failed(Instant::now())
    }

    /// Records what a renewal brought: tokens added to the lease, the bucket found empty
    /// (no renewal ahead until a token is back) or unreachable (none asked for during
    /// [`FAILURE_HOLD`]). With `spend`, a request that waited for the renewal spends one
    /// of the new tokens at once, before another can: `Ok(renew ahead)`, or why not.
    pub(super) fn settle(&self, taken: Taken, spend: Option<Terms>) -> Result<bool, Shortfall> {
        let now = Instant::now();
        let mut lease = self.lease();
        match taken {
            Ok((granted, _)) if granted > 0 => {
                lease.land(granted, now);
                Ok(spend
                    .and_then(|terms| lease.spend(now, terms))
                    .unwrap_or(false))
            }
            Ok((_, wait)) => {
                lease.dry_until = Some(now + wait);
                Err(Shortfall::Empty(wait))
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable");
                lease.failed_until = Some(now + FAILURE_HOLD);
                Err(Shortfall::Unreachable)
            }
        }
    }
}

/// Why a renewal brought no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shortfall {
    /// The bucket is empty; a token is back after this long.
    Empty(Duration),
    /// The bucket could not be read.
    Unreachable,
}

/// Tokens this replica may spend without asking.
#[derive(Debug)]
struct Grant {
    tokens: u32,
    until: Instant,
    /// When the last token was spent: the pace that says whether tokens renewed ahead
    /// would be spent before they expire.
    last_spend: Option<Instant>,
    /// Until when the bucket is known to be empty: a renewal ahead would bring nothing.
    dry_until: Option<Instant>,
    /// Until when the shared bucket counts as unreachable after a failed renewal: the
    /// requests that waited for that renewal apply `rate_limit.on_redis_error` at once
    /// instead of each trying Redis again in turn (a frozen Redis would otherwise hold
    /// the n-th of them n command timeouts long).
    failed_until: Option<Instant>,
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            tokens: 0,
            until: Instant::now(),
            last_spend: None,
            dry_until: None,
            failed_until: None,
        }
    }
}

impl Grant {
    fn spend(&mut self, now: Instant, terms: Terms) -> Option<bool> {
        if self.tokens == 0 || self.until <= now {
            return None;
        }
        self.tokens -= 1;
        let gap = self.last_spend.replace(now).map(|at| now - at);
        // Renewed now, the lease would hold up to low water + a block for a lifetime:
        // at a slower pace part of it would expire unspent, lost to the shared bucket.
        let brisk = gap
            .is_none_or(|gap| gap.saturating_mul(terms.low_water + terms.block) <= LEASE_LIFETIME);
        let dry = self.dry_until.is_some_and(|until| until > now);
        Some(self.tokens <= terms.low_water && brisk && !dry && !self.failed(now))
    }

    /// Adds `granted` fresh tokens to those still good, all good for a lifetime from now.
    fn land(&mut self, granted: u32, now: Instant) {
        if self.until <= now {
            self.tokens = 0;
        }
        self.tokens += granted;
        self.until = now + LEASE_LIFETIME;
        self.dry_until = None;
        self.failed_until = None;
    }

    fn failed(&self, now: Instant) -> bool {
        self.failed_until.is_some_and(|until| until > now)
    }
}
