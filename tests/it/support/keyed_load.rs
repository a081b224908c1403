//! Keyed increments under faults: clients that retry each increment under its own
//! idempotency key until it is acknowledged, with what they saw (attempts, the worst
//! one, when calls started failing and when they recovered), and the checks a fault
//! test ends with. The final counter against the keys tells lost increments (fewer)
//! from increments applied twice (more).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{
    http::{call_2026, call_2026_keyed},
    replica::Replica,
    wait::retry,
};

/// Longer than any attempt may take while the primary moves: only a hang exceeds it.
pub const HANG: Duration = Duration::from_secs(5);

/// Clients calling at once, each on its own keys.
pub const CLIENTS: usize = 4;

/// What the clients saw while the fault ran.
#[derive(Debug, Default)]
pub struct Seen {
    /// Distinct keys, each retried until acknowledged.
    pub keys: u64,
    /// Calls made, retries included.
    pub attempts: u64,
    /// The slowest attempt.
    pub worst: Duration,
    /// The first failed attempt.
    pub first_failure: Option<Instant>,
    /// The first success after the first failure.
    pub recovered: Option<Instant>,
}

impl Seen {
    /// How long calls failed: from the first failure to the first success after it.
    pub fn failing_for(&self) -> Option<Duration> {
        self.recovered
            .zip(self.first_failure)
            .map(|(r, f)| r.duration_since(f))
    }
}

/// `CLIENTS` clients of `mcp` incrementing `handle`'s counter under keys of their own,
/// each key retried until acknowledged, until `stop` is set.
fn keyed_clients(
    mcp: &str,
    handle: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|n| {
            let (mcp, handle, stop, seen) = (
                mcp.to_owned(),
                handle.to_owned(),
                stop.clone(),
                seen.clone(),
            );
            tokio::spawn(async move {
                // A new connection per call, so the hop spreads calls over the replicas.
                let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
                let args = json!({"operation": "increment", "session_id": handle});
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("client-{n}-increment-{k}");
                    seen.lock().unwrap().keys += 1;
                    loop {
                        let started = Instant::now();
                        let call =
                            call_2026_keyed(&http, &mcp, "counter", args.clone(), Some(&key));
                        let answer = tokio::time::timeout(HANG, call)
                            .await
                            .unwrap_or_else(|_| panic!("{key}: no answer within {HANG:?}"));
                        let took = started.elapsed();
                        let done = {
                            let mut seen = seen.lock().unwrap();
                            seen.attempts += 1;
                            seen.worst = seen.worst.max(took);
                            if answer.is_ok() {
                                if seen.first_failure.is_some() && seen.recovered.is_none() {
                                    seen.recovered = Some(Instant::now());
                                }
                            } else {
                                seen.first_failure.get_or_insert_with(Instant::now);
                            }
                            answer.is_ok()
                        };
                        if done {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// The counter behind `handle`, read through `mcp` (retried until it answers).
pub async fn counter(mcp: &str, handle: &str) -> u64 {
    let value: Value = retry("the final counter can be read", async || {
        call_2026(
            &Client::new(),
            mcp,
            "counter",
            json!({"operation": "get", "session_id": handle}),
        )
        .await
    })
    .await;
    value["value"].as_i64().expect("a counter value") as u64
}

/// Whether `replica` answers `/readyz` with 200.
pub async fn ready(http: &Client, replica: &Replica) -> bool {
    http.get(replica.endpoint("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

/// [`CLIENTS`] keyed clients running against one session, from [`KeyedLoad::start`]
/// until [`KeyedLoad::finish`].
pub struct KeyedLoad {
    mcp: String,
    handle: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl KeyedLoad {
    /// Starts the clients on `handle`'s counter through `mcp`.
    pub fn start(mcp: &str, handle: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let clients = keyed_clients(mcp, handle, &stop, &seen);
        Self {
            mcp: mcp.to_owned(),
            handle: handle.to_owned(),
            stop,
            seen,
            clients,
        }
    }

    /// Waits until every replica is ready again, lets the clients run one more second
    /// on the healed deployment, stops them, and returns the final counter and what
    /// they saw (the worst attempt checked against [`HANG`]).
    pub async fn finish(self, replicas: &[Replica]) -> (u64, Seen) {
        let http = Client::new();
        for replica in replicas {
            crate::support::wait::wait_until("readiness is green again", async || {
                ready(&http, replica).await
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("no client panicked");
        }
        let value = counter(&self.mcp, &self.handle).await;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(seen.worst < HANG, "an attempt took {:?}", seen.worst);
        (value, seen)
    }
}
