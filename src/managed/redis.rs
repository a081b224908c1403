//! The `redis` kind: a dedicated connection to the configured Redis, outside the pool,
//! for blocking reads and other commands that must not hold a pooled connection.
//! Ids name the purpose (one connection per id). On Redis Cluster a connection reaches
//! one node only: the one serving the hash slot of its id read as a key name, so name a
//! connection after the key (or the `{hash tag}`) it will read.

use std::sync::Mutex;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{Factory, Handle, HandleError};
use crate::redis_pool::RedisPool;

/// The kind's name.
pub const KIND: &str = "redis";

/// Opens dedicated connections from the pool's client and settings.
pub struct RedisConnectionFactory {
    pool: RedisPool,
}

impl RedisConnectionFactory {
    /// A factory over `pool`'s Redis.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Factory for RedisConnectionFactory {
    type Output = RedisConnection;

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn create(&self, id: &str) -> Result<RedisConnection, HandleError> {
        let failed = |reason: String| HandleError::Init {
            kind: KIND,
            id: id.to_owned(),
            reason,
        };
        let connect = self.pool.dedicated_for(id);
        let conn = tokio::time::timeout(self.pool.connect_timeout(), connect)
            .await
            .map_err(|_| failed("Redis did not answer in time".to_owned()))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(RedisConnection {
            conn: Mutex::new(Some(conn)),
        })
    }
}

/// A dedicated Redis connection (no response timeout: the caller bounds its commands).
pub struct RedisConnection {
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisConnection {
    /// The connection, unless it was cleaned up.
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().expect("redis connection").clone()
    }
}

#[async_trait]
impl Handle for RedisConnection {
    async fn cleanup(&self) {
        // The socket closes when the last clone handed out is dropped.
        self.conn.lock().expect("redis connection").take();
    }
}
