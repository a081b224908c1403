//! The resources: the template `primes://below/{limit}` and one listed member of it,
//! read as JSON `{limit, count, largest}` from the same cache entry the `prime_count`
//! tool uses, with SEP-2549 cache hints for 2026-07-28 clients.

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
        uri: String,
        hints: bool,
    ) -> Result<ReadResourceResponse, McpError> {
        let Some(limit) = uri
            .strip_prefix(PRIMES_URI)
            .and_then(|l| l.parse::<u64>().ok())
        else {
            return Err(McpError::resource_not_found(
                format!("unknown resource `{uri}`; resources look like {PRIMES_URI}<limit>"),
                None,
            ));
        };
        let max = self.tools.prime_count_max_limit;
        if limit > max {
            return Err(McpError::invalid_params(
                format!("`limit` must be at most {max} (got {limit})"),
                None,
            ));
        }
        let ttl = Duration::from_secs(self.tools.prime_count_cache_ttl_secs);
        let (_, json) = primes::cached(&self.cache, &self.cpu, limit, ttl, 1, |_, _| {})
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
