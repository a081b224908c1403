//! Step 0, authenticate: who is asking. A request without a valid bearer token (while
//! authentication is on) is refused with 401 and a `WWW-Authenticate` challenge that
//! names the RFC 9728 metadata; any other request goes on with its [`Principal`]. A
//! client address that failed too often is refused first, its token unchecked; the
//! address is the connection's peer, or the last entry a trusted proxy appended to
//! `server.trusted_proxy_header`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, request::Parts};

use super::LOG_TARGET;
use crate::{
    auth::{Authenticator, Principal},
    mcp::error::EdgeError,
};

/// The caller of a request with these `headers`.
///
/// # Errors
/// [`EdgeError::Unauthorized`], carrying `auth`'s challenge, when a token is required
/// and missing or invalid (the reason is logged, never sent).
/// [`EdgeError::TooManyFailures`] when `client` has failed too often (counted here).
pub(crate) fn caller(
    auth: &Authenticator,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Principal, EdgeError> {
    let failures = auth.failures();
    if let Some(client) = client
        && failures.is_refused(client)
    {
        tracing::debug!(target: LOG_TARGET, "request refused: its address failed authentication too often");
        return Err(EdgeError::TooManyFailures {
            retry_after_secs: failures.retry_after().as_secs(),
        });
    }
    auth.authenticate(headers).map_err(|e| {
        if let Some(client) = client {
            failures.record(client);
        }
        tracing::info!(target: LOG_TARGET, error = %e, "unauthenticated request refused");
        EdgeError::Unauthorized {
            challenge: auth.challenge().cloned(),
        }
    })
}

/// The client's address: the last entry of `trusted_header` when set and present (what
/// the trusted proxy appended), else the connection's peer; `None` when neither is
/// known (a request made in-process).
pub(crate) fn client_address(parts: &Parts, trusted_header: Option<&HeaderName>) -> Option<IpAddr> {
    let forwarded = trusted_header.and_then(|name| {
        let last = parts.headers.get_all(name).iter().next_back()?;
        let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
        entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
    });
    forwarded.or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
    })
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use http::{HeaderValue, StatusCode, header};

    use super::*;
    use crate::{
        config::Settings,
        mcp::edge::fixture::{API_KEY, api_key_auth},
    };

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_known_key_names_its_principal_and_anything_else_gets_the_challenge() {
        let (auth, _file) = api_key_auth();
        let (key, name) = API_KEY;
        assert_eq!(caller(&auth, None, &bearer(key)).unwrap().as_str(), name);
        for headers in [HeaderMap::new(), bearer("guess")] {
            let response = caller(&auth, None, &headers).unwrap_err().into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(
                challenge.starts_with("Bearer resource_metadata="),
                "{challenge}"
            );
        }
    }

    #[test]
    fn without_authentication_everyone_is_the_anonymous_principal() {
        let settings = Settings::load_with_env(None, Vec::new()).unwrap().auth;
        let auth = Authenticator::from_settings(&settings).unwrap();
        assert_eq!(
            caller(&auth, None, &HeaderMap::new()).unwrap(),
            Principal::anonymous()
        );
    }
}
