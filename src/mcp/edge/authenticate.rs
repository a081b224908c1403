//! Step 0, authenticate: who is asking. A request without a valid bearer token (while
//! authentication is on) is refused with 401 and a `WWW-Authenticate` challenge that
//! names the RFC 9728 metadata; any other request goes on with its [`Principal`].

use http::HeaderMap;

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
pub(crate) fn caller(auth: &Authenticator, headers: &HeaderMap) -> Result<Principal, EdgeError> {
    auth.authenticate(headers).map_err(|e| {
        tracing::info!(target: LOG_TARGET, error = %e, "unauthenticated request refused");
        EdgeError::Unauthorized {
            challenge: auth.challenge().cloned(),
        }
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
        assert_eq!(caller(&auth, &bearer(key)).unwrap().as_str(), name);
        for headers in [HeaderMap::new(), bearer("guess")] {
            let response = caller(&auth, &headers).unwrap_err().into_response();
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
            caller(&auth, &HeaderMap::new()).unwrap(),
            Principal::anonymous()
        );
    }
}
