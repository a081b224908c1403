//! Tool-result caching: a tool declared cacheable (TTL and scope) has its successful
//! results served from the two-level cache for the same arguments.

use std::time::Duration;

use rmcp::model::{CacheScope, JsonObject};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Who may share a cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only calls in the same session.
    Session,
    /// Only calls by the same principal.
    Principal,
    /// Every caller.
    Public,
}

impl Scope {
    /// The SEP-2549 scope clients and intermediaries should apply.
    pub fn hint(self) -> CacheScope {
        match self {
            Scope::Public => CacheScope::Public,
            Scope::Session | Scope::Principal => CacheScope::Private,
        }
    }
}

/// A tool's caching declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a result is served from the cache.
    pub ttl: Duration,
    /// Who shares it.
    pub scope: Scope,
}

/// The cache key of a call: tool, scope owner and a digest of the canonical arguments
/// (the `session_id` handle is part of the scope, not of the arguments).
pub fn key(tool: &str, scope_owner: &str, args: Option<&JsonObject>) -> String {
    let mut canonical = args.cloned().unwrap_or_default();
    canonical.remove("session_id");
    // serde_json's map is ordered by key, so equal arguments serialize identically.
    let digest = Sha256::digest(serde_json::Value::Object(canonical).to_string().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("tool:{tool}:{scope_owner}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn equal_arguments_share_a_key_whatever_their_order() {
        let a = obj(serde_json::json!({"limit": 10, "mode": "x", "session_id": "s1"}));
        let b = obj(serde_json::json!({"session_id": "s2", "mode": "x", "limit": 10}));
        assert_eq!(key("t", "public", Some(&a)), key("t", "public", Some(&b)));
        assert_ne!(key("t", "public", Some(&a)), key("t", "alice", Some(&a)));
        assert_ne!(key("t", "public", Some(&a)), key("u", "public", Some(&a)));
        let c = obj(serde_json::json!({"limit": 11, "mode": "x"}));
        assert_ne!(key("t", "public", Some(&a)), key("t", "public", Some(&c)));
        assert_eq!(key("t", "p", None), key("t", "p", Some(&JsonObject::new())));
    }
}
