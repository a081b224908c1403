//! Keyed increments under faults and upgrades: clients that retry each increment under
//! its own idempotency key until it is acknowledged, on a 2026-07-28 handle or in a
//! 2025-era session, with what they saw (attempts, the worst one, when calls started
//! failing and when they recovered), and the checks such a test ends with. The final
//! counter against the keys tells lost increments (fewer) from increments applied twice
//! (more).

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
    http::{call_2025_keyed, call_2026_keyed},
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
    /// The first failed attempts' keys and errors, at most [`MAX_FAILURES_KEPT`].
    pub failures: Vec<String>,
}

/// How many failed attempts [`Seen::failures`] describes.
pub const MAX_FAILURES_KEPT: usize = 20;

impl Seen {
    /// How long calls failed: from the first failure to the first success after it.
    pub fn failing_for(&self) -> Option<Duration> {
        self.recovered
            .zip(self.first_failure)
            .map(|(r, f)| r.duration_since(f))
    }
}

/// Whose counter the clients increment.
#[derive(Debug, Clone)]
enum Target {
    /// A 2026-07-28 handle, passed as the `session_id` argument.
    Handle(String),
    /// A 2025-era session, named by the `Mcp-Session-Id` header, and how many clients
    /// call in it at once.
    Session(String, usize),
}

impl Target {
    /// How many clients call at once: [`CLIENTS`] on a handle; in a 2025-era session
    /// one, calling in turn as a client of that era does, unless a test asks for more.
    fn clients(&self) -> usize {
        match self {
            Self::Handle(_) => CLIENTS,
            Self::Session(_, clients) => *clients,
        }
    }

    /// One `counter` call of `operation` through `mcp` under `key`; the `id` of a
    /// 2025-era request is unique among the session's calls in flight.
    async fn call(
        &self,
        http: &Client,
        mcp: &str,
        (operation, id): (&str, u64),
        key: Option<&str>,
    ) -> Result<Value, String> {
        match self {
            Self::Handle(handle) => {
                let args = json!({"operation": operation, "session_id": handle});
                call_2026_keyed(http, mcp, "counter", args, key).await
            }
            Self::Session(session, _) => {
                let args = json!({"operation": operation});
                call_2025_keyed(http, mcp, session, id, "counter", args, key).await
            }
        }
    }
}

/// [`Target::clients`] clients of `mcp` incrementing `target`'s counter under keys of
/// their own, each key retried until acknowledged, until `stop` is set.
fn keyed_clients(
    mcp: &str,
    target: &Target,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..target.clients())
        .map(|n| {
            let (mcp, target, stop, seen) =
                (mcp.to_owned(), target.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                // A new connection per call, so the hop spreads calls over the replicas.
                let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
                let mut request_id = (n as u64 + 1) << 32;
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("client-{n}-increment-{k}");
                    seen.lock().unwrap().keys += 1;
                    loop {
                        request_id += 1;
                        let started = Instant::now();
                        let call = target.call(&http, &mcp, ("increment", request_id), Some(&key));
                        let answer = tokio::time::timeout(HANG, call)
                            .await
                            .unwrap_or_else(|_| panic!("{key}: no answer within {HANG:?}"));
                        let took = started.elapsed();
                        let done = {
                            let mut seen = seen.lock().unwrap();
                            seen.attempts += 1;
                            seen.worst = seen.worst.max(took);
                            match &answer {
                                Ok(_) => {
                                    if seen.first_failure.is_some() && seen.recovered.is_none() {
                                        seen.recovered = Some(Instant::now());
                                    }
                                }
                                Err(e) => {
                                    seen.first_failure.get_or_insert_with(Instant::now);
                                    if seen.failures.len() < MAX_FAILURES_KEPT {
                                        seen.failures.push(format!("{key}: {e}"));
                                    }
                                }
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
    read_counter(mcp, &Target::Handle(handle.to_owned())).await
}

/// The counter of `target`, read through `mcp` (retried until it answers).
async fn read_counter(mcp: &str, target: &Target) -> u64 {
    let http = Client::new();
    let value: Value = retry("the final counter can be read", async || {
        target.call(&http, mcp, ("get", 1), None).await
    })
    .await;
    value["value"].as_i64().expect("a counter value") as u64
}

/// Whether `replica` answers `/readyz` with 200.
pub async fn ready(http: &Client, replica: &Replica) -> bool {
    ready_at(http, &replica.endpoint("/readyz")).await
}

/// Whether the `/readyz` URL `readyz` answers 200.
async fn ready_at(http: &Client, readyz: &str) -> bool {
    http.get(readyz)
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

/// Keyed clients running against one session, from [`KeyedLoad::start`]
/// (or [`KeyedLoad::start_2025`]) until [`KeyedLoad::finish`].
pub struct KeyedLoad {
    mcp: String,
    target: Target,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl KeyedLoad {
    /// Starts the clients on the 2026-07-28 `handle`'s counter through `mcp`.
    pub fn start(mcp: &str, handle: &str) -> Self {
        Self::on(mcp, Target::Handle(handle.to_owned()))
    }

    /// Starts one client, calling in turn, on the counter of the 2025-era `session`
    /// through `mcp`.
    pub fn start_2025(mcp: &str, session: &str) -> Self {
        Self::start_2025_concurrent(mcp, session, 1)
    }

    /// Starts `clients` clients calling at once on the counter of the 2025-era
    /// `session` through `mcp`.
    pub fn start_2025_concurrent(mcp: &str, session: &str, clients: usize) -> Self {
        Self::on(mcp, Target::Session(session.to_owned(), clients))
    }

    fn on(mcp: &str, target: Target) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let clients = keyed_clients(mcp, &target, &stop, &seen);
        Self {
            mcp: mcp.to_owned(),
            target,
            stop,
            seen,
            clients,
        }
    }

    /// Waits until every replica is ready again, lets the clients run one more second
    /// on the healed deployment, stops them, and returns the final counter and what
    /// they saw (the worst attempt checked against [`HANG`]).
    pub async fn finish(self, replicas: &[Replica]) -> (u64, Seen) {
        let readyz: Vec<String> = replicas.iter().map(|r| r.endpoint("/readyz")).collect();
        self.finish_when_ready(&readyz).await
    }

    /// [`KeyedLoad::finish`] for replicas named by their `/readyz` URLs (replicas run
    /// as processes).
    pub async fn finish_when_ready(self, readyz: &[String]) -> (u64, Seen) {
        let http = Client::new();
        for url in readyz {
            crate::support::wait::wait_until("readiness is green again", async || {
                ready_at(&http, url).await
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("no client panicked");
        }
        let value = read_counter(&self.mcp, &self.target).await;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(seen.worst < HANG, "an attempt took {:?}", seen.worst);
        (value, seen)
    }
}
