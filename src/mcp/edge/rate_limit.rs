//! Step 4, rate limit: one token of the caller's budget, spent on the replica that
//! serves the request (a forwarded request is charged once, where it is served, as this
//! step comes after routing). A spent budget is 429 with `Retry-After` in whole seconds;
//! a budget that cannot be read is 503 when the limiter fails closed.

use crate::{
    auth::Principal,
    mcp::error::EdgeError,
    rate_limit::{RateLimitError, RateLimiter},
};

/// Spends one token of `principal`'s budget in `limiter`.
///
/// # Errors
/// [`EdgeError::RateLimited`] when the budget is spent, [`EdgeError::Unavailable`] when
/// it cannot be read and the limiter fails closed.
pub(crate) async fn spend(limiter: &RateLimiter, principal: &Principal) -> Result<(), EdgeError> {
    match limiter.check(principal.as_str()).await {
        Ok(()) => Ok(()),
        Err(RateLimitError::Limited(wait)) => Err(EdgeError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }),
        Err(RateLimitError::Unavailable) => Err(EdgeError::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use http::{StatusCode, header};

    use super::*;
    use crate::config::{FailMode, RateLimitSettings};

    fn limiter(requests_per_sec: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(
            &RateLimitSettings {
                requests_per_sec,
                burst,
                on_redis_error: FailMode::Closed,
            },
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_is_429_with_the_wait_rounded_up_to_a_second() {
        let limiter = limiter(1, 2);
        let alice = Principal::new("alice").unwrap();
        spend(&limiter, &alice).await.unwrap();
        spend(&limiter, &alice).await.unwrap();
        let refusal = spend(&limiter, &alice).await.unwrap_err();
        assert_eq!(
            refusal,
            EdgeError::RateLimited {
                retry_after_secs: 1
            }
        );
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bob = Principal::new("bob").unwrap();
        spend(&limiter, &bob).await.unwrap();
    }

    #[tokio::test]
    async fn no_rate_no_limit() {
        let limiter = limiter(0, 1);
        for _ in 0..10 {
            spend(&limiter, &Principal::anonymous()).await.unwrap();
        }
    }
}
