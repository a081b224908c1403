//! The primes family: `prime_count`, the `PrimeCounter` that does its work, and the
//! planner that runs the same work as a task.

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::{common::schema_for_output, wrapper::Parameters},
    model::ProgressNotificationParam,
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ToolResult, reply};
use crate::{
    mcp::{
        error::{ToolFailure, tool_error},
        handler::{
            StatefulServer,
            binding::caller,
            tasks::{Plan, Planner, tool_outcome},
        },
    },
    primes,
    tasks::TaskContext,
};

/// `prime_count` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PrimeCountArgs {
    /// Count the primes strictly below this number.
    pub limit: u64,
}

/// `prime_count` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PrimeCountOutput {
    /// The limit asked for.
    pub limit: u64,
    /// How many primes are below it.
    pub count: u64,
    /// The largest of them, if any.
    pub largest: Option<u64>,
}

/// What `prime_count` needs, apart from where its progress goes: the same work runs in
/// a request (progress notifications) and as a task (the task's status message).
#[derive(Clone)]
pub(crate) struct PrimeCounter {
    pub(crate) cache: crate::cache::CacheManager,
    pub(crate) cpu: crate::cpu::CpuPool,
    pub(crate) tools: std::sync::Arc<crate::config::ToolSettings>,
}

impl PrimeCounter {
    /// Counts the primes below `args.limit` on the CPU pool for `principal` (cached for
    /// every caller), handing each progress report to `report` until it returns `false`.
    ///
    /// # Cancel safety
    /// Dropping the future stops the sieve within one segment.
    pub(crate) async fn count<F, Fut>(
        &self,
        principal: &str,
        args: PrimeCountArgs,
        mut report: F,
    ) -> ToolResult
    where
        F: FnMut(u64, u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let max = self.tools.prime_count_max_limit;
        if args.limit > max {
            return Err(ToolFailure::Refused(format!(
                "`limit` must be at most {max} (got {})",
                args.limit
            )));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        // Reports are forwarded beside the sieve, so it never waits on the client.
        let forward = async move {
            while let Some((done, total)) = rx.recv().await {
                if !report(done, total).await {
                    break;
                }
            }
        };
        let ttl = Duration::from_secs(self.tools.prime_count_cache_ttl_secs);
        let count = primes::cached(
            &self.cache,
            &self.cpu,
            principal,
            args.limit,
            ttl,
            10,
            move |d, t| {
                let _ = tx.send((d, t));
            },
        );
        let (counted, ()) = futures::join!(count, forward);
        let (counted, _) = counted.map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let out = PrimeCountOutput {
            limit: counted.limit,
            count: counted.count,
            largest: counted.largest,
        };
        let largest = out
            .largest
            .map_or_else(|| "none".to_owned(), |p| p.to_string());
        reply(
            format!(
                "There are {} primes below {}; the largest is {largest}.",
                out.count, out.limit
            ),
            &out,
        )
    }
}

#[tool_router(router = primes_tools, vis = "pub(super)")]
impl StatefulServer {
    /// Counts primes with a segmented sieve.
    #[tool(
        description = "Count the primes below `limit` (a segmented sieve of Eratosthenes). \
                       Reports progress when the request carries a progress token. Results \
                       are cached for every caller. Runs as a task (progress in its status \
                       message, cancellable) for clients of the tasks extension.",
        output_schema = schema_for_output::<PrimeCountOutput>()
    )]
    async fn prime_count(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PrimeCountArgs>,
    ) -> ToolResult {
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let primes = PrimeCounter {
            cache: self.cache.clone(),
            cpu: self.cpu.clone(),
            tools: self.tools.clone(),
        };
        primes
            .count(caller(&ctx).as_str(), args, move |done, total| {
                let (token, peer) = (token.clone(), peer.clone());
                async move {
                    let Some(token) = token else { return false };
                    let param =
                        ProgressNotificationParam::new(token, done as f64).with_total(total as f64);
                    peer.notify_progress(param).await.is_ok()
                }
            })
            .await
    }
}

/// `prime_count` as a job: the same count, its progress in the task's status message;
/// arguments the tool would refuse are refused before a task is made.
pub(in crate::mcp::handler) fn prime_count_planner(primes: PrimeCounter) -> Planner {
    Box::new(move |params| {
        let arguments = Value::Object(params.arguments.clone().unwrap_or_default());
        let args: PrimeCountArgs = match serde_json::from_value(arguments) {
            Ok(args) => args,
            Err(e) => {
                return Plan::Answer(tool_error(format!("invalid arguments: {e}")).into());
            }
        };
        let primes = primes.clone();
        Plan::Run(Box::new(move |ctx: TaskContext| {
            Box::pin(async move {
                let ctx = &ctx;
                let result = primes
                    .count(ctx.owner(), args, |done, total| async move {
                        ctx.progress(&format!("sieved {done} of {total} segments"))
                            .await;
                        true
                    })
                    .await;
                tool_outcome(result)
            })
        }))
    })
}
