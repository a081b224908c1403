//! `cluster-round-trips`: what each kind of call sends each master of a Redis Cluster,
//! read off `MONITOR` on every master while calls of that kind run one after another on
//! one replica, with `redis.replica_acks` 0 and then 1.
//!
//! Calls run one at a time, so each command a master logs is the call's whose window
//! (on the driver's clock, which is the servers' on loopback) holds its timestamp;
//! commands logged between calls are the replica's own upkeep. Commands scripts run
//! (`[0 lua]` lines) are left out: what is counted is what clients sent. Per kind of
//! call it prints the commands per call by master and name, how many calls sent how
//! many commands to how many masters, and the gap between successive commands of one
//! call on one connection: a few microseconds for commands sent as one pipeline (one
//! round trip), a whole trip through the replica otherwise.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    load::open_session,
    servers::{Backend, Fleet, Replicas},
    stores::{Deployment, Stores},
    wire::{CallTemplate, Conn, Endpoint, Era, check_call},
};

/// One command a master logged.
struct Logged {
    /// The master's index among the cluster's masters.
    master: usize,
    /// Seconds since the epoch, as the master stamped it.
    at: f64,
    /// The client's address (`ip:port`): commands of one connection.
    client: String,
    /// The command's name, upper case.
    name: String,
}

/// Parses a `MONITOR` line, `+1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" ...`, of
/// a command a client sent (not one a script ran).
fn parse(master: usize, line: &str) -> Option<Logged> {
    let line = line.strip_prefix('+')?;
    let (at, rest) = line.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (source, rest) = rest.split_once(']')?;
    let (_db, client) = source.split_once(' ')?;
    if client == "lua" {
        return None;
    }
    let name = rest.trim_start().strip_prefix('"')?.split('"').next()?;
    Some(Logged {
        master,
        at: at.parse().ok()?,
        client: client.to_owned(),
        name: name.to_ascii_uppercase(),
    })
}

/// `MONITOR` on every master, until dropped.
struct Monitor {
    readers: Vec<JoinHandle<()>>,
    lines: mpsc::UnboundedReceiver<Logged>,
}

impl Monitor {
    /// Starts `MONITOR` on each of `masters` (`redis://host:port` URLs); returns once
    /// every one has answered `+OK`.
    async fn start(masters: &[String]) -> Self {
        let (send, lines) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        for (master, url) in masters.iter().enumerate() {
            let addr = url.trim_start_matches("redis://").trim_end_matches('/');
            let mut stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            stream
                .write_all(b"MONITOR\r\n")
                .await
                .unwrap_or_else(|e| panic!("MONITOR on {url}: {e}"));
            let mut reader = BufReader::new(stream).lines();
            let ok = reader.next_line().await.ok().flatten();
            assert_eq!(ok.as_deref(), Some("+OK"), "MONITOR on {url}");
            let send = send.clone();
            readers.push(tokio::spawn(async move {
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Some(logged) = parse(master, &line)
                        && send.send(logged).is_err()
                    {
                        return;
                    }
                }
            }));
        }
        Self { readers, lines }
    }

    /// Everything logged so far and until 300 ms pass without a command (at most a
    /// second more).
    async fn drain(&mut self) -> Vec<Logged> {
        let mut seen = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(logged)) = tokio::time::timeout_at(
            end.min(tokio::time::Instant::now() + Duration::from_millis(300)),
            self.lines.recv(),
        )
        .await
        {
            seen.push(logged);
        }
        seen
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// The kinds of call counted.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `session_create` (2026-07-28).
    Create,
    /// `counter` `increment` on a handle (2026-07-28).
    Counter2026,
    /// `counter` `increment` in a 2025-era session on its holder, event store on.
    Counter2025,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Create => "session_create",
            Self::Counter2026 => "2026-07-28 counter",
            Self::Counter2025 => "2025-era counter (event store)",
        }
    }
}

/// What the calls of one kind sent.
struct Tally {
    kind: Kind,
    acks: u32,
    calls: usize,
    /// Per master: commands by name, summed over the calls.
    by_master: Vec<BTreeMap<String, u64>>,
    /// (commands, masters touched) of a call → calls.
    shapes: BTreeMap<(usize, usize), usize>,
    /// Gaps in µs between successive commands of one call on one connection, by
    /// (first, second) command name.
    gaps: BTreeMap<(String, String), Vec<f64>>,
    /// Commands logged outside every call's window (upkeep).
    between: usize,
}

impl Tally {
    /// Attributes `logged` to the calls whose windows (seconds since the epoch, in
    /// order, not overlapping) hold their timestamps.
    fn new(
        kind: Kind,
        acks: u32,
        masters: usize,
        windows: &[(f64, f64)],
        mut logged: Vec<Logged>,
    ) -> Self {
        logged.sort_by(|a, b| a.at.total_cmp(&b.at));
        let mut per_call: Vec<Vec<&Logged>> = vec![Vec::new(); windows.len()];
        let mut between = 0;
        for l in &logged {
            // The last window that starts at or before the command.
            let i = windows.partition_point(|w| w.0 <= l.at);
            match i.checked_sub(1) {
                Some(i) if l.at <= windows[i].1 => per_call[i].push(l),
                _ => between += 1,
            }
        }
        let mut by_master = vec![BTreeMap::new(); masters];
        let mut shapes = BTreeMap::new();
        let mut gaps: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        for commands in &per_call {
            let mut touched: Vec<usize> = commands.iter().map(|l| l.master).collect();
            touched.sort_unstable();
            touched.dedup();
            *shapes.entry((commands.len(), touched.len())).or_insert(0) += 1;
            for l in commands {
                *by_master[l.master].entry(l.name.clone()).or_insert(0) += 1;
            }
            for (i, l) in commands.iter().enumerate() {
                let next = commands[i + 1..]
                    .iter()
                    .find(|n| n.master == l.master && n.client == l.client);
                if let Some(n) = next {
                    gaps.entry((l.name.clone(), n.name.clone()))
                        .or_default()
                        .push((n.at - l.at) * 1e6);
                }
            }
        }
        Self {
            kind,
            acks,
            calls: windows.len(),
            by_master,
            shapes,
            gaps,
            between,
        }
    }

    fn per_call(&self, n: u64) -> f64 {
        n as f64 / self.calls as f64
    }

    /// Commands by name summed over the masters.
    fn totals(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for master in &self.by_master {
            for (name, n) in master {
                *all.entry(name.clone()).or_insert(0) += n;
            }
        }
        all
    }

    fn print(&self, ports: &[String]) {
        let list = |names: &BTreeMap<String, u64>| {
            let mut v: Vec<_> = names.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(name, n)| format!("{name} {:.2}", self.per_call(**n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let totals = self.totals();
        println!(
            "{} (replica_acks {}, {} calls): {:.2} commands per call: {}",
            self.kind.label(),
            self.acks,
            self.calls,
            self.per_call(totals.values().sum()),
            list(&totals)
        );
        let masters: Vec<String> = self
            .by_master
            .iter()
            .zip(ports)
            .map(|(names, port)| {
                format!(
                    "{port} {:.2} ({})",
                    self.per_call(names.values().sum()),
                    list(names)
                )
            })
            .collect();
        println!("    per master: {}", masters.join("; "));
        let shapes: Vec<String> = self
            .shapes
            .iter()
            .map(|((commands, masters), calls)| {
                format!("{calls} calls sent {commands} commands to {masters} masters")
            })
            .collect();
        println!("    {}", shapes.join("; "));
        if !self.gaps.is_empty() {
            let gaps: Vec<String> = self
                .gaps
                .iter()
                .map(|((a, b), us)| format!("{a} → {b} {:.0} µs", median(us)))
                .collect();
            println!(
                "    median gap between commands of a call on one connection: {}",
                gaps.join(", ")
            );
        }
        println!("    between calls (upkeep): {} commands", self.between);
    }

    fn to_json(&self, ports: &[String]) -> Value {
        let names = |names: &BTreeMap<String, u64>| -> serde_json::Map<String, Value> {
            names
                .iter()
                .map(|(name, n)| (name.clone(), json!(round3(self.per_call(*n)))))
                .collect()
        };
        json!({
            "kind": "round_trips",
            "call": self.kind.label(),
            "replica_acks": self.acks,
            "calls": self.calls,
            "commands_per_call": names(&self.totals()),
            "per_master": self.by_master.iter().zip(ports).map(|(n, port)| json!({
                "master": port,
                "commands_per_call": names(n),
            })).collect::<Vec<_>>(),
            "shapes": self.shapes.iter().map(|((commands, masters), calls)| json!({
                "commands": commands, "masters": masters, "calls": calls,
            })).collect::<Vec<_>>(),
            "median_gap_us": self.gaps.iter().map(|((a, b), us)| json!({
                "first": a, "then": b, "us": median(us).round(),
            })).collect::<Vec<_>>(),
            "between_calls": self.between,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Handles the warm-up opens and calls once, and the counted calls go to: every master
/// must have run the create script before creates are counted (the first run of a
/// script on a node also loads it), and misses one with a probability of about
/// 3 × (2/3)^30.
const WARM_HANDLES: usize = 30;

/// The 2025-era sessions the counted calls go to, each called once before counting
/// (so every master that holds one has run its scripts).
const WARM_SESSIONS: usize = 12;

/// Runs `cluster-round-trips`: `calls` calls of each kind with `replica_acks` 0, then
/// 1, on a fresh three-shard cluster; prints the tallies and writes them to `json`.
///
/// # Panics
/// When a server does not start or a call fails.
pub async fn run(calls: usize, json: Option<&Path>) {
    let mut file =
        json.map(|p| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    let mut stores = Stores::default();
    let mut fleet = Fleet::new();
    crate::wire::set_bearer(&fleet.api_key);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_stateful-mcp"));
    println!(
        "Commands clients sent each master of a three-shard cluster (MONITOR; commands \
         scripts ran not counted), per call, calls one at a time on one replica:"
    );
    for acks in [0, 1] {
        let store = stores.prepare(Deployment::Cluster).await;
        let ports: Vec<String> = store
            .masters
            .iter()
            .map(|u| format!(":{}", u.rsplit(':').next().unwrap_or(u)))
            .collect();
        let replicas = Replicas {
            count: 1,
            backend: Backend::Redis {
                deployment: Deployment::Cluster,
                acks,
            },
            events: true,
            forwarded: false,
        };
        let running = fleet.replicas(replicas, &binary, Some(&store)).await;
        let endpoint = Endpoint::parse(&running.urls[0]).expect("the replica's URL");

        let mut handles = Vec::new();
        for _ in 0..WARM_HANDLES {
            handles.push(open(&endpoint, Era::V2026).await);
        }
        let mut sessions = Vec::new();
        for _ in 0..WARM_SESSIONS {
            sessions.push(open(&endpoint, Era::V2025).await);
        }
        let mut warm = Caller::new(&endpoint);
        for handle in &handles {
            warm.increment(Era::V2026, handle).await;
        }
        for session in &sessions {
            warm.increment(Era::V2025, session).await;
        }

        let mut monitor = Monitor::start(&store.masters).await;
        for kind in [Kind::Create, Kind::Counter2026, Kind::Counter2025] {
            // Whatever the warm-up or the previous kind left in flight.
            monitor.drain().await;
            let mut caller = Caller::new(&endpoint);
            let mut windows = Vec::with_capacity(calls);
            for i in 0..calls {
                let start = now();
                match kind {
                    Kind::Create => {
                        open(&endpoint, Era::V2026).await;
                    }
                    Kind::Counter2026 => {
                        caller
                            .increment(Era::V2026, &handles[i % handles.len()])
                            .await;
                    }
                    Kind::Counter2025 => {
                        caller
                            .increment(Era::V2025, &sessions[i % sessions.len()])
                            .await;
                    }
                }
                windows.push((start, now()));
            }
            let logged = monitor.drain().await;
            let tally = Tally::new(kind, acks, store.masters.len(), &windows, logged);
            tally.print(&ports);
            if let Some(file) = &mut file {
                let _ = writeln!(file, "{}", tally.to_json(&ports));
            }
        }
        drop(monitor);
        drop(running);
    }
}

/// Opens a session of `era`, or panics saying why not.
async fn open(endpoint: &Arc<Endpoint>, era: Era) -> String {
    open_session(endpoint, era)
        .await
        .unwrap_or_else(|e| panic!("open a {} session: {e}", era.label()))
}

/// One keep-alive connection making calls one at a time.
struct Caller {
    conn: Conn,
    id: u64,
}

impl Caller {
    fn new(endpoint: &Arc<Endpoint>) -> Self {
        Self {
            conn: Conn::new(endpoint.clone()),
            id: 0,
        }
    }

    /// `counter` `increment` in `session`; panics when it fails.
    async fn increment(&mut self, era: Era, session: &str) {
        self.id += 1;
        let call = CallTemplate::counter_increment(&self.conn, era, session);
        let reply = self
            .conn
            .post(call.headers(), call.body(self.id))
            .await
            .unwrap_or_else(|e| panic!("counter increment: {e}"));
        check_call(&reply, self.id).unwrap_or_else(|e| panic!("counter increment: {e}"));
    }
}
