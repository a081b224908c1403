//! The session record and its tolerant decoding from a stored hash.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

/// Schema version written into every record (the `v` field). Readers accept any version:
/// unknown fields are ignored and missing ones take defaults, so two releases can run
/// side by side during a rolling upgrade. Within a version, changes are additive only
/// (a new field is optional and its absence means what the older release did); an
/// incompatible change bumps it, and ships in a release that reads both forms before
/// one that writes the new one (README, "Upgrading").
pub const SCHEMA_VERSION: u32 = 1;

/// Prefix of the hash fields that hold data values.
pub(crate) const DATA_FIELD_PREFIX: &str = "d:";

/// One session as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// The unguessable id (also the `Mcp-Session-Id` of a 2025-era transport session).
    pub id: String,
    /// The principal that owns it.
    pub owner: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last access time, milliseconds since the Unix epoch.
    pub last_accessed_ms: i64,
    /// JSON values by key.
    pub data: BTreeMap<String, Value>,
    /// The client's self-description, when known.
    pub client_info: Option<Value>,
    /// Schema version of the stored record.
    pub version: u32,
}

/// The identity and times of a session, for listings and stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last access time, milliseconds since the Unix epoch.
    pub last_accessed_ms: i64,
}

/// One stored session as an operator reads it (`stateful-mcp sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The session id (never printed: a bearer credential for its state).
    pub id: String,
    /// The principal that owns it.
    pub owner: String,
    /// Whether it is a 2025-era transport session (else a 2026-07-28 handle).
    pub transport: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last access time flushed to the record, milliseconds since the Unix epoch.
    pub last_accessed_ms: i64,
    /// What is left of its sliding expiry, ms (`PTTL`: -1 none, -2 just ended).
    pub expires_in_ms: i64,
    /// The replica holding its worker (2025-era sessions under a lease).
    pub holder: Option<String>,
    /// The end of that lease, milliseconds since the Unix epoch (Redis's clock).
    pub lease_until_ms: Option<i64>,
}

impl Session {
    /// Builds a session from a stored hash; `None` when the hash is empty (no record).
    pub(crate) fn from_fields(id: &str, mut fields: HashMap<String, String>) -> Option<Self> {
        if fields.is_empty() {
            return None;
        }
        let int = |fields: &HashMap<String, String>, name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_default()
        };
        let created_at_ms = int(&fields, "created");
        let last_accessed_ms = int(&fields, "accessed").max(created_at_ms);
        let version = fields
            .get("v")
            .and_then(|v| v.parse().ok())
            .unwrap_or(SCHEMA_VERSION);
        let owner = fields.remove("owner").unwrap_or_default();
        let client_info = fields
            .remove("client")
            .and_then(|raw| serde_json::from_str(&raw).ok());
        let data = decode_data(fields.into_iter().filter_map(|(k, v)| {
            k.strip_prefix(DATA_FIELD_PREFIX)
                .map(|key| (key.to_owned(), v))
        }));
        Some(Self {
            id: id.to_owned(),
            owner,
            created_at_ms,
            last_accessed_ms,
            data,
            client_info,
            version,
        })
    }

    /// The summary of this session.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id.clone(),
            created_at_ms: self.created_at_ms,
            last_accessed_ms: self.last_accessed_ms,
        }
    }
}

/// Parses stored data values, keeping undecodable ones as strings so a record written by
/// a newer replica never fails to load.
fn decode_data(raw: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, Value> {
    raw.into_iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
            (k, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_current_records() {
        let s = Session::from_fields(
            "id1",
            fields(&[
                ("v", "1"),
                ("owner", "alice"),
                ("created", "1000"),
                ("accessed", "2000"),
                ("client", r#"{"name":"c","version":"1"}"#),
                ("d:counter", "5"),
                ("d:history", r#"["a"]"#),
                ("init", "{}"),
                ("bytes", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(s.owner, "alice");
        assert_eq!(s.last_accessed_ms, 2000);
        assert_eq!(s.data["counter"], 5);
        assert_eq!(s.data["history"][0], "a");
        assert_eq!(s.client_info.unwrap()["name"], "c");
        assert_eq!(s.data.len(), 2, "only d: fields are data");
    }

    #[test]
    fn tolerates_newer_and_partial_records() {
        let s = Session::from_fields(
            "id2",
            fields(&[
                ("v", "7"),
                ("owner", "bob"),
                ("created", "1000"),
                ("future_field", "x"),
                ("client", "not json"),
                ("d:raw", "not json either"),
            ]),
        )
        .unwrap();
        assert_eq!(s.version, 7);
        assert_eq!(s.last_accessed_ms, 1000);
        assert_eq!(s.client_info, None);
        assert_eq!(s.data["raw"], "not json either");
        assert!(Session::from_fields("id3", HashMap::new()).is_none());
    }

    /// Every field release 0.1.0 writes into a session's hash (`create_parts.lua`, the
    /// lease, the retry records' byte count), as this release reads it.
    #[test]
    fn reads_the_previous_releases_records() {
        let s = Session::from_fields(
            "id4",
            fields(&[
                ("v", "1"),
                ("owner", "carol"),
                ("created", "1000"),
                ("accessed", "1500"),
                ("bytes", "2"),
                ("reserved", "2000"),
                ("client", r#"{"name":"c","version":"1"}"#),
                ("init", r#"{"protocolVersion":"2025-11-25"}"#),
                ("node", "replica-a"),
                ("node_url", "http://10.0.0.1:8080"),
                ("lease", "11500"),
                ("rbytes", "64"),
                ("d:counter", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.owner, "carol");
        assert_eq!((s.created_at_ms, s.last_accessed_ms), (1000, 1500));
        assert_eq!(s.client_info.unwrap()["name"], "c");
        assert_eq!(s.data.len(), 1, "{:?}", s.data);
        assert_eq!(s.data["counter"], 3);
    }

    /// A record of a later schema version with fields this release does not know keeps
    /// what it does know: the owner check and the values still work on it.
    #[test]
    fn reads_what_it_knows_of_a_later_schema_version() {
        let s = Session::from_fields(
            "id5",
            fields(&[
                ("v", "2"),
                ("owner", "dave"),
                ("created", "1000"),
                ("accessed", "3000"),
                ("region", "eu"),
                ("x:quota", r#"{"calls":5}"#),
                ("d:counter", "9"),
                ("d:history", r#"["a","b"]"#),
            ]),
        )
        .unwrap();
        assert_eq!(s.version, 2);
        assert_eq!(s.owner, "dave");
        assert_eq!(s.last_accessed_ms, 3000);
        assert_eq!(s.data.len(), 2, "unknown fields are not data: {:?}", s.data);
        assert_eq!(s.data["counter"], 9);
        assert_eq!(s.data["history"][1], "b");
    }

    /// A record without `v` (written before the field existed) is read as the current
    /// version.
    #[test]
    fn a_record_without_a_version_is_the_current_one() {
        let s = Session::from_fields("id6", fields(&[("owner", "erin"), ("created", "5")]));
        assert_eq!(s.unwrap().version, SCHEMA_VERSION);
    }
}
