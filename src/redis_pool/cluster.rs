//! Redis Cluster (`redis.mode = "cluster"`): the redis-rs cluster client the pool's
//! connections come from, the slot → master map as the cluster tells it (`CLUSTER
//! SLOTS`), connections to one node of it, and the watch that tells the owners of such
//! connections that the map changed.
//!
//! A pooled connection is a redis-rs `ClusterConnection`: it keeps a connection to every
//! node, routes each command by its key's slot, follows `MOVED` and `ASK`, refreshes its
//! slot map when redirected and retries within `redis.command_timeout_ms` as a whole, so
//! a failover or a slot migration costs a caller retries, never a wrong node. What needs
//! one node (a blocking read of one slot's streams, the bus's sharded subscriptions,
//! readiness's check of every master) asks the cluster where the slot lives each time it
//! connects, and reconnects when the watcher sees the map change.

use std::{
    collections::BTreeSet,
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, ProtocolVersion, RedisError, TlsCertificates, Value,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tokio::sync::watch;

use super::{
    RedisPoolError,
    node::{addr_like, client},
};
use crate::config::RedisSettings;

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// Attempts redis-rs makes of one command (redirections, reconnections, `TRYAGAIN`):
/// all of them within `redis.command_timeout_ms`, which bounds the command as a whole.
const RETRIES: u32 = 5;
/// The shortest and longest pause between two of them, in milliseconds: short, since the
/// whole command has `redis.command_timeout_ms` (redis-rs's default starts at 1.28 s).
const MIN_RETRY_WAIT_MS: u64 = 10;
const MAX_RETRY_WAIT_MS: u64 = 100;

/// A node's address as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    /// Host name or IP address.
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which master serves each hash slot, as one node of the cluster saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMasters {
    /// `(first slot, last slot, master)`, sorted by first slot.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMasters {
    /// Parses a `CLUSTER SLOTS` reply: `[first, last, [host, port, id, ...], replicas...]`
    /// per range. A range whose master announces no usable address (`""` or `"?"`) is
    /// left out, as unserved.
    ///
    /// # Errors
    /// When the reply does not have that shape.
    pub fn parse(reply: Value) -> Result<Self, RedisError> {
        let malformed = |what: &str| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "malformed CLUSTER SLOTS reply",
                what.to_owned(),
            ))
        };
        let mut ranges = Vec::new();
        for range in Vec::<Value>::from_redis_value(reply)? {
            let mut fields = Vec::<Value>::from_redis_value(range)?.into_iter();
            let (Some(first), Some(last), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed("a range without its master"));
            };
            // redis-rs converts integers to narrower ones with `as`: read them whole.
            let slot = |v: Value| -> Result<u16, RedisError> {
                u16::try_from(i64::from_redis_value(v)?)
                    .ok()
                    .filter(|s| *s < SLOTS)
                    .ok_or_else(|| malformed("a slot out of bounds"))
            };
            let (first, last) = (slot(first)?, slot(last)?);
            if first > last {
                return Err(malformed("a slot range out of order"));
            }
            let mut node = Vec::<Value>::from_redis_value(master)?.into_iter();
            let (Some(host), Some(port)) = (node.next(), node.next()) else {
                return Err(malformed("a master without its address"));
            };
            let host = String::from_redis_value(host)?;
            if host.is_empty() || host == "?" {
                continue;
            }
            let port = u16::try_from(i64::from_redis_value(port)?)
                .map_err(|_| malformed("a port out of bounds"))?;
            ranges.push((first, last, NodeAddr { host, port }));
        }
        ranges.sort_unstable();
        Ok(Self { ranges })
    }

    /// The master serving `key`'s slot.
    pub fn master_for(&self, key: &[u8]) -> Option<&NodeAddr> {
        self.master_of_slot(key_slot(key))
    }

    /// The master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Option<&NodeAddr> {
        let i = self.ranges.partition_point(|(_, last, _)| *last < slot);
        self.ranges
            .get(i)
            .filter(|(first, _, _)| *first <= slot)
            .map(|(_, _, node)| node)
    }

    /// Every master serving a slot, each once, in address order.
    pub fn masters(&self) -> Vec<&NodeAddr> {
        let masters: BTreeSet<&NodeAddr> = self.ranges.iter().map(|(_, _, node)| node).collect();
        masters.into_iter().collect()
    }

    /// The first slot no master serves, if any.
    pub fn unserved(&self) -> Option<u16> {
        let mut next = 0u16;
        for (first, last, _) in &self.ranges {
            if *first > next {
                return Some(next);
            }
            next = next.max(last.saturating_add(1));
        }
        (next < SLOTS).then_some(next)
    }
}

/// The hash slot of `key`, as every node computes it: CRC16 (XMODEM) of its hash tag
/// (the text between the first `{` and the next `}`, when not empty) or of the whole
/// key, modulo the slot count. (redis-rs computes it too, but keeps the number private.)
pub fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tag) % SLOTS
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// The cluster the pool reaches, and what the watcher last saw of its slot map.
pub(super) struct ClusterTarget {
    client: ClusterClient,
    /// The first seed's credentials, protocol and TLS, for connections to one node.
    template: ConnectionInfo,
    root_cert: Option<Vec<u8>>,
    /// The slot map the watcher last saw; `None` before its first look.
    seen: Mutex<Option<SlotMasters>>,
    /// Counts the changes of the slot map the watcher saw.
    changed: watch::Sender<u64>,
}

impl ClusterTarget {
    /// The cluster `settings.cluster_urls` seed; the credentials, protocol and TLS of
    /// the first apply to every node.
    ///
    /// # Errors
    /// A malformed URL, or a seed list redis-rs refuses.
    pub(super) fn new(
        settings: &RedisSettings,
        root_cert: Option<Vec<u8>>,
    ) -> Result<Self, RedisPoolError> {
        let infos = settings
            .cluster_urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        let template = infos.first().cloned().ok_or_else(|| {
            RedisPoolError::Unavailable("redis.cluster_urls names no node".into())
        })?;
        // Every seed gets the first one's settings, so redis-rs's check that the seeds
        // agree holds whatever the other URLs carry.
        let seeds: Vec<ConnectionInfo> = infos
            .iter()
            .map(|info| {
                let (host, port) = host_port(info.addr());
                template.clone().set_addr(addr_like(&template, host, port))
            })
            .collect();
        let redis = template.redis_settings();
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .response_timeout(Duration::from_millis(settings.command_timeout_ms))
            .retries(RETRIES)
            .min_retry_wait(MIN_RETRY_WAIT_MS)
            .max_retry_wait(MAX_RETRY_WAIT_MS)
            .retry_wait_formula(MIN_RETRY_WAIT_MS, 2)
            .use_protocol(redis.protocol());
        if let Some(username) = redis.username() {
            builder = builder.username(username);
        }
        if let Some(password) = redis.password() {
            builder = builder.password(password);
        }
        if let ConnectionAddr::TcpTls { .. } = template.addr() {
            // rustls needs one process-wide crypto provider; keep one already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(root_cert) = &root_cert {
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert.clone()),
                });
            }
        }
        Ok(Self {
            client: builder.build()?,
            template,
            root_cert,
            seen: Mutex::new(None),
            changed: watch::channel(0).0,
        })
    }

    /// A new cluster connection: one connection per node, found through the seeds.
    ///
    /// # Errors
    /// When no seed answers, or the slot map cannot be read.
    pub(super) async fn connect(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    /// The client of one node, with the first seed's credentials and TLS; RESP3 when
    /// `resp3` (for push messages).
    ///
    /// # Errors
    /// When the TLS settings are refused.
    pub(super) fn client_for(&self, node: &NodeAddr, resp3: bool) -> Result<Client, RedisError> {
        let mut info =
            self.template
                .clone()
                .set_addr(addr_like(&self.template, &node.host, node.port));
        if resp3 {
            let redis = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(redis);
        }
        client(info, self.root_cert.as_deref()).map_err(|e| match e {
            RedisPoolError::Command(e) => e,
            other => RedisError::from((ErrorKind::InvalidClientConfig, "tls", other.to_string())),
        })
    }

    /// A connection to `node` with `config`.
    ///
    /// # Errors
    /// When it cannot be established.
    pub(super) async fn connect_node(
        &self,
        node: &NodeAddr,
        config: &AsyncConnectionConfig,
        resp3: bool,
    ) -> Result<redis::aio::MultiplexedConnection, RedisError> {
        self.client_for(node, resp3)?
            .get_multiplexed_async_connection_with_config(config)
            .await
    }

    /// One watcher step: records `map` and says whether it differs from the map seen
    /// before (never on the first look); a change moves [`ClusterTarget::subscribe`]'s
    /// receivers.
    pub(super) fn observe(&self, map: SlotMasters) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = seen.as_ref().is_some_and(|before| *before != map);
        if changed {
            tracing::info!(
                masters = %map.masters().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "the Redis Cluster's slot map changed"
            );
            self.changed.send_modify(|n| *n += 1);
        }
        *seen = Some(map);
        changed
    }

    /// A receiver that changes whenever the watcher sees the slot map change.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The host and port of `addr` (a Unix socket has neither: redis-rs refuses it for a
/// cluster before this is asked).
fn host_port(addr: &ConnectionAddr) -> (&str, u16) {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            (host, *port)
        }
        _ => ("", 0),
    }
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::{Route, SlotAddr};

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn range(first: i64, last: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk(host), Value::Int(port + 1), bulk("replica")]),
        ])
    }

    #[test]
    fn a_slots_reply_maps_every_slot_to_its_master() {
        let map = SlotMasters::parse(Value::Array(vec![
            range(5461, 10922, "10.0.0.2", 7000),
            range(0, 5460, "10.0.0.1", 7000),
            range(10923, 16383, "10.0.0.3", 7000),
        ]))
        .unwrap();
        assert_eq!(map.unserved(), None);
        assert_eq!(map.master_of_slot(0).unwrap().to_string(), "10.0.0.1:7000");
        assert_eq!(map.master_of_slot(5461).unwrap().host, "10.0.0.2");
        assert_eq!(map.master_of_slot(16383).unwrap().host, "10.0.0.3");
        // CLUSTER KEYSLOT foo = 12182.
        assert_eq!(map.master_for(b"foo").unwrap().host, "10.0.0.3");
        assert_eq!(map.master_for(b"{foo}:bar"), map.master_for(b"foo"));
        assert_eq!(map.masters().len(), 3);
    }

    #[test]
    fn gaps_and_unknown_addresses_are_unserved_slots() {
        let map = SlotMasters::parse(Value::Array(vec![
            range(0, 99, "10.0.0.1", 7000),
            range(100, 199, "", 7000),
            range(200, 16383, "10.0.0.1", 7000),
        ]))
        .unwrap();
        assert_eq!(map.unserved(), Some(100));
        assert_eq!(map.master_of_slot(150), None);
        assert_eq!(map.masters().len(), 1);
        let empty = SlotMasters::parse(Value::Array(vec![])).unwrap();
        assert_eq!(empty.unserved(), Some(0));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for reply in [
            Value::Int(1),
            Value::Array(vec![Value::Array(vec![Value::Int(0)])]),
            Value::Array(vec![range(0, 20000, "h", 1)]),
            Value::Array(vec![range(10, 5, "h", 1)]),
            Value::Array(vec![range(0, 1, "h", 70000)]),
        ] {
            let parsed = SlotMasters::parse(reply.clone());
            assert!(parsed.is_err(), "{reply:?}: {parsed:?}");
        }
    }

    #[test]
    fn key_slots_are_the_servers() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        for key in [&b"a"[..], b"session:1", b"x{y}z", b"\xff"] {
            assert_eq!(
                Route::with_key(key, SlotAddr::Master),
                Route::new(key_slot(key), SlotAddr::Master),
                "{key:?}"
            );
        }
    }
}
