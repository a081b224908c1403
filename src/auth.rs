//! Who is calling: bearer-token authentication to a [`Principal`], the RFC 9728
//! protected-resource metadata, and the `WWW-Authenticate` challenge.
//!
//! Three modes (`auth.mode`): `none` (every caller is [`ANONYMOUS`]), `api_keys` (a file
//! of `<principal> <sha256 hex of the key>` lines) and `jwt` (tokens signed by a key of a
//! local JWKS document, with `iss`, `aud`, `exp` and `nbf` checked; the principal is
//! `sub`). Both files are re-read when they change ([`Authenticator::reload`]). Tokens
//! are read from the `Authorization: Bearer` header only and never passed on. A client
//! address that keeps failing is refused for a while ([`FailedAttempts`]).

mod failures;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use self::failures::FailedAttempts;
use crate::{
    config::{AuthMode, AuthSettings},
    sessions::ANONYMOUS,
};

/// Longest principal accepted (it becomes part of Redis keys).
const MAX_PRINCIPAL: usize = 128;

/// An authenticated caller. Everything stored (sessions, handles, streams) is bound to
/// one and checked against it on every use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Self(ANONYMOUS.into())
    }

    /// A principal named `name`, if it is usable as one: 1 to 128 visible ASCII
    /// characters other than braces (it becomes part of Redis keys and their hash tags).
    pub fn new(name: &str) -> Option<Self> {
        let usable = !name.is_empty()
            && name.len() <= MAX_PRINCIPAL
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        usable.then(|| Self(name.into()))
    }

    /// The principal's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a request is not authenticated. The detail goes to the logs; the client is told
/// only that a valid bearer token is needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// A token that does not authenticate anyone.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why the authentication settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file's content is not usable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Authenticates requests under the configured mode. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
    failures: FailedAttempts,
    challenge: Option<http::HeaderValue>,
    metadata: Option<serde_json::Value>,
}

/// The closed set of modes, each with the keys it checks against.
#[derive(Debug)]
enum Mode {
    None,
    ApiKeys(Watched<ApiKeys>),
    Jwt {
        keys: Watched<JwtKeys>,
        validation: Box<Validation>,
    },
}

impl Authenticator {
    /// Loads the key files `settings` name.
    ///
    /// # Errors
    /// When a file cannot be read or holds no usable key.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let mode = match settings.mode {
            AuthMode::None => Mode::None,
            AuthMode::ApiKeys => Mode::ApiKeys(Watched::load(&settings.api_keys_file)?),
            AuthMode::Jwt => {
                let mut validation = Validation::new(Algorithm::RS256);
                validation.algorithms = Vec::new();
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&[&settings.audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                validation.validate_nbf = true;
                validation.leeway = 30;
                Mode::Jwt {
                    keys: Watched::load(&settings.jwks_file)?,
                    validation: Box::new(validation),
                }
            }
        };
        let (challenge, metadata) = match mode {
            Mode::None => (None, None),
            _ => {
                let url = metadata_url(&settings.resource);
                let challenge =
                    http::HeaderValue::from_str(&format!("Bearer resource_metadata=\"{url}\""))
                        .ok();
                let metadata = serde_json::json!({
                    "resource": settings.resource,
                    "authorization_servers": settings.authorization_servers,
                    "bearer_methods_supported": ["header"],
                });
                (challenge, Some(metadata))
            }
        };
        Ok(Self {
            mode,
            failures: FailedAttempts::new(
                settings.max_failures_per_address,
                std::time::Duration::from_secs(settings.failure_window_secs),
            ),
            challenge,
            metadata,
        })
    }

    /// Failed attempts per client address (refused once used up).
    pub fn failures(&self) -> &FailedAttempts {
        &self.failures
    }

    /// Whether requests must carry a token.
    pub fn is_required(&self) -> bool {
        !matches!(self.mode, Mode::None)
    }

    /// The caller of a request with these headers.
    ///
    /// # Errors
    /// [`AuthError`] when a token is required and missing or invalid.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, AuthError> {
        match &self.mode {
            Mode::None => Ok(Principal::anonymous()),
            Mode::ApiKeys(keys) => keys.current().principal(bearer(headers)?),
            Mode::Jwt { keys, validation } => {
                keys.current().principal(bearer(headers)?, validation)
            }
        }
    }

    /// The `WWW-Authenticate` value of a 401, pointing at the protected-resource metadata.
    pub fn challenge(&self) -> Option<&http::HeaderValue> {
        self.challenge.as_ref()
    }

    /// The RFC 9728 protected-resource metadata, when authentication is on.
    pub fn metadata(&self) -> Option<&serde_json::Value> {
        self.metadata.as_ref()
    }

    /// Re-reads a key file that changed since it was loaded; returns whether it did.
    /// A file that became unreadable or malformed keeps the keys loaded before; one
    /// that lists fewer keys (none included: every token is then refused) replaces them,
    /// so a key removed from the file stops working at the next reload. A JWK this
    /// server cannot use is skipped with a warning.
    ///
    /// # Errors
    /// When the changed file cannot be used (the previous keys stay in force).
    pub fn reload(&self) -> Result<bool, AuthConfigError> {
        match &self.mode {
            Mode::None => Ok(false),
            Mode::ApiKeys(keys) => keys.reload(),
            Mode::Jwt { keys, .. } => keys.reload(),
        }
    }
}

/// The token of an `Authorization: Bearer` header (the only place a token is read).
fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

/// The metadata URL of `resource` (RFC 9728 §3.1: the well-known path goes between the
/// host and the resource's path).
fn metadata_url(resource: &str) -> String {
    let (origin, path) = match resource.find("://") {
        Some(i) => match resource[i + 3..].find('/') {
            Some(j) => resource.split_at(i + 3 + j),
            None => (resource, ""),
        },
        None => (resource, ""),
    };
    format!(
        "{origin}/.well-known/oauth-protected-resource{}",
        path.trim_end_matches('/')
    )
}

/// What identifies a version of a file: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

/// Keys parsed from a file, re-read when the file's [`Stamp`] changes.
#[derive(Debug)]
struct Watched<K> {
    path: PathBuf,
    state: RwLock<(Stamp, Arc<K>)>,
}

/// Keys that can be parsed from a file's text.
trait KeyFile: Sized {
    /// The keys of `text`, and a warning for each entry skipped; `Err` when the text is
    /// malformed as a whole or in a line.
    fn parse(text: &str) -> Result<(Self, Vec<String>), String>;
    /// Whether no key was found.
    fn is_empty(&self) -> bool;
}

impl<K: KeyFile> Watched<K> {
    /// Loads the file at start-up, where a file without any usable key is an error.
    fn load(path: &Path) -> Result<Self, AuthConfigError> {
        let (stamp, keys) = read_keys::<K>(path)?;
        if keys.is_empty() {
            return Err(AuthConfigError::Invalid {
                path: path.to_owned(),
                reason: "no keys".into(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            state: RwLock::new((stamp, Arc::new(keys))),
        })
    }

    fn current(&self) -> Arc<K> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn reload(&self) -> Result<bool, AuthConfigError> {
        let stamp = stamp(&self.path);
        if stamp == self.state.read().unwrap_or_else(|e| e.into_inner()).0 {
            return Ok(false);
        }
        let (stamp, keys) = read_keys::<K>(&self.path)?;
        if keys.is_empty() {
            tracing::warn!(
                path = %self.path.display(),
                "the key file lists no usable key: every token is refused until one is added"
            );
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (stamp, Arc::new(keys));
        Ok(true)
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_keys<K: KeyFile>(path: &Path) -> Result<(Stamp, K), AuthConfigError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (keys, skipped) = K::parse(&text).map_err(|reason| AuthConfigError::Invalid {
        path: path.to_owned(),
        reason,
    })?;
    for reason in skipped {
        tracing::warn!(path = %path.display(), %reason, "key skipped");
    }
    Ok((stamp, keys))
}

/// API keys by the SHA-256 of the key.
#[derive(Debug)]
struct ApiKeys(HashMap<[u8; 32], Principal>);

impl KeyFile for ApiKeys {
    fn parse(text: &str) -> Result<(Self, Vec<String>), String> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}", n + 1);
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hex), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected `<principal> <sha256 hex of the key>`"));
            };
            let principal = Principal::new(name).ok_or_else(|| bad("unusable principal"))?;
            let digest = decode_hex32(hex).ok_or_else(|| bad("not 64 hex digits"))?;
            keys.insert(digest, principal);
        }
        Ok((Self(keys), Vec::new()))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ApiKeys {
    fn principal(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.0
            .get(&digest)
            .cloned()
            .ok_or_else(|| AuthError::Invalid("unknown API key".into()))
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The verification keys of a JWKS document, each with the one algorithm it verifies.
#[derive(Debug)]
struct JwtKeys(Vec<(Option<String>, Algorithm, DecodingKey)>);

impl KeyFile for JwtKeys {
    fn parse(text: &str) -> Result<(Self, Vec<String>), String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            let Some(alg) = algorithm(jwk) else {
                skipped.push(format!("key {kid:?}: no usable signature algorithm"));
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push((kid, alg, key)),
                Err(e) => skipped.push(format!("key {kid:?}: {e}")),
            }
        }
        Ok((Self(keys), skipped))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The claims this server reads.
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtKeys {
    fn principal(&self, token: &str, validation: &Validation) -> Result<Principal, AuthError> {
        let invalid = |e: &dyn std::fmt::Display| AuthError::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => self
                .0
                .iter()
                .filter(|(k, _, _)| k.as_deref() == Some(kid.as_str()))
                .collect(),
            None => self.0.iter().collect(),
        };
        let (_, alg, key) = match candidates.as_slice() {
            [one] => *one,
            [] => return Err(AuthError::Invalid("unknown signing key".into())),
            _ => return Err(AuthError::Invalid("the token names no key (kid)".into())),
        };
        // The key decides the algorithm, never the token's header.
        let mut validation = validation.clone();
        validation.algorithms = vec![*alg];
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| invalid(&e))?;
        Principal::new(&data.claims.sub).ok_or_else(|| {
            AuthError::Invalid("the token's subject is not a usable principal".into())
        })
    }
}

/// The algorithm a JWK verifies: its `alg`, or the one its key type implies.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            KeyAlgorithm::HS256 => Some(Algorithm::HS256),
            KeyAlgorithm::HS384 => Some(Algorithm::HS384),
            KeyAlgorithm::HS512 => Some(Algorithm::HS512),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_bounded_and_key_safe() {
        assert!(Principal::new("alice@example.com").is_some());
        for bad in ["", "a b", "a{b}", "é", &"x".repeat(129)] {
            assert!(Principal::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn api_key_files_parse_with_comments_and_name_bad_lines() {
        let hex = format!("{:x}", Sha256::digest(b"secret-a"));
        let (keys, _) = ApiKeys::parse(&format!("# keys\nalice {hex} # laptop\n\n")).unwrap();
        assert_eq!(keys.principal("secret-a").unwrap().as_str(), "alice");
        assert!(keys.principal("secret-b").is_err());
        let err = ApiKeys::parse("alice nothex").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(ApiKeys::parse("# none\n").unwrap().0.is_empty());
    }

    /// A key removed from the file stops working at the next reload, also when no key
    /// is left; a malformed file keeps the keys before it; at start-up a file without
    /// keys is refused.
    #[test]
    fn a_reload_drops_removed_keys_even_the_last_one() {
        let path = std::env::temp_dir().join(format!("api-keys-reload-{}", std::process::id()));
        let line = |name: &str, key: &[u8]| format!("{name} {:x}\n", Sha256::digest(key));
        let write = |text: &str| {
            std::fs::write(&path, text).unwrap();
            // A new stamp whatever the file system's time resolution.
            let later = SystemTime::now() + std::time::Duration::from_secs(text.len() as u64 + 1);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        write(&(line("alice", b"key-a") + &line("bob", b"key-b")));
        let keys = Watched::<ApiKeys>::load(&path).unwrap();
        assert!(keys.current().principal("key-b").is_ok());

        write(&line("alice", b"key-a"));
        assert!(keys.reload().unwrap());
        assert!(
            keys.current().principal("key-b").is_err(),
            "bob's key was removed"
        );
        assert!(keys.current().principal("key-a").is_ok());

        write("alice not-hex\n");
        assert!(keys.reload().is_err());
        assert!(
            keys.current().principal("key-a").is_ok(),
            "a malformed file changes nothing"
        );

        write("# every key revoked\n");
        assert!(keys.reload().unwrap());
        assert!(keys.current().principal("key-a").is_err(), "no key is left");

        assert!(
            Watched::<ApiKeys>::load(&path).is_err(),
            "no keys at start-up"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn metadata_urls_insert_the_well_known_path() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://mcp.example.com"),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
    }
}
