//! Typed settings: `config/default.toml`, an optional `--config FILE`, then
//! `STATEFUL_MCP__SECTION__KEY` environment variables, validated once at start-up.
//!
//! Each `[section]` of `config/default.toml` has a submodule that owns its settings
//! type, the docs of its keys and the checks of its own values; this module loads the
//! layers into [`Settings`], re-exports every section's types, and checks what spans
//! sections (what the Redis backend requires, a TTL bounded by another section's).

use std::path::Path;

use serde::Deserialize;

mod auth;
mod cache;
mod events;
mod listen;
mod mrtr;
mod rate_limit;
mod redis;
mod resources;
mod server;
mod session;
mod store;
mod tasks;
mod telemetry;
mod tools;

pub use self::{
    auth::{AuthMode, AuthSettings},
    cache::CacheSettings,
    events::EventSettings,
    listen::ListenSettings,
    mrtr::{KeyRing, MIN_KEY_BYTES, MrtrSettings, NamedKey},
    rate_limit::{FailMode, RateLimitSettings},
    redis::{RedisMode, RedisSettings},
    resources::ResourceSettings,
    server::ServerSettings,
    session::SessionSettings,
    store::{Backend, StoreSettings},
    tasks::TaskSettings,
    telemetry::{LogFormat, TelemetrySettings},
    tools::{MAX_CPU_CONCURRENCY, ToolSettings},
};

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

    /// Checks every section, then what spans sections.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.redis.validate()?;
        self.session.validate()?;
        self.cache.validate()?;
        self.events.validate()?;
        self.tools.validate()?;
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.resources.validate()?;
        self.tasks.validate()?;
        self.mrtr.validate()?;
        self.listen.validate()?;
        self.telemetry.validate()?;
        if self.tools.prime_count_cache_ttl_secs > self.cache.max_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "tools.prime_count_cache_ttl_secs",
                reason: "must not exceed cache.max_ttl_secs".into(),
            });
        }
        if self.store.backend == Backend::Redis {
            self.redis.check_addresses(&redis::REDIS_ADDRESS_KEYS)?;
            self.cache.check_addresses(&self.redis)?;
            if self.mrtr.key_ring()?.is_none() {
                return Err(ConfigError::Invalid {
                    key: "mrtr.keys",
                    reason: "is required with store.backend = redis: every replica must open \
                             the requestState any other one sealed; set the same \
                             `id:base64secret` on all of them (`openssl rand -base64 32`)"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

/// Refuses 0 for `key`.
fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be greater than 0".into(),
        });
    }
    Ok(())
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

    /// `pairs` as the environment `Settings::load_with_env` takes.
    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
        assert_eq!(s.server.request_deadline_ms, 3000);
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
    fn redis_modes_name_their_addresses() {
        let keyed = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![
                ("STATEFUL_MCP__STORE__BACKEND", "redis"),
                ("STATEFUL_MCP__MRTR__KEYS", TEST_KEYS),
            ];
            all.extend_from_slice(pairs);
            Settings::load_with_env(None, env(&all))
        };
        let sentinel = keyed(&[
            ("STATEFUL_MCP__REDIS__MODE", "sentinel"),
            (
                "STATEFUL_MCP__REDIS__SENTINEL_URLS",
                "redis://s1:26379, redis://s2:26379",
            ),
            ("STATEFUL_MCP__REDIS__SENTINEL_MASTER", "mymaster"),
        ])
        .unwrap();
        assert_eq!(sentinel.redis.mode, RedisMode::Sentinel);
        assert_eq!(
            sentinel.redis.sentinel_urls,
            ["redis://s1:26379", "redis://s2:26379"]
        );
        let err = keyed(&[
            ("STATEFUL_MCP__REDIS__MODE", "sentinel"),
            ("STATEFUL_MCP__REDIS__SENTINEL_URLS", "redis://s1:26379"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("redis.sentinel_master"), "{err}");
        let err = keyed(&[("STATEFUL_MCP__REDIS__MODE", "cluster")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.cluster_urls"), "{err}");
        let err = keyed(&[
            ("STATEFUL_MCP__REDIS__MODE", "cluster"),
            (
                "STATEFUL_MCP__REDIS__CLUSTER_URLS",
                "redis://a:7000,http://b:7001",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("redis.cluster_urls"), "{err}");
        let err = keyed(&[
            ("STATEFUL_MCP__REDIS__MODE", "cluster"),
            (
                "STATEFUL_MCP__REDIS__CLUSTER_URLS",
                "redis://a:7000,redis://b:7001/2",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("redis.cluster_urls") && err.contains("database 0"),
            "{err}"
        );
        let cluster = keyed(&[
            ("STATEFUL_MCP__REDIS__MODE", "cluster"),
            (
                "STATEFUL_MCP__REDIS__CLUSTER_URLS",
                "rediss://app:pw@a:7000/0,redis://b:7001",
            ),
        ])
        .unwrap();
        assert_eq!(cluster.redis.cluster_urls.len(), 2);
        let err = keyed(&[("STATEFUL_MCP__REDIS__MODE", "shards")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode"), "{err}");
        // The cache's own deployment: any mode, checked under its own keys.
        let cache = keyed(&[
            ("STATEFUL_MCP__CACHE__REDIS_MODE", "sentinel"),
            (
                "STATEFUL_MCP__CACHE__REDIS_SENTINEL_URLS",
                "redis://c:26379",
            ),
            ("STATEFUL_MCP__CACHE__REDIS_SENTINEL_MASTER", "cache"),
        ])
        .unwrap();
        let own = cache.cache.own_redis(&cache.redis).unwrap();
        assert_eq!(own.mode, RedisMode::Sentinel);
        assert_eq!(own.sentinel_master, "cache");
        assert_eq!(own.key_prefix, cache.redis.key_prefix);
        let err = keyed(&[("STATEFUL_MCP__CACHE__REDIS_MODE", "sentinel")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.redis_sentinel_urls"), "{err}");
        // `redis_url` alone keeps its meaning: a standalone node for the cache.
        let url = keyed(&[("STATEFUL_MCP__CACHE__REDIS_URL", "redis://cache:6379")]).unwrap();
        let own = url.cache.own_redis(&url.redis).unwrap();
        assert_eq!(
            (own.mode, own.url.as_str()),
            (RedisMode::Standalone, "redis://cache:6379")
        );
        assert!(
            keyed(&[])
                .unwrap()
                .cache
                .own_redis(&sentinel.redis)
                .is_none()
        );
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
                "STATEFUL_MCP__SERVER__REQUEST_DEADLINE_MS",
                "0",
                "server.request_deadline_ms",
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
