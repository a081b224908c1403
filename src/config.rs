//! Typed settings: `config/default.toml`, an optional `--config FILE`, then
//! `STATEFUL_MCP__SECTION__KEY` environment variables, validated once at start-up.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

mod mrtr;

pub use self::mrtr::{KeyRing, ListenSettings, MIN_KEY_BYTES, MrtrSettings, NamedKey};

/// Every setting of a replica. `config/default.toml` documents each key and its default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP listener and request limits.
    pub server: ServerSettings,
    /// Which backend holds sessions and tool state.
    pub store: StoreSettings,
    /// The Redis connection shared by every Redis-backed component.
    pub redis: RedisSettings,
    /// Session lifetime and limits.
    pub session: SessionSettings,
    /// The two-level cache.
    pub cache: CacheSettings,
    /// Resumable SSE event streams (2025-era `Last-Event-ID`).
    pub events: EventSettings,
    /// Tool limits and caching.
    pub tools: ToolSettings,
    /// Log format and filter.
    pub telemetry: TelemetrySettings,
    /// Who may call, and how callers prove it.
    pub auth: AuthSettings,
    /// Requests per principal, shared by every replica.
    pub rate_limit: RateLimitSettings,
    /// Long-lived resources tools open (files, dedicated Redis connections).
    pub resources: ResourceSettings,
    /// Background tasks (the MCP tasks extension): workers, queue, retention, leases.
    pub tasks: TaskSettings,
    /// The keys that seal MRTR `requestState`.
    pub mrtr: MrtrSettings,
    /// Bounds of the `subscriptions/listen` streams.
    pub listen: ListenSettings,
}

/// Background tasks: the replica's worker pool and the records every replica reads.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskSettings {
    /// Tasks running at once on a replica.
    pub workers: usize,
    /// Tasks waiting for a worker on a replica; beyond it a new task is refused.
    pub queue: usize,
    /// Seconds a task's record is kept after its last change (its `ttlMs`).
    pub ttl_secs: u64,
    /// Milliseconds clients are asked to wait between two `tasks/get` (`pollIntervalMs`).
    pub poll_interval_ms: u64,
    /// Milliseconds a running task's owner lease lasts; a task whose lease ran out is
    /// marked failed by any replica.
    pub lease_ms: u64,
    /// Milliseconds between two renewals of the leases a replica holds (well below
    /// `lease_ms`); also how often a running task re-reads its record for a cancel or an
    /// input it may have missed on the bus.
    pub renew_interval_ms: u64,
    /// Milliseconds between two sweeps for tasks whose lease ran out.
    pub sweep_interval_ms: u64,
}

impl TaskSettings {
    /// `renew_interval_ms` as a duration.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_interval_ms)
    }

    /// `sweep_interval_ms` as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

/// The resource lifecycle manager and the tools over it.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceSettings {
    /// Directory `file_read` serves (read-only, nothing outside it); empty = the `file`
    /// kind is off.
    pub file_root: std::path::PathBuf,
    /// Most bytes one `file_read` returns.
    pub max_read_bytes: usize,
    /// Seconds an unreferenced resource stays open before the sweep cleans it.
    pub idle_timeout_secs: u64,
    /// Seconds between idle sweeps.
    pub sweep_interval_secs: u64,
    /// Most open resources of one kind on a replica.
    pub max_per_kind: usize,
}

/// Per-principal request rate limits.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    /// Sustained requests per second per principal across all replicas; 0 = no limit.
    pub requests_per_sec: u32,
    /// Requests a principal may make at once above the sustained rate.
    pub burst: u32,
    /// What a request gets when the limiter's Redis cannot be reached: `open` (served)
    /// or `closed` (503).
    pub on_redis_error: FailMode,
}

/// Whether requests pass or fail when a check cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Serve the request.
    Open,
    /// Refuse the request.
    Closed,
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication: every caller is the principal `anonymous` (local use).
    None,
    /// Bearer API keys listed by their SHA-256 in `auth.api_keys_file`.
    ApiKeys,
    /// Bearer JWTs verified with the keys of `auth.jwks_file`.
    Jwt,
}

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `none`, `api_keys` or `jwt`.
    pub mode: AuthMode,
    /// `api_keys`: one `<principal> <sha256 hex of the key>` per line, `#` comments.
    pub api_keys_file: std::path::PathBuf,
    /// `jwt`: a JWKS document, re-read when it changes.
    pub jwks_file: std::path::PathBuf,
    /// `jwt`: the required `iss`.
    pub issuer: String,
    /// `jwt`: the required `aud`.
    pub audience: String,
    /// This server's resource identifier (its `/mcp` URL), published in the RFC 9728
    /// metadata and named by the 401 challenge.
    pub resource: String,
    /// Authorization servers that issue tokens for this resource (RFC 9728 metadata).
    #[serde(deserialize_with = "comma_list")]
    pub authorization_servers: Vec<String>,
}

/// Tool limits and result caching.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSettings {
    /// Largest `limit` the `prime_count` tool accepts.
    pub prime_count_max_limit: u64,
    /// Seconds a `prime_count` result is served from the cache (public scope).
    pub prime_count_cache_ttl_secs: u64,
    /// Seconds clients may cache the tool list (the 2026-07-28 `ttlMs` hint).
    pub list_ttl_secs: u64,
    /// Most CPU-heavy computations (prime sieves) running at once on a replica, on
    /// blocking threads; 0 = the number of cores minus one, at least 1. Read it with
    /// [`ToolSettings::cpu_jobs`].
    pub cpu_concurrency: usize,
}

impl ToolSettings {
    /// The effective `cpu_concurrency`: the setting, or for 0 the number of cores minus
    /// one (at least 1), leaving a core to the async workers.
    pub fn cpu_jobs(&self) -> usize {
        if self.cpu_concurrency > 0 {
            return self.cpu_concurrency;
        }
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    }
}

/// Settings of the Redis event store behind `Last-Event-ID` resumption.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// Whether 2025-era response streams are stored for `Last-Event-ID` resumption (on
    /// the Redis backend). Off saves one Redis round trip per SSE event.
    pub enabled: bool,
    /// Seconds a stream's events are kept after its last event.
    pub ttl_secs: u64,
    /// Seconds a request stream is kept once its final response is stored: the window
    /// in which a client that lost the response can resume (at most `ttl_secs`).
    pub completed_ttl_secs: u64,
    /// Seconds a request stream is kept once its final response is stored while its
    /// client still reads it (at most `completed_ttl_secs`): a delivered response needs
    /// no resumption but by a client whose connection broke right after it.
    pub delivered_ttl_secs: u64,
    /// Events kept per stream (approximately: Redis trims whole nodes).
    pub max_len: usize,
    /// Seconds a resumed stream waits for its next event before it ends (the client can
    /// resume again).
    pub follow_idle_timeout_secs: u64,
}

/// Two-level cache settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    /// Most entries in each replica's in-process L1.
    pub l1_max_entries: u64,
    /// Most bytes of values in each replica's L1.
    pub l1_max_bytes: u64,
    /// Longest time an L1 entry is served without going back to Redis: the bound on
    /// cross-replica staleness when an invalidation message is lost.
    pub l1_max_ttl_ms: u64,
    /// TTL of entries whose writer names none.
    pub default_ttl_secs: u64,
    /// Longest TTL accepted.
    pub max_ttl_secs: u64,
    /// How long after expiry an L1 entry may still be served while Redis is unreachable.
    pub fail_safe_grace_secs: u64,
    /// How long one replica may hold the lock to load a missing entry.
    pub load_lock_ttl_ms: u64,
    /// Redis for the cache's L2; empty = `redis.url`. Lets operators give the cache an
    /// evicting memory policy while session state stays on a `noeviction` server.
    pub redis_url: String,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    /// Socket address to listen on.
    pub bind: SocketAddr,
    /// Host names (optionally with port) accepted in the `Host` header; empty = rmcp's
    /// loopback default.
    #[serde(deserialize_with = "comma_list")]
    pub allowed_hosts: Vec<String>,
    /// Origins accepted in the `Origin` header (loopback by default); empty = none.
    /// Requests without an `Origin` header are not affected.
    #[serde(deserialize_with = "comma_list")]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Replica id used in logs, stats and Redis liveness keys; empty = random.
    pub replica_id: String,
    /// How long the replica keeps serving after a shutdown signal, with readiness red,
    /// before it stops accepting (the balancer's time to notice).
    pub prestop_delay_secs: u64,
    /// How long in-flight requests may run once the replica stops accepting.
    pub shutdown_timeout_secs: u64,
    /// How long a draining replica keeps serving its open connections (answering with
    /// `Connection: close`) before closing idle ones; longer than the balancer's
    /// upstream keep-alive timeout.
    pub keepalive_drain_secs: u64,
    /// SSE keep-alive comment interval.
    pub sse_keep_alive_secs: u64,
    /// How long a client may take to send a request's head (line and headers) before
    /// its connection is closed.
    pub header_read_timeout_secs: u64,
    /// The base URL (`http://host:port`) other replicas reach this one at, to forward
    /// the requests of the 2025-era sessions it serves; empty = `http://` and the bound
    /// address (loopback for an unspecified one). Read it with
    /// [`ServerSettings::advertised_url`].
    pub advertise_url: String,
}

impl ServerSettings {
    /// Where other replicas reach this one: `advertise_url`, or the bound address
    /// (`bound`, else `bind`). An unspecified IP (`0.0.0.0`, `::`) reads as the address
    /// of the interface that routes outwards (a container's or pod's own IP), else as
    /// loopback.
    pub fn advertised_url(&self, bound: Option<SocketAddr>) -> String {
        if !self.advertise_url.is_empty() {
            return self.advertise_url.trim_end_matches('/').to_owned();
        }
        let mut addr = bound.unwrap_or(self.bind);
        if addr.ip().is_unspecified() {
            addr.set_ip(outward_ip(addr.is_ipv4()));
        }
        format!("http://{addr}")
    }
}

/// The local address of the route out of this host, learnt by connecting a UDP socket
/// (no packet leaves); loopback when there is no such route.
fn outward_ip(v4: bool) -> std::net::IpAddr {
    let (any, documentation): (std::net::IpAddr, std::net::IpAddr) = if v4 {
        (
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
        )
    } else {
        (
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        )
    };
    std::net::UdpSocket::bind((any, 0))
        .and_then(|socket| {
            socket.connect((documentation, 9))?;
            socket.local_addr()
        })
        .map(|local| local.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(if v4 {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        })
}

/// Storage backend choice.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    /// `memory` (single replica, nothing to install) or `redis` (any number of replicas).
    pub backend: Backend,
}

/// The closed set of state backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process maps: state dies with the process; one replica only.
    Memory,
    /// Redis: state shared by every replica.
    Redis,
}

/// Redis connection settings, shared by sessions, the event store and the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// For `rediss://`: a PEM file of the CA certificates to trust instead of the
    /// system's; empty = the system's roots.
    pub tls_ca_file: std::path::PathBuf,
    /// Prefix of every key and channel this deployment writes.
    pub key_prefix: String,
    /// Largest number of pooled multiplexed connections.
    pub pool_size: usize,
    /// How long a request waits for a free pooled connection; waiting and connecting
    /// together take at most the longer of this and `connect_timeout_ms`.
    pub pool_wait_timeout_ms: u64,
    /// How long one command may take before it fails.
    pub command_timeout_ms: u64,
    /// How long establishing a connection may take.
    pub connect_timeout_ms: u64,
}

/// Session lifetime and limits.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionSettings {
    /// Sliding expiry: a session ends after this many seconds without access.
    pub timeout_secs: u64,
    /// Largest total size of a session's `data` values, in bytes.
    pub max_data_bytes: usize,
    /// Largest total size, in bytes, of what a session stores about its client: the
    /// `clientInfo` and the 2025-era `initialize` parameters, serialized as stored.
    pub max_client_metadata_bytes: usize,
    /// Largest number of live sessions one principal may hold.
    pub max_sessions_per_principal: usize,
    /// Entries `history` keeps.
    pub history_limit: usize,
    /// Largest length of one `history` entry, in bytes.
    pub max_history_entry_bytes: usize,
    /// Seconds between two rounds of session upkeep on each replica.
    pub maintenance_interval_secs: u64,
    /// How long the first result of a call with an `idempotencyKey` is kept, so a retry
    /// with the same key gets it back instead of applying the change again.
    pub idempotency_ttl_secs: u64,
    /// How long a replica's hold on a 2025-era session lasts without renewal (it renews
    /// every third of it): after a replica dies, its sessions move to another replica
    /// at their first request after this.
    pub lease_secs: u64,
    /// How long a replica keeps an idle 2025-era session's worker (no request, no open
    /// stream) before closing it; the session stays in the store and its next request
    /// restores a worker.
    pub local_idle_secs: u64,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `text` or `json` (one JSON object per line).
    pub format: LogFormat,
    /// Default `tracing` filter; `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that cannot be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The files or environment could not be parsed into settings.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is out of range.
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// Dotted key name, e.g. `redis.pool_size`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A key no longer read, and what replaced it: a configuration that still sets it is
/// refused rather than silently served without what it asked for.
const RETIRED: &[(&str, &str)] = &[(
    "conformance.enabled",
    "no longer read: the official conformance suite's fixtures are served only by the \
     `stateful-mcp-conformance` binary, never by `stateful-mcp`; remove the key",
)];

impl Settings {
    /// Loads the built-in defaults, then `file` if given, then `STATEFUL_MCP__*` variables.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key when a value does not parse or is out of range.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not mutate the
    /// process environment.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("STATEFUL_MCP__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("STATEFUL_MCP")
                .prefix_separator("__")
                .separator("__")
                .source(Some(vars)),
        );
        let config = builder.build()?;
        for &(key, reason) in RETIRED {
            if config.get::<config::Value>(key).is_ok() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: reason.to_owned(),
                });
            }
        }
        let settings: Settings = config.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        positive("session.timeout_secs", self.session.timeout_secs)?;
        positive("session.max_data_bytes", self.session.max_data_bytes as u64)?;
        positive(
            "session.max_client_metadata_bytes",
            self.session.max_client_metadata_bytes as u64,
        )?;
        positive(
            "session.max_sessions_per_principal",
            self.session.max_sessions_per_principal as u64,
        )?;
        positive("session.history_limit", self.session.history_limit as u64)?;
        positive(
            "session.max_history_entry_bytes",
            self.session.max_history_entry_bytes as u64,
        )?;
        positive(
            "session.maintenance_interval_secs",
            self.session.maintenance_interval_secs,
        )?;
        positive(
            "session.idempotency_ttl_secs",
            self.session.idempotency_ttl_secs,
        )?;
        positive("session.lease_secs", self.session.lease_secs)?;
        positive("session.local_idle_secs", self.session.local_idle_secs)?;
        let advertise = &self.server.advertise_url;
        let base_url = |url: &str| {
            url.starts_with("http://")
                && url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.host().is_some() && matches!(u.path(), "" | "/"))
        };
        if !advertise.is_empty() && !base_url(advertise) {
            return Err(ConfigError::Invalid {
                key: "server.advertise_url",
                reason: "must be the http://host:port (no path) other replicas reach this \
                         one at"
                    .into(),
            });
        }
        positive(
            "tools.prime_count_max_limit",
            self.tools.prime_count_max_limit,
        )?;
        if self.tools.prime_count_max_limit > MAX_PRIME_LIMIT {
            return Err(ConfigError::Invalid {
                key: "tools.prime_count_max_limit",
                reason: format!(
                    "must be at most {MAX_PRIME_LIMIT} (a sieve that size takes minutes of CPU)"
                ),
            });
        }
        if self.tools.cpu_concurrency > MAX_CPU_CONCURRENCY {
            return Err(ConfigError::Invalid {
                key: "tools.cpu_concurrency",
                reason: format!(
                    "must be at most {MAX_CPU_CONCURRENCY} (the runtime's blocking threads); \
                     0 = cores minus one"
                ),
            });
        }
        if self.tools.prime_count_cache_ttl_secs > self.cache.max_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "tools.prime_count_cache_ttl_secs",
                reason: "must not exceed cache.max_ttl_secs".into(),
            });
        }
        positive("tasks.workers", self.tasks.workers as u64)?;
        positive("tasks.ttl_secs", self.tasks.ttl_secs)?;
        positive("tasks.poll_interval_ms", self.tasks.poll_interval_ms)?;
        positive("tasks.renew_interval_ms", self.tasks.renew_interval_ms)?;
        positive("tasks.sweep_interval_ms", self.tasks.sweep_interval_ms)?;
        if self.tasks.lease_ms < 2 * self.tasks.renew_interval_ms {
            return Err(ConfigError::Invalid {
                key: "tasks.lease_ms",
                reason: "must be at least twice tasks.renew_interval_ms, so one late \
                         renewal does not fail a running task"
                    .into(),
            });
        }
        positive("events.ttl_secs", self.events.ttl_secs)?;
        positive("events.completed_ttl_secs", self.events.completed_ttl_secs)?;
        if self.events.completed_ttl_secs > self.events.ttl_secs {
            return Err(ConfigError::Invalid {
                key: "events.completed_ttl_secs",
                reason: "must not exceed events.ttl_secs".into(),
            });
        }
        positive("events.delivered_ttl_secs", self.events.delivered_ttl_secs)?;
        if self.events.delivered_ttl_secs > self.events.completed_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "events.delivered_ttl_secs",
                reason: "must not exceed events.completed_ttl_secs".into(),
            });
        }
        positive("events.max_len", self.events.max_len as u64)?;
        positive(
            "events.follow_idle_timeout_secs",
            self.events.follow_idle_timeout_secs,
        )?;
        positive("cache.l1_max_entries", self.cache.l1_max_entries)?;
        positive("cache.l1_max_bytes", self.cache.l1_max_bytes)?;
        positive("cache.l1_max_ttl_ms", self.cache.l1_max_ttl_ms)?;
        positive("cache.default_ttl_secs", self.cache.default_ttl_secs)?;
        positive("cache.max_ttl_secs", self.cache.max_ttl_secs)?;
        positive("cache.load_lock_ttl_ms", self.cache.load_lock_ttl_ms)?;
        if self.cache.default_ttl_secs > self.cache.max_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "cache.default_ttl_secs",
                reason: "must not exceed cache.max_ttl_secs".into(),
            });
        }
        if self.store.backend == Backend::Redis && !self.cache.redis_url.is_empty() {
            check_redis_url("cache.redis_url", &self.cache.redis_url)?;
        }
        if self.server.keepalive_drain_secs >= self.server.shutdown_timeout_secs {
            return Err(ConfigError::Invalid {
                key: "server.keepalive_drain_secs",
                reason: "must be shorter than server.shutdown_timeout_secs".into(),
            });
        }
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive(
            "server.sse_keep_alive_secs",
            self.server.sse_keep_alive_secs,
        )?;
        positive("redis.pool_size", self.redis.pool_size as u64)?;
        positive(
            "redis.pool_wait_timeout_ms",
            self.redis.pool_wait_timeout_ms,
        )?;
        positive("redis.command_timeout_ms", self.redis.command_timeout_ms)?;
        positive("redis.connect_timeout_ms", self.redis.connect_timeout_ms)?;
        if self.session.timeout_secs > i64::MAX as u64 / 1000 {
            return Err(ConfigError::Invalid {
                key: "session.timeout_secs",
                reason: "is too large".into(),
            });
        }
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid {
                key: "redis.key_prefix",
                reason: "must be non-empty, without spaces or braces".into(),
            });
        }
        if self.store.backend == Backend::Redis {
            check_redis_url("redis.url", &self.redis.url)?;
        }
        positive(
            "resources.max_read_bytes",
            self.resources.max_read_bytes as u64,
        )?;
        if self.resources.max_read_bytes > 16 << 20 {
            return Err(ConfigError::Invalid {
                key: "resources.max_read_bytes",
                reason: "must not exceed 16 MiB".into(),
            });
        }
        positive(
            "resources.idle_timeout_secs",
            self.resources.idle_timeout_secs,
        )?;
        positive(
            "resources.sweep_interval_secs",
            self.resources.sweep_interval_secs,
        )?;
        positive("resources.max_per_kind", self.resources.max_per_kind as u64)?;
        if self.rate_limit.requests_per_sec > 0 {
            positive("rate_limit.burst", u64::from(self.rate_limit.burst))?;
        }
        if self.mrtr.key_ring()?.is_none() && self.store.backend == Backend::Redis {
            return Err(ConfigError::Invalid {
                key: "mrtr.keys",
                reason: "is required with store.backend = redis: every replica must open \
                         the requestState any other one sealed; set the same \
                         `id:base64secret` on all of them (`openssl rand -base64 32`)"
                    .into(),
            });
        }
        positive("listen.max_streams", self.listen.max_streams as u64)?;
        positive("listen.stream_buffer", self.listen.stream_buffer as u64)?;
        if self.listen.max_streams > 65_536 || self.listen.stream_buffer > 4096 {
            return Err(ConfigError::Invalid {
                key: "listen.max_streams",
                reason: "listen.max_streams must be at most 65536 and listen.stream_buffer \
                         at most 4096"
                    .into(),
            });
        }
        self.auth.validate()
    }
}

impl AuthSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let required = |key: &'static str, missing: bool| {
            if missing {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("is required with auth.mode = {:?}", self.mode),
                });
            }
            Ok(())
        };
        let empty = |p: &Path| p.as_os_str().is_empty();
        match self.mode {
            AuthMode::None => return Ok(()),
            AuthMode::ApiKeys => required("auth.api_keys_file", empty(&self.api_keys_file))?,
            AuthMode::Jwt => {
                required("auth.jwks_file", empty(&self.jwks_file))?;
                required("auth.issuer", self.issuer.is_empty())?;
                required("auth.audience", self.audience.is_empty())?;
            }
        }
        required("auth.resource", self.resource.is_empty())?;
        if !self.resource.starts_with("https://") && !self.resource.starts_with("http://") {
            return Err(ConfigError::Invalid {
                key: "auth.resource",
                reason: "must be the server's http(s) URL".into(),
            });
        }
        Ok(())
    }
}

/// The largest `tools.cpu_concurrency` accepted: tokio's default number of blocking
/// threads, so every permit can have a thread.
pub const MAX_CPU_CONCURRENCY: usize = 512;

/// The largest `tools.prime_count_max_limit` accepted: about 100 s of one core, and a
/// base-prime table of a few hundred KiB.
const MAX_PRIME_LIMIT: u64 = 100_000_000_000;

/// A `redis://` or `rediss://` (TLS) URL.
fn check_redis_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok || redis::parse_redis_url(url).is_none() {
        return Err(ConfigError::Invalid {
            key,
            reason: "not a redis:// or rediss:// URL".to_owned(),
        });
    }
    Ok(())
}

impl SessionSettings {
    /// The sliding expiry as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The lease on a 2025-era session as a [`Duration`].
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// How long an idle 2025-era session's worker is kept, as a [`Duration`].
    pub fn local_idle(&self) -> Duration {
        Duration::from_secs(self.local_idle_secs)
    }
}

/// Accepts either a TOML array or one comma-separated string (the form environment
/// variables take).
fn comma_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(de)? {
        Raw::List(items) => items,
        Raw::One(joined) => joined.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_defaults_load() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.store.backend, Backend::Memory);
        assert_eq!(s.session.timeout_secs, 1800);
        assert_eq!(s.session.local_idle_secs, 60);
        assert_eq!(s.tools.cpu_concurrency, 0);
        assert!((1..=MAX_CPU_CONCURRENCY).contains(&s.tools.cpu_jobs()));
        assert!(s.server.allowed_hosts.is_empty());
        assert!(
            s.server
                .allowed_origins
                .contains(&"http://127.0.0.1:*".to_owned())
        );
    }

    #[test]
    fn shipped_files_load() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
            let path = entry.unwrap().path();
            Settings::load_with_env(Some(&path), env(&[]))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("STATEFUL_MCP__SERVER__BIND", "0.0.0.0:9000"),
                ("STATEFUL_MCP__STORE__BACKEND", "redis"),
                ("STATEFUL_MCP__REDIS__URL", "redis://10.0.0.1:6380"),
                ("STATEFUL_MCP__REDIS__KEY_PREFIX", "tenant-a"),
                ("STATEFUL_MCP__SESSION__TIMEOUT_SECS", "60"),
                (
                    "STATEFUL_MCP__SERVER__ALLOWED_HOSTS",
                    "mcp.example.com, localhost",
                ),
                ("STATEFUL_MCP__MRTR__KEYS", TEST_KEYS),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert_eq!(s.store.backend, Backend::Redis);
        assert_eq!(s.redis.url, "redis://10.0.0.1:6380");
        assert_eq!(s.redis.key_prefix, "tenant-a");
        assert_eq!(s.session.timeout_secs, 60);
        assert_eq!(s.server.allowed_hosts, ["mcp.example.com", "localhost"]);
        let ring = s.mrtr.key_ring().unwrap().unwrap();
        assert_eq!(ring.sealing().id, "k2");
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn a_retired_key_is_refused_by_name() {
        for value in ["true", "false"] {
            let err = Settings::load_with_env(
                None,
                env(&[("STATEFUL_MCP__CONFORMANCE__ENABLED", value)]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("`conformance.enabled`") && err.contains("stateful-mcp-conformance"),
                "{err}"
            );
        }
        let file =
            std::env::temp_dir().join(format!("stateful-mcp-retired-{}.toml", std::process::id()));
        std::fs::write(&file, "[conformance]\nenabled = true\n").unwrap();
        let err = Settings::load_with_env(Some(&file), env(&[]));
        std::fs::remove_file(&file).unwrap();
        let err = err.unwrap_err().to_string();
        assert!(err.contains("`conformance.enabled`"), "{err}");
    }

    /// Two `requestState` keys as the environment gives them: the sealing one first.
    const TEST_KEYS: &str = "k2:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=, \
                             k1:YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=";

    #[test]
    fn the_redis_backend_needs_request_state_keys() {
        let redis = [
            ("STATEFUL_MCP__STORE__BACKEND", "redis"),
            ("STATEFUL_MCP__REDIS__URL", "redis://127.0.0.1:6380"),
        ];
        let err = Settings::load_with_env(None, env(&redis)).unwrap_err();
        assert!(err.to_string().contains("mrtr.keys"), "{err}");
        let mut keyed = redis.to_vec();
        keyed.push(("STATEFUL_MCP__MRTR__KEYS", TEST_KEYS));
        Settings::load_with_env(None, env(&keyed)).unwrap();
        // One replica on the memory backend may do without (a key of its own).
        let memory = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(memory.mrtr.key_ring().unwrap().is_none());
    }

    #[test]
    fn the_advertised_url_is_the_setting_or_the_bound_address() {
        let load = |pairs: &[(&str, &str)]| Settings::load_with_env(None, env(pairs)).unwrap();
        let s = load(&[]);
        assert_eq!(s.server.advertised_url(None), "http://127.0.0.1:8080");
        let bound = "127.0.0.1:41234".parse().ok();
        assert_eq!(s.server.advertised_url(bound), "http://127.0.0.1:41234");
        let any = load(&[("STATEFUL_MCP__SERVER__BIND", "0.0.0.0:9000")]);
        let url = any.server.advertised_url(None);
        assert!(
            url.starts_with("http://") && url.ends_with(":9000"),
            "{url}"
        );
        assert!(!url.contains("0.0.0.0"), "{url}");
        let set = load(&[(
            "STATEFUL_MCP__SERVER__ADVERTISE_URL",
            "http://10.1.2.3:8080/",
        )]);
        assert_eq!(set.server.advertised_url(bound), "http://10.1.2.3:8080");
        for bad in [
            "10.1.2.3:8080",
            "https://a:1",
            "http://a b",
            "http://a:1/mcp",
        ] {
            let err =
                Settings::load_with_env(None, env(&[("STATEFUL_MCP__SERVER__ADVERTISE_URL", bad)]))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("server.advertise_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn redis_urls_are_checked_without_echoing_credentials() {
        let err = Settings::load_with_env(
            None,
            env(&[
                ("STATEFUL_MCP__STORE__BACKEND", "redis"),
                (
                    "STATEFUL_MCP__REDIS__URL",
                    "http://app:s3cret@cache.example:6380",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("redis.url"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        Settings::load_with_env(
            None,
            env(&[
                ("STATEFUL_MCP__STORE__BACKEND", "redis"),
                (
                    "STATEFUL_MCP__REDIS__URL",
                    "rediss://app:pw@cache.example:6380",
                ),
                ("STATEFUL_MCP__MRTR__KEYS", TEST_KEYS),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "STATEFUL_MCP__SESSION__TIMEOUT_SECS",
                "0",
                "session.timeout_secs",
            ),
            (
                "STATEFUL_MCP__SESSION__TIMEOUT_SECS",
                "soon",
                "timeout_secs",
            ),
            ("STATEFUL_MCP__STORE__BACKEND", "etcd", "backend"),
            (
                "STATEFUL_MCP__SESSION__LEASE_SECS",
                "0",
                "session.lease_secs",
            ),
            (
                "STATEFUL_MCP__SESSION__LOCAL_IDLE_SECS",
                "0",
                "session.local_idle_secs",
            ),
            (
                "STATEFUL_MCP__SERVER__SSE_KEEP_ALIVE_SECS",
                "0",
                "server.sse_keep_alive_secs",
            ),
            (
                "STATEFUL_MCP__TOOLS__PRIME_COUNT_MAX_LIMIT",
                "18446744073709551615",
                "tools.prime_count_max_limit",
            ),
            ("STATEFUL_MCP__SERVER__BIND", "nowhere", "bind"),
            (
                "STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS",
                "0",
                "events.completed_ttl_secs",
            ),
            (
                "STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS",
                "901",
                "events.completed_ttl_secs",
            ),
            (
                "STATEFUL_MCP__EVENTS__DELIVERED_TTL_SECS",
                "61",
                "events.delivered_ttl_secs",
            ),
            (
                "STATEFUL_MCP__TOOLS__CPU_CONCURRENCY",
                "513",
                "tools.cpu_concurrency",
            ),
            (
                "STATEFUL_MCP__REDIS__KEY_PREFIX",
                "a{b}",
                "redis.key_prefix",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::load_with_env(None, env(&[(var, value)]))
                .expect_err(var)
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
