//! [`AppState`]: the cheap handles one replica shares between its requests and its
//! background tasks, built once from the settings.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Authenticator,
    bus::Bus,
    cache::CacheManager,
    config::{Backend, Settings},
    cpu::CpuPool,
    jobs::Jobs,
    keys::Keys,
    managed::{HandleManager, file::FileFactory, redis::RedisConnectionFactory},
    metrics::Metrics,
    rate_limit::RateLimiter,
    redis_pool::RedisPool,
    sessions::{Holder, RedisSessions, Sessions},
    tasks::{MemoryTasks, RedisTasks, TaskManager, TaskStore},
};

/// Cheap-clone handles shared by every request of one replica.
///
/// Build it with [`AppState::build`]; the MCP layer adds its own handles
/// ([`crate::mcp::McpState`]) and [`crate::mcp::endpoint`] turns both into the `/mcp`
/// service. Clones are shallow: every field is a handle on shared state.
#[derive(Clone)]
pub struct AppState {
    /// The settings this replica started with.
    pub settings: Arc<Settings>,
    /// This replica's id (logs, stats, per-replica Redis keys).
    pub replica_id: Arc<str>,
    /// This replica as the holder of 2025-era sessions: its id and advertised URL.
    pub holder: Holder,
    /// The session layer.
    pub sessions: Sessions,
    /// The shared Redis pool, when the backend is Redis.
    pub redis: Option<RedisPool>,
    /// Key names under the configured prefix.
    pub keys: Keys,
    /// Fired when shutdown starts: readiness turns red at once.
    pub shutdown: CancellationToken,
    /// Fired to end rmcp's sessions and SSE streams, once in-flight work had its chance.
    pub mcp_shutdown: CancellationToken,
    /// The two-level cache.
    pub cache: CacheManager,
    /// Where CPU-heavy tool work runs, under `tools.cpu_concurrency`.
    pub cpu: CpuPool,
    /// The pub/sub bus, when the backend is Redis.
    pub bus: Option<Bus>,
    /// This replica's metrics.
    pub metrics: Metrics,
    /// Authenticates the callers of `/mcp`.
    pub auth: Arc<Authenticator>,
    /// Per-principal request budgets.
    pub rate_limit: RateLimiter,
    /// In-flight `/mcp` requests until their responses end (every request but the
    /// long-lived GET streams), which a drain waits for. A call whose client went away
    /// is no longer waited for: nothing would read its result.
    pub requests: TaskTracker,
    /// The replica's background jobs (bus subscriber, event stream reader, lease
    /// keeper, upkeep loops): added as their components are built, started together
    /// by [`crate::startup`] (or an embedder, with [`Jobs::start`]) and stopped in
    /// reverse at the end of a shutdown.
    pub jobs: Jobs,
    /// Files and dedicated connections tools hold open (managed handles, not MCP
    /// resources), cleaned when idle and once the background jobs stop.
    pub handles: HandleManager,
    /// MCP tasks (the tasks extension): records every replica reads, and
    /// this replica's worker pool.
    pub task_manager: TaskManager,
}

impl AppState {
    /// Wires the components `settings` ask for and adds their background loops to
    /// [`AppState::jobs`] (not started yet).
    ///
    /// # Errors
    /// When the Redis settings are unusable, an authentication key file cannot be
    /// read, or the `requestState` keys are unusable. A Redis server that is down is not an
    /// error: readiness reports it and requests fail fast until it is back.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let replica_id: Arc<str> = if settings.server.replica_id.is_empty() {
            crate::ids::mint()[..12].into()
        } else {
            settings.server.replica_id.as_str().into()
        };
        let auth = Arc::new(Authenticator::from_settings(&settings.auth).context("auth")?);
        let jobs = Jobs::new();
        let keys = Keys::new(&settings.redis.key_prefix);
        let timeout: Duration = settings.session.timeout();
        let (sessions, redis, bus, cache) = match settings.store.backend {
            Backend::Memory => (
                Sessions::memory(settings.session.clone()),
                None,
                None,
                CacheManager::new(&settings.cache, &replica_id, None, None),
            ),
            Backend::Redis => {
                let pool = RedisPool::new(&settings.redis).context("redis")?;
                pool.add_jobs(&jobs);
                let sessions = Sessions::redis(
                    RedisSessions::new(pool.clone(), keys.clone(), timeout),
                    settings.session.clone(),
                );
                let bus = Bus::start(pool.clone(), keys.clone(), replica_id.to_string(), &jobs);
                let cache_pool = match settings.cache.own_redis(&settings.redis) {
                    None => pool.clone(),
                    Some(own) => {
                        let own =
                            RedisPool::new(&own).context("the cache's Redis (cache.redis_*)")?;
                        own.add_jobs(&jobs);
                        own
                    }
                };
                let cache = CacheManager::new(
                    &settings.cache,
                    &replica_id,
                    Some((cache_pool, keys.clone())),
                    Some(bus.clone()),
                );
                (sessions, Some(pool), Some(bus), cache)
            }
        };
        let task_store = match &redis {
            Some(pool) => TaskStore::Redis(RedisTasks::new(pool.clone(), keys.clone())),
            None => TaskStore::Memory(MemoryTasks::new()),
        };
        let task_manager =
            TaskManager::new(task_store, replica_id.clone(), &settings.tasks, bus.clone());
        let upkeep = task_manager.clone();
        jobs.add("task upkeep", move |stop| upkeep.run_upkeep(stop));
        // Settings changed after loading skip its validation: a Redis replica with a
        // key of its own would break every MRTR retry another replica serves, silently.
        if settings.mrtr.key_ring()?.is_none() && settings.store.backend == Backend::Redis {
            anyhow::bail!(
                "mrtr.keys is required with the Redis backend: set the same \
                 STATEFUL_MCP__MRTR__KEYS=id:base64secret on every replica"
            );
        }
        let handles = handle_manager(&settings, redis.as_ref())?;
        let sweeper = handles.clone();
        let every = Duration::from_secs(settings.resources.sweep_interval_secs);
        jobs.add("handle sweeper", move |stop| {
            sweeper.run_sweeper(every, stop)
        });
        let cpu = CpuPool::new(settings.tools.cpu_jobs());
        let metrics = Metrics::new(
            &replica_id,
            match settings.store.backend {
                Backend::Memory => "memory",
                Backend::Redis => "redis",
            },
        );
        // Each component registers the figures it reads at scrape time; this order is
        // the order of their series in `/metrics`.
        if let Some(pool) = &redis {
            pool.register_metrics(&metrics);
        }
        sessions.register_metrics(&metrics);
        handles.register_metrics(&metrics);
        cpu.register_metrics(&metrics);
        auth.failures().register_metrics(&metrics);
        task_manager.register_metrics(&metrics);
        cache.register_metrics(&metrics);
        let rate_limit = RateLimiter::new(
            &settings.rate_limit,
            redis.clone().map(|pool| (pool, keys.clone())),
        );
        rate_limit.register_metrics(&metrics);
        let holder = Holder {
            replica: replica_id.to_string(),
            url: settings.server.advertised_url(None),
        };
        Ok(Self {
            settings: Arc::new(settings),
            replica_id,
            holder,
            sessions,
            redis,
            keys,
            shutdown: CancellationToken::new(),
            mcp_shutdown: CancellationToken::new(),
            cache,
            cpu,
            bus,
            metrics,
            auth,
            rate_limit,
            requests: TaskTracker::new(),
            jobs,
            handles,
            task_manager,
        })
    }
}

/// The managed-handle manager with the kinds the settings allow: `file` under
/// `resources.file_root` when set, `redis` with the Redis backend.
fn handle_manager(settings: &Settings, redis: Option<&RedisPool>) -> anyhow::Result<HandleManager> {
    let r = &settings.resources;
    let mut builder =
        HandleManager::builder(Duration::from_secs(r.idle_timeout_secs), r.max_per_kind)
            .per_principal(r.max_per_principal);
    if !r.file_root.as_os_str().is_empty() {
        let files = FileFactory::new(&r.file_root)
            .with_context(|| format!("resources.file_root {}", r.file_root.display()))?;
        builder = builder.register(files);
    }
    if let Some(pool) = redis {
        builder = builder.register(RedisConnectionFactory::new(pool.clone()));
    }
    Ok(builder.build())
}
