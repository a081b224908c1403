//! [`RequestStates`]: seals and opens the `requestState` of multi round-trip requests
//! (SEP-2322, 2026-07-28) with the `[mrtr]` key ring, so a retry that reaches another
//! replica opens the state the first one sealed, and a forged or tampered state is
//! refused. Any handler of the endpoint can use it: [`McpState::request_states`].
//!
//! Built on rmcp's `RequestStateCodec` (HMAC-SHA-256, named keys): the first key of
//! `mrtr.keys` seals, every key opens, so a rotation adds the new key first and drops
//! the old one once the states it sealed have expired. Without keys (memory backend
//! only, the configuration refuses it with Redis) the process draws a random key of
//! its own and says so at start-up.
//!
//! [`McpState::request_states`]: crate::mcp::McpState::request_states

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{RequestStateCodec, RequestStateError, SealOptions},
    service::RequestContext,
};
use serde::{Serialize, de::DeserializeOwned};

use super::binding::caller;
use crate::config::{KeyRing, MIN_KEY_BYTES};

/// What a state sealed during `ctx` for `name` (a tool, a prompt) is bound to: the
/// caller and the name, so it cannot be replayed by someone else or against another
/// tool.
pub fn bound_to(ctx: &RequestContext<RoleServer>, name: &str) -> Vec<u8> {
    let mut context = caller(ctx).as_str().as_bytes().to_vec();
    context.push(0);
    context.extend_from_slice(name.as_bytes());
    context
}

/// Seals and opens `requestState` values. Cheap to clone; every replica configured
/// with the same ring opens what any of them sealed.
#[derive(Clone, Debug)]
pub struct RequestStates {
    codec: RequestStateCodec,
}

/// Why a `requestState` could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum RequestStateKeyError {
    /// rmcp refused the ring (it repeats the configuration's checks).
    #[error("mrtr.keys: {0}")]
    Ring(#[from] RequestStateError),
    /// The operating system gave no random bytes for a process key.
    #[error("no random source for a process requestState key: {0}")]
    Random(String),
}

impl RequestStates {
    /// The codec of `ring`, or with `None` one random key of this process (fit for a
    /// single replica only: another process cannot open what it seals).
    ///
    /// # Errors
    /// [`RequestStateKeyError`] when rmcp refuses the ring or no random key can be had.
    pub fn new(ring: Option<&KeyRing>) -> Result<Self, RequestStateKeyError> {
        let codec = match ring {
            Some(ring) => {
                let keys = ring.keys().iter().map(|k| (k.id.clone(), k.secret.clone()));
                tracing::info!(
                    sealing_key = %ring.sealing().id,
                    keys = ring.keys().len(),
                    "requestState key ring loaded"
                );
                RequestStateCodec::new_with_keyring(ring.sealing().id.clone(), keys)?
            }
            None => {
                let mut key = vec![0u8; MIN_KEY_BYTES];
                getrandom::fill(&mut key)
                    .map_err(|e| RequestStateKeyError::Random(e.to_string()))?;
                tracing::warn!(
                    "mrtr.keys is empty: requestState is sealed with a random key of this \
                     process, which no other replica (and no restart) can open; set \
                     mrtr.keys before running more than one replica"
                );
                RequestStateCodec::new_with_keyring("process", [("process", key)])?
            }
        };
        Ok(Self { codec })
    }

    /// Seals `value`, bound to `context` (who and what it is for: the caller, the tool)
    /// and valid for `ttl`.
    ///
    /// # Errors
    /// Internal error when `value` does not serialize.
    pub fn seal<T: Serialize>(
        &self,
        value: &T,
        context: &[u8],
        ttl: Duration,
    ) -> Result<String, McpError> {
        let options = SealOptions::new().associated_data(context).ttl(ttl);
        self.codec
            .seal_json_with(value, &options)
            .map_err(|e| McpError::internal_error(format!("sealing requestState: {e}"), None))
    }

    /// Opens `state`, which must have been sealed for `context` by a key of the ring and
    /// not have expired.
    ///
    /// # Errors
    /// Invalid params for anything else (forged, tampered, another caller's or tool's,
    /// sealed with an unknown key, expired): the client starts the request again.
    pub fn open<T: DeserializeOwned>(&self, state: &str, context: &[u8]) -> Result<T, McpError> {
        self.codec.open_json_with(state, context).map_err(|e| {
            let why = match e {
                RequestStateError::Expired => "has expired",
                RequestStateError::UnknownKeyId => {
                    "was sealed with a key this server no longer has"
                }
                _ => "failed integrity verification",
            };
            McpError::invalid_params(
                format!("requestState {why}; start the request again without it"),
                None,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MrtrSettings;

    fn ring(entries: &str) -> KeyRing {
        let settings: MrtrSettings =
            serde_json::from_value(serde_json::json!({ "keys": entries })).unwrap();
        settings.key_ring().unwrap().unwrap()
    }

    const A: &str = "a:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const B: &str = "b:YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=";
    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn rotation_opens_states_of_the_old_key_and_seals_with_the_new() {
        let old = RequestStates::new(Some(&ring(A))).unwrap();
        let rotated = RequestStates::new(Some(&ring(&format!("{B},{A}")))).unwrap();
        let sealed = old.seal(&7u32, b"ctx", TTL).unwrap();
        assert_eq!(rotated.open::<u32>(&sealed, b"ctx").unwrap(), 7);
        let new = rotated.seal(&8u32, b"ctx", TTL).unwrap();
        let err = old.open::<u32>(&new, b"ctx").unwrap_err();
        assert!(err.message.contains("no longer has"), "{}", err.message);
    }

    #[test]
    fn another_context_or_a_changed_byte_is_refused() {
        let states = RequestStates::new(Some(&ring(A))).unwrap();
        let sealed = states.seal(&1u32, b"alice\0tool", TTL).unwrap();
        assert!(states.open::<u32>(&sealed, b"bob\0tool").is_err());
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let err = states.open::<u32>(&tampered, b"alice\0tool").unwrap_err();
        assert!(err.message.contains("integrity"), "{}", err.message);
    }

    #[test]
    fn process_keys_differ() {
        let one = RequestStates::new(None).unwrap();
        let two = RequestStates::new(None).unwrap();
        let sealed = one.seal(&1u32, b"", TTL).unwrap();
        assert_eq!(one.open::<u32>(&sealed, b"").unwrap(), 1);
        assert!(two.open::<u32>(&sealed, b"").is_err());
    }
}
