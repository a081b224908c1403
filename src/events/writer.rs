//! The write-behind of request-stream events: an event of a request stream started here
//! gets its entry id minted on this replica (`0-2`, `0-3`, … after the priming `0-1`,
//! see `open.rs`), goes to its client at once and is written by one background job,
//! which sends whatever has queued meanwhile as one batch. A session's worker thus
//! waits no round trip per event, and the events of concurrent calls share round trips
//! (Redis reads many commands per read call).
//!
//! What that costs: an event id can reach a client a moment before its entry is in
//! Redis. A resumption after such an id waits for it (`store.rs`); a write that fails
//! is counted ([`Writer::failures`], which stops the holder's fast path until Redis
//! answers again) and logged, and its event is simply not resumable, as an event that
//! was never stored. Writes stay in order: one job, one batch at a time, and a batch's
//! writes to one stream go as one script (on Redis Cluster the batch's commands travel
//! concurrently, so separate commands of one stream could overtake each other, and an
//! entry under a smaller id than the stream's last is refused). An explicit id also
//! makes a batch sent again harmless: an entry already written is skipped.
//!
//! The queue is bounded by count ([`QUEUE`] writes) and by the bytes of the messages it
//! holds ([`QUEUE_BYTES`]), so large responses queued behind a slow Redis cannot hold
//! more than that much memory; a sender waits for room at most one command timeout, as
//! for a full queue. `/metrics` shows the writes done and failed and what is queued
//! (`event_writes_total`, `event_writes_failed_total`, `event_write_queue`,
//! `event_write_queue_bytes`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use redis::Cmd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::format::{EntryId, duration_ms};
use crate::{
    jobs::Jobs,
    metrics::{Metrics, encode_counter, encode_gauge},
    redis_pool::{RedisPool, RedisPoolError},
};

/// Writes queued before a sender waits for the job (a Redis slower than the calls).
const QUEUE: usize = 4096;
/// Bytes of messages queued before a sender waits for the job; a message larger than
/// this takes the whole budget (it waits for an empty queue).
const QUEUE_BYTES: usize = 16 << 20;
/// Most writes sent in one batch.
const MAX_BATCH: usize = 256;
/// The waits before a failed batch is sent again.
const RETRIES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];

/// The writes of one stream in a batch, in order, as one script (so they reach Redis
/// in order on a cluster too, where the batch's commands travel concurrently): `XADD`
/// of each entry under its minted id, an entry the stream already has (a batch sent
/// again) skipped, then `PEXPIRE` with the TTL of the stream's last write, also when an
/// entry failed, so no stream is left without one. `ARGV`: the length to trim to, the
/// TTL in ms, then id, kind, message and retry per entry.
const APPEND_SCRIPT: &str = r"
local failed
for i = 3, #ARGV, 4 do
    local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i],
        'k', ARGV[i + 1], 'm', ARGV[i + 2], 'r', ARGV[i + 3])
    if type(added) == 'table' and added.err
        and not string.find(added.err, 'equal or smaller', 1, true) then
        failed = added
        break
    end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if failed then
    return failed
end
return 1
";

/// One write of the job.
#[derive(Debug)]
pub(super) enum Write {
    /// Entry `id` of stream `key`, which then lives `ttl`.
    Append {
        key: String,
        id: EntryId,
        kind: &'static str,
        message: String,
        retry: String,
        ttl: Duration,
    },
    /// Stream `key` lives `ttl` from now (a finished stream whose client left).
    Extend { key: String, ttl: Duration },
}

impl Write {
    /// The bytes it holds in the queue, as counted against [`QUEUE_BYTES`] (at least 1,
    /// so every write holds a share).
    fn bytes(&self) -> u32 {
        let len = match self {
            Write::Append {
                key,
                message,
                retry,
                ..
            } => key.len() + message.len() + retry.len(),
            Write::Extend { key, .. } => key.len(),
        };
        u32::try_from(len.clamp(1, QUEUE_BYTES)).unwrap_or(u32::MAX)
    }
}

/// A write in the queue with its share of [`QUEUE_BYTES`], given back once written.
struct Queued {
    write: Write,
    bytes: OwnedSemaphorePermit,
}

/// The sending side of the write-behind job. Dropping it lets the job end.
pub(super) struct Writer {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

/// What the job and the senders share.
struct Shared {
    pool: RedisPool,
    max_len: usize,
    script: redis::Script,
    /// Writes that failed since start.
    failures: AtomicU64,
    /// Writes handed to the job (or written by their sender) since start.
    queued: AtomicU64,
    /// Writes done, stored or failed, since start.
    done: watch::Sender<u64>,
    /// The byte budget of the queue ([`QUEUE_BYTES`]).
    bytes: Arc<Semaphore>,
}

impl Writer {
    /// Starts the job on `jobs`; streams are trimmed to about `max_len` entries.
    pub(super) fn start(pool: RedisPool, max_len: usize, jobs: &Jobs) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let script = redis::Script::new(APPEND_SCRIPT);
        pool.name_scripts(&[("events.append", &script)]);
        let shared = Arc::new(Shared {
            pool,
            max_len: max_len.max(1),
            script,
            failures: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            done: watch::Sender::new(0),
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
        });
        let job = Arc::clone(&shared);
        jobs.add("event writer", move |stop| job.run(rx, stop));
        Self { tx, shared }
    }

    /// Queues `write`, waiting while the queue is full (by count or by bytes) for at
    /// most one command timeout: past it (Redis far slower than the calls, or gone) the
    /// event is given up and counted as failed, so a session's worker never stalls
    /// behind the queue. Once the job has stopped (shutdown), writes it at once.
    pub(super) async fn write(&self, write: Write) {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        let bound = self.shared.pool.command_timeout();
        let bytes = write.bytes();
        let queued = tokio::time::timeout(bound, async {
            let Ok(permit) = Arc::clone(&self.shared.bytes)
                .acquire_many_owned(bytes)
                .await
            else {
                return Err(write);
            };
            self.tx
                .send(Queued {
                    write,
                    bytes: permit,
                })
                .await
                .map_err(|mpsc::error::SendError(queued)| queued.write)
        });
        match queued.await {
            Ok(Ok(())) => {}
            Ok(Err(write)) => self.shared.write_batch(vec![write]).await,
            Err(_) => {
                self.shared.done.send_modify(|done| *done += 1);
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "the event write queue stayed full; an event was not stored and cannot be resumed"
                );
            }
        }
    }

    /// Queues `write` without waiting; when the queue is full (by count or by bytes)
    /// or the job stopped, the write runs on a task of its own.
    pub(super) fn write_soon(&self, write: Write) {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        let permit = Arc::clone(&self.shared.bytes).try_acquire_many_owned(write.bytes());
        let write = match permit {
            Ok(permit) => match self.tx.try_send(Queued {
                write,
                bytes: permit,
            }) {
                Ok(()) => return,
                Err(
                    mpsc::error::TrySendError::Full(queued)
                    | mpsc::error::TrySendError::Closed(queued),
                ) => queued.write,
            },
            Err(_) => write,
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move { shared.write_batch(vec![write]).await });
    }

    /// Waits (at most `bound`) until the writes queued so far are done, stored or
    /// failed, so that a read on this replica finds what it was told of.
    pub(super) async fn settle(&self, bound: Duration) {
        let queued = self.shared.queued.load(Ordering::Acquire);
        let mut done = self.shared.done.subscribe();
        let _ = tokio::time::timeout(bound, done.wait_for(|done| *done >= queued)).await;
    }

    /// Writes that failed since start.
    pub(super) fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Registers the `event_write*` series with `metrics`, read at each scrape.
    pub(super) fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(WriterFigures(Arc::clone(&self.shared)));
    }
}

impl Shared {
    /// Sends batches of what is queued until `stop` fires, then what is left.
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Queued>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                received = rx.recv_many(&mut batch, MAX_BATCH) => if received == 0 {
                    return;
                },
                () = stop.cancelled() => break,
            }
            self.write_queued(&mut batch).await;
        }
        // Shutdown: what is queued still goes out, and later senders write themselves.
        rx.close();
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write_queued(&mut batch).await;
        }
    }

    /// Writes the queued `batch`, then gives back its bytes and empties it.
    async fn write_queued(&self, batch: &mut Vec<Queued>) {
        let (writes, permits): (Vec<Write>, Vec<OwnedSemaphorePermit>) = batch
            .drain(..)
            .map(|queued| (queued.write, queued.bytes))
            .unzip();
        self.write_batch(writes).await;
        drop(permits);
    }

    /// Writes `batch` in one round trip (one per master on a cluster), sent again after
    /// [`RETRIES`] when it fails (a connection Redis dropped, a failover): the explicit
    /// ids make a second write of an entry a no-op.
    async fn write_batch(&self, batch: Vec<Write>) {
        let commands = self.commands(&batch);
        let mut outcome = self.send(&commands).await;
        for delay in RETRIES {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(delay).await;
            outcome = self.send(&commands).await;
        }
        let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        self.done.send_modify(|done| *done += count);
        if let Err(error) = outcome {
            self.failures.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(
                error = %error,
                events = batch.len(),
                "response stream events not stored; they cannot be resumed"
            );
        }
    }

    /// Sends `commands`; a node that did not know the script gets it loaded and the
    /// commands again.
    async fn send(&self, commands: &[Cmd]) -> Result<(), RedisPoolError> {
        let mut conn = self.pool.get().await?;
        match conn.each(commands).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.prepare_invoke().load_async(&mut conn).await?;
                conn.each(commands).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// Writes queued and not yet done.
    fn pending(&self) -> u64 {
        self.queued
            .load(Ordering::Acquire)
            .saturating_sub(*self.done.borrow())
    }

    /// One script per stream written in `batch`, its writes in their order.
    fn commands(&self, batch: &[Write]) -> Vec<Cmd> {
        /// A stream's entries in the batch and the TTL of its last write.
        type Stream<'a> = (&'a str, Vec<(String, &'a str, &'a str, &'a str)>, Duration);
        let mut streams: Vec<Stream<'_>> = Vec::new();
        for write in batch {
            let (key, ttl) = match write {
                Write::Append { key, ttl, .. } | Write::Extend { key, ttl } => (key, *ttl),
            };
            let at = streams
                .iter()
                .position(|(k, ..)| *k == key.as_str())
                .unwrap_or_else(|| {
                    streams.push((key, Vec::new(), ttl));
                    streams.len() - 1
                });
            let (_, entries, last_ttl) = &mut streams[at];
            *last_ttl = ttl;
            if let Write::Append {
                id,
                kind,
                message,
                retry,
                ..
            } = write
            {
                entries.push((id.to_string(), kind, message, retry));
            }
        }
        streams
            .into_iter()
            .map(|(key, entries, ttl)| {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.script.get_hash())
                    .arg(1)
                    .arg(key)
                    .arg(self.max_len)
                    .arg(duration_ms(ttl));
                for (id, kind, message, retry) in entries {
                    cmd.arg(id).arg(kind).arg(message).arg(retry);
                }
                cmd
            })
            .collect()
    }
}

/// The `event_write*` series: writes done and failed since start, and the queue.
struct WriterFigures(Arc<Shared>);

impl std::fmt::Debug for WriterFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterFigures").finish_non_exhaustive()
    }
}

impl Collector for WriterFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let shared = &self.0;
        encode_counter(
            &mut enc,
            "event_writes",
            "Response stream events written behind their delivery, stored or failed",
            *shared.done.borrow(),
        )?;
        encode_counter(
            &mut enc,
            "event_writes_failed",
            "Response stream events written behind that were not stored (Redis failed, or \
             the write queue stayed full for a command timeout): they cannot be resumed",
            shared.failures.load(Ordering::Relaxed),
        )?;
        encode_gauge(
            &mut enc,
            "event_write_queue",
            "Events waiting to be written behind their delivery",
            shared.pending() as f64,
        )?;
        let free = shared.bytes.available_permits().min(QUEUE_BYTES);
        encode_gauge(
            &mut enc,
            "event_write_queue_bytes",
            "Bytes of the events waiting in the write queue",
            (QUEUE_BYTES - free) as f64,
        )
    }
}
