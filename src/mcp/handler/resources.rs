//! The resources: the template `primes://below/{limit}` and one listed member of it,
//! read as JSON `{limit, count, largest}` from the same cache entry the `prime_count`
//! tool uses, with SEP-2549 cache hints for 2026-07-28 clients; an unknown resource is
//! a resource-not-found error whose data names the URI (SEP-2164).

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData as McpError,
    model::{
        CacheScope, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResponse,
        ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    },
};

use crate::{cache::CacheManager, config::ToolSettings, cpu::CpuPool, primes};

/// The URI prefix of the `primes_below` resources.
const PRIMES_URI: &str = "primes://below/";

/// Lists and reads the resources. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Resources {
    cache: CacheManager,
    cpu: CpuPool,
    tools: Arc<ToolSettings>,
}

impl Resources {
    /// Resources served from `cache` (computed on `cpu`) under the tools' limits and TTLs.
    pub(crate) fn new(cache: CacheManager, cpu: CpuPool, tools: Arc<ToolSettings>) -> Self {
        Self { cache, cpu, tools }
    }

    /// The concrete resources: one member of the template, so a client can read a
    /// resource without knowing the template.
    pub(crate) fn list(&self, hints: bool) -> ListResourcesResult {
        let example = Resource::new(format!("{PRIMES_URI}1000000"), "primes_below_1000000")
            .with_title("Primes below one million")
            .with_mime_type("application/json");
        let mut result = ListResourcesResult::with_all_items(vec![example]);
        if hints {
            result.ttl_ms = Some(self.list_ttl_ms());
            result.cache_scope = Some(CacheScope::Public);
        }
        result
    }

    /// The resource templates.
    pub(crate) fn templates(&self, hints: bool) -> ListResourceTemplatesResult {
        let template = ResourceTemplate::new(format!("{PRIMES_URI}{{limit}}"), "primes_below")
            .with_title("Primes below a limit")
            .with_description(
                "The number of primes below `limit` and the largest of them, as JSON \
                 (the prime_count tool's answer, from the same cache).",
            )
            .with_mime_type("application/json");
        let mut result = ListResourceTemplatesResult::with_all_items(vec![template]);
        if hints {
            result.ttl_ms = Some(self.list_ttl_ms());
            result.cache_scope = Some(CacheScope::Public);
        }
        result
    }

    /// Reads `uri`.
    ///
    /// # Errors
    /// Resource-not-found for a URI outside the template, invalid-params for a limit
    /// above `tools.prime_count_max_limit`, internal when the cache fails.
    pub(crate) async fn read(
        &self,
        principal: &str,
        uri: String,
        hints: bool,
    ) -> Result<ReadResourceResponse, McpError> {
        let Some(limit) = uri
            .strip_prefix(PRIMES_URI)
            .and_then(|l| l.parse::<u64>().ok())
        else {
            return Err(not_found(&uri));
        };
        let max = self.tools.prime_count_max_limit;
        if limit > max {
            return Err(McpError::invalid_params(
                format!("`limit` must be at most {max} (got {limit})"),
                None,
            ));
        }
        let ttl = Duration::from_secs(self.tools.prime_count_cache_ttl_secs);
        let (_, json) = primes::cached(&self.cache, &self.cpu, principal, limit, ttl, 1, |_, _| {})
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let mut result = ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
            uri,
            mime_type: Some("application/json".into()),
            text: String::from_utf8_lossy(&json).into_owned(),
            meta: None,
        }]);
        if hints {
            // From the same setting as the prime_count tool's cache entry.
            result.ttl_ms = Some(ttl.as_millis().try_into().unwrap_or(u64::MAX));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(ReadResourceResponse::Complete(result))
    }

    fn list_ttl_ms(&self) -> u64 {
        self.tools.list_ttl_secs.saturating_mul(1000)
    }
}

/// Longest part of a client's URI an error repeats.
const MAX_ECHOED_URI: usize = 512;

/// Resource-not-found for `uri`, naming it in the error data as SEP-2164 asks (at most
/// [`MAX_ECHOED_URI`] bytes of it: the client sent it, the error repeats it).
fn not_found(uri: &str) -> McpError {
    let mut end = uri.len().min(MAX_ECHOED_URI);
    while !uri.is_char_boundary(end) {
        end -= 1;
    }
    let uri = &uri[..end];
    McpError::resource_not_found(
        format!("unknown resource `{uri}`; resources look like {PRIMES_URI}<limit>"),
        Some(serde_json::json!({ "uri": uri })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_uri_within_a_bound() {
        let e = not_found("test://nope");
        assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);
        assert_eq!(e.data, Some(serde_json::json!({ "uri": "test://nope" })));
        let long = format!("x://{}", "é".repeat(600));
        let data = not_found(&long).data.unwrap();
        let echoed = data["uri"].as_str().unwrap();
        assert!(echoed.len() <= MAX_ECHOED_URI && long.starts_with(echoed));
    }
}
