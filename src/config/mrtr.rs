//! `[mrtr]`: the key ring that seals MRTR `requestState` (SEP-2322), from `mrtr.keys` or
//! the file `mrtr.keys_file` names.
//!
//! The keys are secrets: [`KeyRing`] never prints them (its `Debug` shows the key ids
//! only), and configuration errors name the entry by position, never by content. A key
//! this repository publishes (an example of the deployment files, the test harness's)
//! seals nothing anyone could not forge: it is refused unless `mrtr.allow_public_keys`
//! says the replica serves a local, throw-away stack.

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

/// The secrets this repository has published as examples, with where: whoever read
/// them can seal a `requestState` that a replica using them opens. Compared decoded, so
/// another id or base64 spelling does not pass.
const PUBLISHED: &[(&str, &str)] = &[
    (
        "the fallback docker-compose.yml once had",
        "Y29tcG9zZS1sb2NhbC1leGFtcGxlLWtleS1jaGFuZ2UtbWU=",
    ),
    (
        "the example of k8s/secret.example.yaml",
        "RVhBTVBMRS1DSEFOR0UtTUUtRVhBTVBMRS1DSEFOR0UtTUUtMDE=",
    ),
    (
        "the test harness's (testkit)",
        "dGVzdC1yZXF1ZXN0LXN0YXRlLWtleS0wMTIzNDU2Nzg5YWJjZGVm",
    ),
];

/// The MRTR `requestState` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct MrtrSettings {
    /// `id:base64secret` entries; the first seals, every one opens (rotation). Required
    /// with the Redis backend: every replica must open what any other one sealed.
    keys: Entries,
    /// A file holding the entries instead (separated by commas or new lines), read at
    /// start-up: a secret mounted as a file (a Compose volume, a Kubernetes Secret
    /// volume). Empty = `keys` is the ring. Optional, as is `allow_public_keys`, in a
    /// section written before either existed.
    #[serde(default)]
    keys_file: String,
    /// Whether a key this repository published as an example may seal states: only for
    /// a local stack nobody else reaches.
    #[serde(default)]
    allow_public_keys: bool,
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
    /// The configured key ring (read from `mrtr.keys_file` when it is set); `None` when
    /// no key is configured.
    ///
    /// # Errors
    /// `mrtr.keys` (or `mrtr.keys_file`) when an entry is not `id:base64`, an id is
    /// empty, too long or repeated, a secret is shorter than [`MIN_KEY_BYTES`], or a
    /// secret is a published one and `mrtr.allow_public_keys` is off; `mrtr.keys_file`
    /// when both are set or the file cannot be read.
    pub fn key_ring(&self) -> Result<Option<KeyRing>, ConfigError> {
        let (setting, entries) = self.entries()?;
        let invalid = |position: usize, reason: &str| ConfigError::Invalid {
            key: setting,
            reason: format!("entry {position}: {reason}"),
        };
        let mut ring: Vec<NamedKey> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
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
            if !self.allow_public_keys
                && let Some((source, _)) = PUBLISHED
                    .iter()
                    .find(|(_, published)| STANDARD.decode(published).is_ok_and(|p| p == secret))
            {
                return Err(invalid(
                    position,
                    &format!(
                        "the secret is a published example key ({source}): anyone can forge \
                         requestState with it. Draw one with `openssl rand -base64 32`, or \
                         for a local stack nobody else reaches set \
                         mrtr.allow_public_keys = true"
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

    /// The raw entries and the setting they come from: `mrtr.keys`, or the lines and
    /// commas of the file `mrtr.keys_file` names.
    fn entries(&self) -> Result<(&'static str, Vec<String>), ConfigError> {
        if self.keys_file.is_empty() {
            return Ok(("mrtr.keys", self.keys.0.clone()));
        }
        let invalid = |reason: String| ConfigError::Invalid {
            key: "mrtr.keys_file",
            reason,
        };
        if !self.keys.0.is_empty() {
            return Err(invalid(
                "set either mrtr.keys or mrtr.keys_file, not both".to_owned(),
            ));
        }
        let text = std::fs::read_to_string(&self.keys_file)
            .map_err(|e| invalid(format!("{} cannot be read: {e}", self.keys_file)))?;
        let entries = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(("mrtr.keys_file", entries))
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

    fn settings(keys: &[&str]) -> MrtrSettings {
        MrtrSettings {
            keys: Entries(keys.iter().map(|k| (*k).to_owned()).collect()),
            keys_file: String::new(),
            allow_public_keys: false,
        }
    }

    fn ring(keys: &[&str]) -> Result<Option<KeyRing>, ConfigError> {
        settings(keys).key_ring()
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

    /// The key rings this repository still ships, as they are written there.
    fn shipped_rings() -> Vec<(&'static str, String)> {
        let k8s = include_str!("../../k8s/secret.example.yaml")
            .lines()
            .find_map(|line| line.trim().strip_prefix("keys: "))
            .expect("secret.example.yaml has an example key ring")
            .trim_matches('"')
            .to_owned();
        vec![
            ("k8s/secret.example.yaml", k8s),
            ("testkit", testkit::replica::TEST_MRTR_KEYS.to_owned()),
        ]
    }

    #[test]
    fn a_published_key_is_refused_by_setting_and_position_unless_allowed() {
        let mut rings = shipped_rings();
        rings.push((
            "docker-compose.yml, once",
            "compose-local:Y29tcG9zZS1sb2NhbC1leGFtcGxlLWtleS1jaGFuZ2UtbWU=".to_owned(),
        ));
        for (source, published) in rings {
            let (_, secret) = published.split_once(':').unwrap();
            // Second in the ring, under another id, without its padding: still refused.
            let renamed = format!("mine:{}", secret.trim_end_matches('='));
            let fresh = format!("new:{SECRET}");
            let err = ring(&[&fresh, &renamed]).unwrap_err().to_string();
            assert!(
                err.contains("mrtr.keys")
                    && err.contains("entry 2")
                    && err.contains("published")
                    && err.contains("mrtr.allow_public_keys"),
                "{source}: {err}"
            );
            assert!(!err.contains(secret.trim_end_matches('=')), "{err}");
            let mut allowed = settings(&[&published]);
            allowed.allow_public_keys = true;
            assert!(allowed.key_ring().unwrap().is_some(), "{source}");
        }
        assert!(ring(&[&format!("new:{SECRET}")]).unwrap().is_some());
    }

    #[test]
    fn a_key_file_holds_the_ring_and_is_checked_as_the_setting_is() {
        let dir = std::env::temp_dir().join(format!("stateful-mcp-mrtr-{}", crate::ids::mint()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        let from_file = |contents: &str| {
            std::fs::write(&file, contents).unwrap();
            let mut settings = settings(&[]);
            settings.keys_file = file.to_string_lossy().into_owned();
            settings.key_ring()
        };
        let ring = from_file(&format!("new:{SECRET}\nold:{SECRET},\n\n"))
            .unwrap()
            .unwrap();
        assert_eq!(ring.sealing().id, "new");
        assert_eq!(ring.keys().len(), 2);
        assert!(from_file("").unwrap().is_none(), "an empty file is no key");
        let published = format!("k1:{}", PUBLISHED[1].1);
        let err = from_file(&published).unwrap_err().to_string();
        assert!(
            err.contains("mrtr.keys_file") && err.contains("entry 1") && err.contains("published"),
            "{err}"
        );

        let mut both = settings(&[&format!("k:{SECRET}")]);
        both.keys_file = file.to_string_lossy().into_owned();
        let err = both.key_ring().unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = from_file_missing(&file);
        assert!(
            err.contains("mrtr.keys_file") && err.contains("cannot be read"),
            "{err}"
        );
    }

    /// The error of a ring whose file `file` does not exist.
    fn from_file_missing(file: &std::path::Path) -> String {
        let mut settings = settings(&[]);
        settings.keys_file = file.to_string_lossy().into_owned();
        settings.key_ring().unwrap_err().to_string()
    }
}
