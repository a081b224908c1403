//! `[mrtr]`: the key ring that seals MRTR `requestState` (SEP-2322).
//!
//! The keys are secrets: [`KeyRing`] never prints them (its `Debug` shows the key ids
//! only), and configuration errors name the entry by position, never by content.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use serde::Deserialize;

use super::ConfigError;

/// Fewest bytes of key material a `requestState` key may have (HMAC-SHA-256: a key
/// shorter than the hash adds no strength beyond its own length).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest key id: it travels in every sealed state.
pub const MAX_KEY_ID_BYTES: usize = 64;

/// The MRTR `requestState` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct MrtrSettings {
    /// `id:base64secret` entries; the first seals, every one opens (rotation). Required
    /// with the Redis backend: every replica must open what any other one sealed.
    keys: Entries,
}

/// The raw `mrtr.keys` entries, which `Debug` (and so any print of the settings) never
/// shows.
#[derive(Clone, Deserialize)]
struct Entries(#[serde(deserialize_with = "super::comma_list")] Vec<String>);

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} redacted entries>", self.0.len())
    }
}

/// One named `requestState` key.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedKey {
    /// Its id, carried in the sealed state so the ring finds the key that opens it.
    pub id: String,
    /// The secret bytes, at least [`MIN_KEY_BYTES`].
    pub secret: Vec<u8>,
}

/// The parsed, non-empty key ring: the sealing key first.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing(Vec<NamedKey>);

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| format!("{}:<redacted>", k.id)))
            .finish()
    }
}

impl KeyRing {
    /// The key that seals new states.
    pub fn sealing(&self) -> &NamedKey {
        &self.0[0]
    }

    /// Every key, the sealing one first.
    pub fn keys(&self) -> &[NamedKey] {
        &self.0
    }
}

impl MrtrSettings {
    /// The configured key ring; `None` when no key is configured.
    ///
    /// # Errors
    /// `mrtr.keys` when an entry is not `id:base64`, an id is empty, too long or
    /// repeated, or a secret is shorter than [`MIN_KEY_BYTES`].
    pub fn key_ring(&self) -> Result<Option<KeyRing>, ConfigError> {
        let invalid = |position: usize, reason: &str| ConfigError::Invalid {
            key: "mrtr.keys",
            reason: format!("entry {position}: {reason}"),
        };
        let mut ring: Vec<NamedKey> = Vec::with_capacity(self.keys.0.len());
        for (i, entry) in self.keys.0.iter().enumerate() {
            let position = i + 1;
            let Some((id, encoded)) = entry.split_once(':') else {
                return Err(invalid(position, "must be `id:base64secret`"));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > MAX_KEY_ID_BYTES
                || !id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    position,
                    &format!("the id must be 1 to {MAX_KEY_ID_BYTES} visible ASCII characters"),
                ));
            }
            if ring.iter().any(|k| k.id == id) {
                return Err(invalid(position, "repeats the id of an earlier key"));
            }
            let encoded = encoded.trim();
            let secret = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(encoded).ok())
                .ok_or_else(|| invalid(position, "the secret is not base64"))?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(invalid(
                    position,
                    &format!(
                        "the secret must decode to at least {MIN_KEY_BYTES} bytes \
                         (`openssl rand -base64 32`)"
                    ),
                ));
            }
            ring.push(NamedKey {
                id: id.to_owned(),
                secret,
            });
        }
        Ok((!ring.is_empty()).then_some(KeyRing(ring)))
    }

    /// Checks that every `mrtr.keys` entry parses; whether a key is required depends on
    /// the backend (`Settings::validate` checks that).
    ///
    /// # Errors
    /// As [`MrtrSettings::key_ring`].
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.key_ring().map(drop)
    }
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:<redacted>", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> Result<Option<KeyRing>, ConfigError> {
        MrtrSettings {
            keys: Entries(keys.iter().map(|k| (*k).to_owned()).collect()),
        }
        .key_ring()
    }

    const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn the_first_key_seals_and_secrets_never_print() {
        let ring = ring(&[&format!("new:{SECRET}"), &format!("old:{SECRET}")])
            .unwrap()
            .unwrap();
        assert_eq!(ring.sealing().id, "new");
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.sealing().secret, b"0123456789abcdef0123456789abcdef");
        let shown = format!("{ring:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains("0123"),
            "{shown}"
        );
        assert!(shown.contains("new") && shown.contains("old"), "{shown}");
    }

    #[test]
    fn no_keys_is_none() {
        assert!(ring(&[]).unwrap().is_none());
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_them() {
        for bad in [
            "no-colon".to_owned(),
            format!(":{SECRET}"),
            "short:c2hvcnQ=".to_owned(),
            "bad:!!!not base64!!!".to_owned(),
            format!("{}:{SECRET}", "x".repeat(MAX_KEY_ID_BYTES + 1)),
        ] {
            let err = ring(&[&bad]).unwrap_err().to_string();
            assert!(
                err.contains("mrtr.keys") && err.contains("entry 1"),
                "{err}"
            );
            assert!(!err.contains(SECRET) && !err.contains("c2hvcnQ"), "{err}");
        }
        let dup = format!("k:{SECRET}");
        let err = ring(&[&dup, &dup]).unwrap_err().to_string();
        assert!(err.contains("entry 2"), "{err}");
    }
}
