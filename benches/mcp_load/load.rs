//! The load: `sessions` sessions opened first, then `workers` tasks, each on its own
//! connection, looping `counter` `increment` in session `worker % sessions` and checking
//! every reply; a warm-up whose calls are not counted, then the measured window, read by
//! the [`Meter`] at both ends.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use http::HeaderValue;
use serde_json::json;

use crate::{
    measure::{Costs, Meter},
    wire::{CallTemplate, Conn, Endpoint, Era, check_call, reply_message},
};

/// What to load and for how long.
pub struct LoadSpec {
    /// Worker `w` sends to `endpoints[w % len]`; session `s` is opened on
    /// `endpoints[s % len]` (unless `forwarded`).
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Sessions are opened on the first endpoint and workers send to the others.
    pub forwarded: bool,
    pub era: Era,
    pub sessions: usize,
    pub workers: usize,
    pub warmup: Duration,
    pub window: Duration,
}

impl LoadSpec {
    /// Where session `s` is opened (and its counter read at the end).
    fn session_endpoint(&self, s: usize) -> &Arc<Endpoint> {
        if self.forwarded {
            &self.endpoints[0]
        } else {
            &self.endpoints[s % self.endpoints.len()]
        }
    }

    /// Where worker `w` sends its calls.
    fn worker_endpoint(&self, w: usize) -> &Arc<Endpoint> {
        if self.forwarded && self.endpoints.len() > 1 {
            &self.endpoints[1 + w % (self.endpoints.len() - 1)]
        } else {
            &self.endpoints[w % self.endpoints.len()]
        }
    }
}

/// What the measured window saw.
pub struct Outcome {
    /// Calls answered with a result without `isError` inside the window.
    pub ok: u64,
    /// Calls that failed inside the window.
    pub errors: u64,
    /// The first failure of the whole run (warm-up included).
    pub first_error: Option<String>,
    /// The window's length.
    pub window: Duration,
    /// Latencies of the successful calls, sorted.
    pub latencies: Vec<Duration>,
    pub costs: Costs,
    /// Per session: the counter's value after the load, and the increments acknowledged
    /// in it (warm-up included); they differ only if an increment was lost, applied
    /// twice, or failed after it was applied.
    pub counters: Vec<(i64, i64)>,
}

impl Outcome {
    /// Successful calls per second.
    pub fn calls_per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// The latency at quantile `q` (0..=1), zero without calls.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Workers call but do not count.
const WARMING: u8 = 0;
/// Workers count the calls that start and end in this phase.
const MEASURING: u8 = 1;
/// Workers stop.
const STOPPED: u8 = 2;

/// Opens the sessions, runs the load and measures its window.
///
/// # Errors
/// When a session cannot be opened (nothing else stops the load: failed calls are
/// counted).
pub async fn run(spec: &LoadSpec, meter: &mut Meter) -> Result<Outcome, String> {
    let mut sessions = Vec::with_capacity(spec.sessions);
    for s in 0..spec.sessions.max(1) {
        sessions.push(open_session(spec.session_endpoint(s), spec.era).await?);
    }

    let phase = Arc::new(AtomicU8::new(WARMING));
    let mut workers = Vec::with_capacity(spec.workers);
    for w in 0..spec.workers {
        let conn = Conn::new(spec.worker_endpoint(w).clone());
        let call = CallTemplate::counter_increment(&conn, spec.era, &sessions[w % sessions.len()]);
        let ids = Ids {
            first: w as u64 + 1,
            step: spec.workers as u64,
        };
        workers.push(tokio::spawn(worker(conn, call, ids, phase.clone())));
    }

    tokio::time::sleep(spec.warmup).await;
    let before = meter.read().await;
    phase.store(MEASURING, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(spec.window).await;
    phase.store(STOPPED, Ordering::SeqCst);
    let window = started.elapsed();
    let after = meter.read().await;

    let (mut ok, mut errors, mut first_error, mut latencies) = (0, 0, None, Vec::new());
    let mut acknowledged = vec![0i64; sessions.len()];
    for (w, worker) in workers.into_iter().enumerate() {
        let tally = worker.await.map_err(|e| format!("worker: {e}"))?;
        ok += tally.latencies.len() as u64;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
        latencies.extend(tally.latencies);
        acknowledged[w % sessions.len()] += tally.acknowledged;
    }
    latencies.sort_unstable();
    let costs = Meter::costs(&before, &after, ok);
    let mut counters = Vec::new();
    for (s, session) in sessions.iter().enumerate() {
        counters.push((
            counter_value(spec.session_endpoint(s), spec.era, session).await?,
            acknowledged[s],
        ));
    }
    Ok(Outcome {
        ok,
        errors,
        first_error,
        window,
        latencies,
        costs,
        counters,
    })
}

/// The value of `counter` in `session` (`get`).
async fn counter_value(endpoint: &Arc<Endpoint>, era: Era, session: &str) -> Result<i64, String> {
    let mut conn = Conn::new(endpoint.clone());
    let get = CallTemplate::tool_call(&conn, era, session, "counter", json!({"operation": "get"}));
    // Above every id a worker used.
    let id = 1 << 40;
    let reply = conn.post(get.headers(), get.body(id)).await?;
    check_call(&reply, id).map_err(|e| format!("counter get: {e}"))?;
    reply_message(&reply.body)
        .and_then(|m| m["result"]["structuredContent"]["value"].as_i64())
        .ok_or_else(|| "counter get: no value".to_owned())
}

/// What one worker saw.
struct Tally {
    /// Of the successful calls in the window.
    latencies: Vec<Duration>,
    /// Failed calls in the window.
    errors: u64,
    first_error: Option<String>,
    /// Successful calls of the whole run.
    acknowledged: i64,
}

/// The JSON-RPC ids of one worker: `first`, `first + step`, ... Workers share sessions,
/// and a 2025-era session routes each response to its request by id, so no two
/// workers may use the same one.
struct Ids {
    first: u64,
    step: u64,
}

async fn worker(mut conn: Conn, call: CallTemplate, ids: Ids, phase: Arc<AtomicU8>) -> Tally {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 14),
        errors: 0,
        first_error: None,
        acknowledged: 0,
    };
    for id in (ids.first..).step_by(ids.step as usize) {
        let started_in = phase.load(Ordering::Relaxed);
        if started_in == STOPPED {
            break;
        }
        let started = Instant::now();
        let result = match conn.post(call.headers(), call.body(id)).await {
            Ok(reply) => check_call(&reply, id),
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        let counted = started_in == MEASURING && phase.load(Ordering::Relaxed) == MEASURING;
        match result {
            Ok(()) => {
                tally.acknowledged += 1;
                if counted {
                    tally.latencies.push(elapsed);
                }
            }
            Err(e) => {
                tally.errors += u64::from(counted);
                tally.first_error.get_or_insert(e);
                // A server that is gone must not turn the worker into a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// Opens one session of `era` on `endpoint`: a `session_create` handle (2026-07-28) or
/// an initialized transport session (2025-11-25).
/// Opens one session of `era` at `endpoint`: a `session_create` handle, or an
/// initialized 2025-era transport session.
pub async fn open_session(endpoint: &Arc<Endpoint>, era: Era) -> Result<String, String> {
    let mut conn = Conn::new(endpoint.clone());
    match era {
        Era::V2026 => {
            let create = CallTemplate::tool_call(&conn, era, "", "session_create", json!({}));
            let reply = conn.post(create.headers(), create.body(0)).await?;
            check_call(&reply, 0).map_err(|e| format!("session_create: {e}"))?;
            reply_message(&reply.body)
                .and_then(|m| {
                    m["result"]["structuredContent"]["session_id"]
                        .as_str()
                        .map(str::to_owned)
                })
                .ok_or_else(|| "session_create: no session_id".to_owned())
        }
        Era::V2025 => {
            let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "mcp-load", "version": "1"}}});
            let reply = conn
                .post(&conn.base_headers(), initialize.to_string().into())
                .await?;
            let session = reply
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| format!("initialize: HTTP {}, no Mcp-Session-Id", reply.status))?;
            let mut headers = conn.base_headers();
            headers.insert(
                "mcp-protocol-version",
                HeaderValue::from_static("2025-11-25"),
            );
            headers.insert(
                "mcp-session-id",
                HeaderValue::from_str(&session).map_err(|e| e.to_string())?,
            );
            let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            let reply = conn.post(&headers, initialized.to_string().into()).await?;
            if reply.status != 202 {
                return Err(format!("notifications/initialized: HTTP {}", reply.status));
            }
            Ok(session)
        }
    }
}
