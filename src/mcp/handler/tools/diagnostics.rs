//! The diagnostics family: `cache_stats` and `resource_stats`, the figures of this
//! replica's cache, managed resources and Redis pool.

use rmcp::{
    ErrorData as McpError,
    handler::server::common::schema_for_output,
    schemars::{self, JsonSchema},
    tool, tool_router,
};
use serde::Serialize;

use super::{ToolResult, reply};
use crate::{cache::CacheStats, managed::KindStats, mcp::handler::StatefulServer};

/// `resource_stats` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResourceStatsOutput {
    /// The replica these figures are from.
    pub replica_id: String,
    /// Open resources, references, idle counts and totals by kind.
    pub kinds: std::collections::BTreeMap<String, KindStats>,
    /// The replica's Redis pool (absent on the memory backend).
    pub redis_pool: Option<PoolStats>,
}

/// The Redis pool's figures.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolStats {
    /// Open connections.
    pub size: u64,
    /// Largest number of connections.
    pub max_size: u64,
    /// Open connections not checked out.
    pub available: u64,
    /// Callers waiting for a connection.
    pub waiting: u64,
    /// Connections opened since start.
    pub created_total: u64,
    /// Checkouts since start.
    pub borrowed_total: u64,
    /// Checkouts given back since start.
    pub returned_total: u64,
    /// Failed checkouts and connections dropped after transport errors since start.
    pub errors_total: u64,
}

#[tool_router(router = diagnostics_tools, vis = "pub(super)")]
impl StatefulServer {
    /// This replica's cache figures.
    #[tool(
        description = "Show this replica's cache statistics: hits, misses, hit rate, hits per \
                       level, loader calls, errors, L1 usage and invalidations.",
        output_schema = schema_for_output::<CacheStats>()
    )]
    async fn cache_stats(&self) -> ToolResult {
        let s = self.cache.stats();
        reply(
            format!(
                "Cache stats of replica {}: hits {} (L1 {}, L2 {}), misses {}, hit rate {:.1}%, \
                 sets {}, deletes {}, loader calls {}, errors {}, L1 {}/{} entries, {}/{} bytes, \
                 invalidations sent {} received {}",
                s.replica_id,
                s.hits,
                s.hits_l1,
                s.hits_l2,
                s.misses,
                s.hit_rate * 100.0,
                s.sets,
                s.deletes,
                s.loader_calls,
                s.errors,
                s.l1_entries,
                s.l1_max_entries,
                s.l1_bytes,
                s.l1_max_bytes,
                s.invalidations_sent,
                s.invalidations_received,
            ),
            &s,
        )
    }

    /// This replica's managed resources and Redis pool.
    #[tool(
        description = "Show this replica's managed resources (open, referenced and idle \
                       by kind, created and cleaned totals) and its Redis connection pool \
                       (size, max, available, waiting, created, borrowed, returned, errors).",
        output_schema = schema_for_output::<ResourceStatsOutput>()
    )]
    async fn resource_stats(&self) -> ToolResult {
        let kinds = self
            .managed
            .stats()
            .into_iter()
            .map(|(kind, figures)| (kind.to_owned(), figures))
            .collect();
        let redis_pool = self.pool.as_ref().map(|pool| {
            let s = pool.status();
            PoolStats {
                size: s.size as u64,
                max_size: s.max_size as u64,
                available: s.available as u64,
                waiting: s.waiting as u64,
                created_total: s.created_total,
                borrowed_total: s.borrowed_total,
                returned_total: s.returned_total,
                errors_total: s.errors_total,
            }
        });
        let out = ResourceStatsOutput {
            replica_id: self.replica_id.to_string(),
            kinds,
            redis_pool,
        };
        let text = serde_json::to_string(&out)
            .map_err(|e| McpError::internal_error(format!("serialize: {e}"), None))?;
        reply(
            format!("Resources of replica {}: {text}", out.replica_id),
            &out,
        )
    }
}
