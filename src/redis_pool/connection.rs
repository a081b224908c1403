//! What the pool hands out: a [`PooledConnection`] over one node's multiplexed
//! connection or a cluster connection, the state-changing scripts it runs (with their
//! `WAIT`), the commands of several slots it runs at once, and the deadpool manager that
//! opens and recycles the connections.
//!
//! A checkout is a clone of a pooled connection: the commands of every request that
//! holds one share its socket, so Redis reads and answers many of them per system call
//! (redis-rs writes what is queued in one write and matches replies in order). A
//! checkout holds its connection alone with `redis.replica_acks`, since `WAIT` blocks the
//! connection it is sent on and every command queued behind it would wait too, and on a
//! Redis Cluster: a redis-rs 1.8 cluster connection shared by concurrent callers let
//! `MOVED` replies through to some of them during a slot migration (spending its retries
//! while the slot map is rebuilt), where connections held alone followed every one.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, ScriptInvocation, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::ClusterConnection,
    cluster_routing::{
        MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo,
        SlotAddr,
    },
};

use tracing::Instrument;

use super::{RedisPoolError, Shared, target, trace};

/// How many times one call loads its script after a `NOSCRIPT`: on a cluster in the
/// middle of a failover, the node a load reached may not be the one the call is sent to
/// next (the slot's master changed in between).
const MAX_LOADS: u32 = 2;

/// A pooled connection; use it wherever redis-rs takes a `ConnectionLike`. On a Redis
/// Cluster each command goes to the master of its key's slot.
pub struct PooledConnection {
    conn: Connection,
    health: Arc<Health>,
    /// The pooled object, kept for the whole checkout when the connection may not be
    /// shared (`WAIT` behind scripts, a cluster); `None` when it went back to the pool
    /// at once.
    _held: Option<managed::Object<Manager>>,
    shared: Arc<Shared>,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        self.shared
            .counters
            .returned
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let span = trace::round_trip(&self.shared.script_names, Some(cmd), 1);
        Box::pin(
            async move {
                let result = self.conn.req_packed_command(cmd).await;
                self.note(&result);
                result
            }
            .instrument(span),
        )
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let span = trace::round_trip(
            &self.shared.script_names,
            pipeline.cmd_iter().next(),
            pipeline.len(),
        );
        Box::pin(
            async move {
                let result = self.conn.req_packed_commands(pipeline, offset, count).await;
                self.note(&result);
                result
            }
            .instrument(span),
        )
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl PooledConnection {
    /// A checkout of `object`: shared (a clone of its connection, the object back in
    /// the pool when this returns) unless the pool's checkouts are exclusive.
    pub(super) fn new(object: managed::Object<Manager>, shared: Arc<Shared>) -> Self {
        Self {
            conn: object.conn.clone(),
            health: object.health.clone(),
            _held: shared.exclusive().then_some(object),
            shared,
        }
    }

    /// Condemns a node's connection after a transport error, or a `READONLY` refusal
    /// (its node was demoted), so the pool opens a new one at its next checkout (the
    /// other requests sharing it finish on it); tells the target, which may forget the
    /// node. A cluster connection is never condemned: it reconnects to a node it lost,
    /// and refreshes its slot map when redirected, by itself (opening a new one would
    /// connect to every node again, the one that is down included).
    fn note<T>(&self, result: &Result<T, RedisError>) {
        let Err(e) = result else { return };
        if matches!(self.conn, Connection::Cluster(_))
            || !(target::is_transport_error(e) || target::is_read_only(e))
        {
            return;
        }
        self.shared.target.saw_error(self.health.epoch, e);
        if !self.health.broken.swap(true, Ordering::Relaxed) {
            self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a state-changing script and, with `redis.replica_acks` = N > 0, a `WAIT N`
    /// pipelined behind it (one round trip): the reply counts only once N replicas
    /// have its writes. A script that wrote nothing waits for nothing. On a Redis
    /// Cluster the pair goes to the master of the script's first key's slot (every key
    /// of a script is in that slot), where the wait counts that master's replicas.
    ///
    /// A node that does not know the script (`NOSCRIPT`: restarted, or promoted from a
    /// replica) gets it loaded, and the pair is sent again: nothing ran the first time.
    ///
    /// # Errors
    /// [`RedisPoolError::Command`] when the script fails (or its reply does not parse),
    /// [`RedisPoolError::Unacknowledged`] when it ran but the wait fell short: the
    /// caller answers "outcome unknown", and a retry with the same idempotency key
    /// replays the first outcome (the script keeps its record with its writes).
    pub async fn invoke<T: FromRedisValue>(
        &mut self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisPoolError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        let wanted = self.shared.acks.map(|(wanted, timeout_ms)| {
            pipe.cmd("WAIT").arg(wanted).arg(timeout_ms);
            wanted
        });
        let route = match self.conn {
            Connection::Cluster(_) => pipe.cmd_iter().next().and_then(script_route),
            Connection::Node(_) => None,
        };
        let mut loads = 0;
        let replies = loop {
            match self.send(&pipe, route).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                        && loads < MAX_LOADS =>
                {
                    loads += 1;
                    self.load(invocation, route).await?;
                }
                other => break other?,
            }
        };
        let mut replies = replies.into_iter();
        let reply = replies.next().unwrap_or(Value::Nil);
        if let Some(wanted) = wanted {
            let acked = u32::from_redis_value(replies.next().unwrap_or(Value::Nil))
                .map_err(RedisError::from)?;
            if acked < wanted {
                return Err(RedisPoolError::Unacknowledged { acked, wanted });
            }
        }
        Ok(T::from_redis_value(reply).map_err(RedisError::from)?)
    }

    /// `pipe` as one round trip to the node `route` names (on a cluster; one node has
    /// only itself), its replies checked for errors.
    async fn send(
        &mut self,
        pipe: &Pipeline,
        route: Option<Route>,
    ) -> Result<Vec<Value>, RedisError> {
        let replies = match &mut self.conn {
            Connection::Cluster(conn) => {
                let span = trace::round_trip(
                    &self.shared.script_names,
                    pipe.cmd_iter().next(),
                    pipe.len(),
                );
                conn.route_pipeline(pipe.clone(), 0, pipe.len(), single_node(route))
                    .instrument(span)
                    .await
            }
            Connection::Node(_) => self.req_packed_commands(pipe, 0, pipe.len()).await,
        }?;
        replies.into_iter().map(Value::extract_error).collect()
    }

    /// Loads `invocation`'s script where it is about to run. On a cluster that node
    /// is not known here (redis-rs may have followed a redirection to it, or fallen back
    /// to another node of the shard), so the script goes to every node the connection
    /// knows, replicas included (one of them may be promoted next); a node that does not
    /// answer fails the load as a whole but not the others' loads, and the call's next
    /// attempt tells whether its node has the script.
    async fn load(
        &mut self,
        invocation: &ScriptInvocation<'_>,
        route: Option<Route>,
    ) -> Result<(), RedisError> {
        let Connection::Cluster(conn) = &self.conn else {
            invocation.load_async(self).await?;
            return Ok(());
        };
        let mut everywhere = OnNodes {
            conn: conn.clone(),
            routing: RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllNodes,
                Some(ResponsePolicy::AllSucceeded),
            )),
        };
        if let Err(e) = invocation.load_async(&mut everywhere).await {
            tracing::debug!(error = %e, "a node did not load the script; loading it on the slot's master");
            let mut there = OnNodes {
                conn: conn.clone(),
                routing: RoutingInfo::SingleNode(single_node(route)),
            };
            invocation.load_async(&mut there).await?;
        }
        Ok(())
    }

    /// Runs `cmd` on one master: any master of a cluster (masters learn a changed slot
    /// map first), the one node otherwise.
    pub(super) async fn on_a_master(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match &mut self.conn {
            Connection::Cluster(conn) => conn
                .route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .instrument(trace::round_trip(&self.shared.script_names, Some(cmd), 1))
                .await
                .and_then(Value::extract_error),
            Connection::Node(_) => self.req_packed_command(cmd).await,
        }
    }

    /// Runs `commands`, each touching keys of one hash slot but not all of the same one,
    /// and returns their replies in order: one pipeline on a single node; on Redis
    /// Cluster, each command routed to its slot's master, all in flight at once.
    ///
    /// # Errors
    /// The first command that fails.
    pub async fn each(&mut self, commands: &[Cmd]) -> Result<Vec<Value>, RedisError> {
        let Connection::Cluster(conn) = &self.conn else {
            let mut pipe = redis::pipe();
            for command in commands {
                pipe.add_command(command.clone());
            }
            return pipe.query_async(self).await;
        };
        let names = &self.shared.script_names;
        let replies = futures::future::join_all(commands.iter().map(|command| {
            // A clone shares the cluster connection's routing and node connections.
            let mut conn = conn.clone();
            async move {
                conn.req_packed_command(command)
                    .await
                    .and_then(Value::extract_error)
            }
            .instrument(trace::round_trip(names, Some(command), 1))
        }))
        .await;
        replies.into_iter().collect()
    }
}

/// The master of the slot of a script call's first key (`EVALSHA sha numkeys key ...`);
/// `None` for a script without keys.
fn script_route(evalsha: &Cmd) -> Option<Route> {
    let mut args = evalsha.args_iter().skip(2);
    let numkeys = match args.next()? {
        redis::Arg::Simple(n) => std::str::from_utf8(n).ok()?.parse::<u64>().ok()?,
        _ => return None,
    };
    if numkeys == 0 {
        return None;
    }
    match args.next()? {
        redis::Arg::Simple(key) => Some(Route::with_key(key, SlotAddr::Master)),
        _ => None,
    }
}

/// `route` as a cluster connection's single-node routing (any node without one).
fn single_node(route: Option<Route>) -> SingleNodeRoutingInfo {
    route.map_or(
        SingleNodeRoutingInfo::Random,
        SingleNodeRoutingInfo::SpecificNode,
    )
}

/// A cluster connection that sends everything where `routing` says, for redis-rs
/// helpers that take a connection (loading a script).
struct OnNodes {
    conn: ClusterConnection,
    routing: RoutingInfo,
}

impl ConnectionLike for OnNodes {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.conn
                .route_command(cmd.clone(), self.routing.clone())
                .await
                .and_then(Value::extract_error)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let route = match &self.routing {
                RoutingInfo::SingleNode(route) => route.clone(),
                _ => SingleNodeRoutingInfo::Random,
            };
            self.conn
                .route_pipeline(pipeline.clone(), offset, count, route)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// One node's multiplexed connection, or a cluster connection (a multiplexed connection
/// per node, routing by slot); a clone shares the original's sockets.
#[derive(Clone)]
pub(super) enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// One pooled connection and its health, which its checkouts share.
pub(super) struct Conn {
    conn: Connection,
    health: Arc<Health>,
}

/// The target epoch a pooled connection was opened in, and whether an error on it (on
/// any checkout) has condemned it.
struct Health {
    epoch: u64,
    broken: AtomicBool,
}

/// Opens the pool's connections (to the target's node, or to the cluster) and decides
/// whether one given back may be reused.
pub(super) struct Manager {
    pub(super) shared: Arc<Shared>,
    pub(super) config: redis::AsyncConnectionConfig,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let target = &self.shared.target;
        let (conn, epoch) = match target.cluster() {
            Some(cluster) => (Connection::Cluster(cluster.connect().await?), 0),
            None => {
                let (client, epoch) = target.node().await?;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
                    .inspect_err(|e| target.saw_error(epoch, e))?;
                (Connection::Node(conn), epoch)
            }
        };
        self.shared.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            conn,
            health: Arc::new(Health {
                epoch,
                broken: AtomicBool::new(false),
            }),
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        // A connection that timed out may still deliver the late reply; one that saw an
        // I/O error is gone. Either way a fresh one is cheaper than guessing.
        if conn.health.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message("connection saw a transport error"));
        }
        if conn.health.epoch != self.shared.target.epoch() {
            return Err(RecycleError::message("the primary may have moved"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_routed_by_its_first_key() {
        let script = redis::Script::new("return 1");
        let mut invocation = script.key("{a}:x");
        invocation.key("{a}:y").arg("v");
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let route = pipe.cmd_iter().next().and_then(script_route);
        assert_eq!(route, Some(Route::with_key("{a}:x", SlotAddr::Master)));

        let keyless = script.arg("v");
        let mut pipe = redis::pipe();
        pipe.invoke_script(&keyless);
        assert_eq!(pipe.cmd_iter().next().and_then(script_route), None);
    }
}
