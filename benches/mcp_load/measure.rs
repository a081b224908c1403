//! What one measured window cost: CPU seconds of the measured processes (from `/proc`)
//! and Redis's own figures (`INFO commandstats`, `cpu`, `stats`) of every master (the
//! one node, or each shard of a cluster), read at both ends of the window and turned
//! into costs per call: summed over the masters, and per shard.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;

use crate::cpu::{Measured, cpu_delta};

/// Redis's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    /// Calls and microseconds by command name (`INFO commandstats`).
    commands: BTreeMap<String, (u64, u64)>,
    /// `used_cpu_sys + used_cpu_user` (`INFO cpu`).
    cpu_secs: f64,
    /// `total_net_input_bytes` and `total_net_output_bytes` (`INFO stats`).
    net_in: u64,
    net_out: u64,
}

/// Everything read at one end of the window.
pub struct Reading {
    cpu: Vec<(String, BTreeMap<u32, f64>)>,
    /// Per master, in the order the meter was given them.
    redis: Vec<RedisCounters>,
}

/// Redis's cost per call over a window: summed over every master, and (with more
/// than one) per master in `shards`.
#[derive(Debug, Clone, Default)]
pub struct RedisPerCall {
    /// Commands per call by name (`INFO` itself left out), largest first.
    pub commands: Vec<(String, f64)>,
    /// Microseconds Redis spent per execution of each script command run in the window.
    pub script_usec: Vec<(String, f64)>,
    /// Redis CPU microseconds per call, from `INFO cpu`.
    pub cpu_us: f64,
    /// Bytes received and sent per call.
    pub net_in: f64,
    pub net_out: f64,
    /// Each master's share of these figures (still per call of the whole load), when
    /// there are several: a cluster's shards.
    pub shards: Vec<RedisPerCall>,
}

/// The cost per call of a window.
#[derive(Debug, Clone, Default)]
pub struct Costs {
    /// CPU microseconds per call by role (`replicas`, `anchor`, `redis`, `nginx`,
    /// `driver`, or the names given with `--pid`).
    pub cpu_us: Vec<(String, f64)>,
    pub redis: Option<RedisPerCall>,
}

/// Reads the measured processes and Redis.
pub struct Meter {
    procs: Measured,
    /// A connection to each master.
    redis: Vec<MultiplexedConnection>,
}

/// The script commands whose time per execution is reported.
const SCRIPT_COMMANDS: &[&str] = &["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"];

impl Meter {
    /// Measures `procs` and every Redis master at `redis_urls` (none: no Redis).
    ///
    /// # Panics
    /// When a master cannot be reached.
    pub async fn new(procs: Measured, redis_urls: &[String]) -> Self {
        let mut redis = Vec::with_capacity(redis_urls.len());
        for url in redis_urls {
            redis.push(
                redis::Client::open(url.as_str())
                    .expect("a Redis URL")
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap_or_else(|e| panic!("connect to {url}: {e}")),
            );
        }
        Self { procs, redis }
    }

    /// Reads every counter now.
    pub async fn read(&mut self) -> Reading {
        let cpu = self.procs.read();
        let mut redis = Vec::with_capacity(self.redis.len());
        for conn in &mut self.redis {
            redis.push(redis_counters(conn).await);
        }
        Reading { cpu, redis }
    }

    /// What the window between `before` and `after` cost per each of `calls` calls.
    pub fn costs(before: &Reading, after: &Reading, calls: u64) -> Costs {
        let per_call = |x: f64| if calls == 0 { 0.0 } else { x / calls as f64 };
        let cpu_us = cpu_delta(&before.cpu, &after.cpu)
            .into_iter()
            .map(|(role, secs)| (role, per_call(secs * 1e6)))
            .collect();
        let shards: Vec<RedisPerCall> = before
            .redis
            .iter()
            .zip(&after.redis)
            .map(|(b, a)| RedisPerCall::between(b, a, calls))
            .collect();
        let redis = match shards.len() {
            0 => None,
            1 => shards.into_iter().next(),
            _ => {
                let mut sum = RedisCounters::default();
                let mut sum_before = RedisCounters::default();
                for (b, a) in before.redis.iter().zip(&after.redis) {
                    sum_before.add(b);
                    sum.add(a);
                }
                Some(RedisPerCall {
                    shards,
                    ..RedisPerCall::between(&sum_before, &sum, calls)
                })
            }
        };
        Costs { cpu_us, redis }
    }
}

impl RedisCounters {
    /// Adds `other`'s counters to these (a cluster's masters summed).
    fn add(&mut self, other: &RedisCounters) {
        for (name, &(calls, usec)) in &other.commands {
            let entry = self.commands.entry(name.clone()).or_default();
            entry.0 += calls;
            entry.1 += usec;
        }
        self.cpu_secs += other.cpu_secs;
        self.net_in += other.net_in;
        self.net_out += other.net_out;
    }
}

impl RedisPerCall {
    /// What one node did between readings `b` and `a`, per each of `calls` calls.
    fn between(b: &RedisCounters, a: &RedisCounters, calls: u64) -> Self {
        let per_call = |x: f64| if calls == 0 { 0.0 } else { x / calls as f64 };
        let mut commands = Vec::new();
        let mut script_usec = Vec::new();
        for (name, &(calls_after, usec_after)) in &a.commands {
            let (calls_before, usec_before) = b.commands.get(name).copied().unwrap_or_default();
            let n = calls_after.saturating_sub(calls_before);
            if n == 0 || name == "info" {
                continue;
            }
            commands.push((name.clone(), per_call(n as f64)));
            if SCRIPT_COMMANDS.contains(&name.as_str()) {
                let usec = usec_after.saturating_sub(usec_before);
                script_usec.push((name.clone(), usec as f64 / n as f64));
            }
        }
        commands.sort_by(|x, y| y.1.total_cmp(&x.1));
        Self {
            commands,
            script_usec,
            cpu_us: per_call((a.cpu_secs - b.cpu_secs) * 1e6),
            net_in: per_call(a.net_in.saturating_sub(b.net_in) as f64),
            net_out: per_call(a.net_out.saturating_sub(b.net_out) as f64),
            shards: Vec::new(),
        }
    }

    /// Commands per call of `name` (lower case, as `INFO commandstats` names them).
    pub fn per_call(&self, name: &str) -> f64 {
        self.commands
            .iter()
            .find(|(c, _)| c == name)
            .map_or(0.0, |(_, n)| *n)
    }
}

/// One `INFO <section>` as `key: value` pairs.
pub async fn info(conn: &mut MultiplexedConnection, section: &str) -> Vec<(String, String)> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("INFO {section}: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

async fn redis_counters(conn: &mut MultiplexedConnection) -> RedisCounters {
    let mut counters = RedisCounters::default();
    for (key, value) in info(conn, "commandstats").await {
        let Some(name) = key.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |f: &str| -> u64 {
            value
                .split(',')
                .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        counters
            .commands
            .insert(name.to_owned(), (field("calls"), field("usec")));
    }
    for (key, value) in info(conn, "cpu").await {
        if key == "used_cpu_sys" || key == "used_cpu_user" {
            counters.cpu_secs += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    for (key, value) in info(conn, "stats").await {
        match key.as_str() {
            "total_net_input_bytes" => counters.net_in = value.parse().unwrap_or(0),
            "total_net_output_bytes" => counters.net_out = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    counters
}

/// The pid of the Redis at `redis_url` (`INFO server`'s `process_id`).
///
/// # Panics
/// When Redis cannot be reached or does not say.
pub async fn redis_pid(redis_url: &str) -> u32 {
    let mut conn = redis::Client::open(redis_url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {redis_url}: {e}"));
    info(&mut conn, "server")
        .await
        .into_iter()
        .find(|(k, _)| k == "process_id")
        .and_then(|(_, v)| v.parse().ok())
        .expect("INFO server has process_id")
}
