//! The servers a scenario loads, started as processes on free loopback ports: per
//! scenario the anchor, one replica (the release binary or another build), or three
//! replicas behind nginx configured from `deploy/nginx.conf` as `scripts/topology` does,
//! on the Redis deployment [`stores`](crate::stores) keeps for the run.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use base64::Engine as _;
use testkit::{
    free_port,
    process::{Child, Stop},
    temp_dir::TempDir,
};

use crate::{
    cpu::Measured,
    stores::{Deployment, Store},
};

/// What serves a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The anchor (this benchmark re-executed as `anchor --port P`).
    Anchor,
    /// Replicas of the build under test.
    Replicas(Replicas),
}

/// Replicas of a build: `count` of them (behind nginx when more than one, unless
/// `forwarded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub count: usize,
    pub backend: Backend,
    /// `events.enabled` (2025-era response streams stored in Redis).
    pub events: bool,
    /// No balancer: sessions are opened on the first replica and every call is sent to
    /// the others, which forward it to the session's holder.
    pub forwarded: bool,
}

/// A replica's store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Redis: which deployment, and `redis.replica_acks` (how many replicas of Redis
    /// must have a state change before the call is acknowledged).
    Redis {
        deployment: Deployment,
        acks: u32,
    },
    Memory,
}

impl Backend {
    /// The Redis deployment it stores in, if any.
    pub fn deployment(self) -> Option<Deployment> {
        match self {
            Self::Redis { deployment, .. } => Some(deployment),
            Self::Memory => None,
        }
    }
}

/// The principal the load authenticates as, and the per-principal rate limit every
/// replica applies: far above what one machine serves, so it never refuses a call but
/// its budget is still taken from Redis, as in a deployment with limits on.
pub const PRINCIPAL: &str = "load";
const RATE_LIMIT_PER_SEC: &str = "1000000";

/// What every replica of the run shares.
pub struct Fleet {
    /// The `requestState` key ring of this run (`mrtr.keys`).
    mrtr_keys: String,
    /// The API key of [`PRINCIPAL`] (sent by the driver; see `wire::set_bearer`).
    pub api_key: String,
    /// The `auth.api_keys_file` naming it, written in the run's directory on first use.
    keys_file: Option<tempfile_path::KeysFile>,
    /// Numbers the key prefixes, one per started set of replicas.
    started: usize,
}

impl Fleet {
    /// A fleet with a fresh key ring.
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("random bytes");
        let secret = base64::engine::general_purpose::STANDARD.encode(secret);
        let mut key = [0u8; 24];
        getrandom::fill(&mut key).expect("random bytes");
        Self {
            mrtr_keys: format!("load:{secret}"),
            api_key: stateful_mcp::ids::hex(&key),
            keys_file: None,
            started: 0,
        }
    }

    /// Starts the anchor; returns once it accepts connections.
    pub async fn anchor(&mut self) -> Running {
        let mut running = self.running();
        let port = free_port();
        let mut command = Command::new(std::env::current_exe().expect("this benchmark's path"));
        command
            .args(["anchor", "--port", &port.to_string()])
            .env_remove("RUST_LOG");
        let mut child = Child::spawn("anchor", command, Some(running.dir.path()), Stop::Kill);
        child
            .wait_ready(async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
        running.measured.add("anchor", child.pid());
        running.children.push(child);
        running.urls.push(format!("http://127.0.0.1:{port}/mcp"));
        running
    }

    /// Starts `replicas` of `binary` (and nginx in front of several), on `store` for the
    /// Redis backend; returns once every one is ready.
    ///
    /// # Panics
    /// When a replica or nginx does not get ready, or the backend is Redis without a
    /// `store`.
    pub async fn replicas(
        &mut self,
        replicas: Replicas,
        binary: &Path,
        store: Option<&Store>,
    ) -> Running {
        let mut running = self.running();
        let prefix = format!("load-{}-{}", std::process::id(), self.started);
        let keys_file = self
            .keys_file
            .get_or_insert_with(|| tempfile_path::KeysFile::write(PRINCIPAL, &self.api_key))
            .clone();
        let mut ports = Vec::new();
        for i in 1..=replicas.count {
            let port = free_port();
            let mut command = Command::new(binary);
            command
                // Every server logs with its default filter.
                .env_remove("RUST_LOG")
                .env("STATEFUL_MCP__SERVER__BIND", format!("127.0.0.1:{port}"))
                .env("STATEFUL_MCP__SERVER__ALLOWED_HOSTS", "localhost,127.0.0.1")
                .env(
                    "STATEFUL_MCP__SERVER__ADVERTISE_URL",
                    format!("http://127.0.0.1:{port}"),
                )
                .env("STATEFUL_MCP__SERVER__REPLICA_ID", format!("replica-{i}"))
                .env("STATEFUL_MCP__SERVER__PRESTOP_DELAY_SECS", "0")
                .env("STATEFUL_MCP__MRTR__KEYS", &self.mrtr_keys)
                .env("STATEFUL_MCP__EVENTS__ENABLED", replicas.events.to_string())
                // The request path in its deployed shape: every call authenticated and
                // counted against its principal's rate limit.
                .env("STATEFUL_MCP__AUTH__MODE", "api_keys")
                .env("STATEFUL_MCP__AUTH__API_KEYS_FILE", keys_file.path())
                .env(
                    "STATEFUL_MCP__AUTH__RESOURCE",
                    format!("http://127.0.0.1:{port}/mcp"),
                )
                .env(
                    "STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC",
                    RATE_LIMIT_PER_SEC,
                )
                .env("STATEFUL_MCP__RATE_LIMIT__BURST", RATE_LIMIT_PER_SEC)
                // The one principal may hold every session the memory scenario opens.
                .env(
                    "STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL",
                    "1000000",
                );
            match replicas.backend {
                Backend::Redis { acks, .. } => {
                    let store = store.expect("a Redis store for the Redis backend");
                    command
                        .env("STATEFUL_MCP__STORE__BACKEND", "redis")
                        .envs(store.env())
                        .env("STATEFUL_MCP__REDIS__KEY_PREFIX", &prefix);
                    if acks > 0 {
                        command.env("STATEFUL_MCP__REDIS__REPLICA_ACKS", acks.to_string());
                    }
                    &mut command
                }
                Backend::Memory => command.env("STATEFUL_MCP__STORE__BACKEND", "memory"),
            };
            let name = format!("replica-{i}");
            let mut child = Child::spawn(&name, command, Some(running.dir.path()), Stop::Kill);
            let readyz = format!("http://127.0.0.1:{port}/readyz");
            child.wait_ready(async || http_ok(&readyz).await).await;
            running.measured.add("replicas", child.pid());
            running.children.push(child);
            ports.push(port);
        }
        if replicas.count > 1 && !replicas.forwarded {
            running.start_nginx(&ports).await;
        } else {
            running.urls.extend(
                ports
                    .iter()
                    .map(|port| format!("http://127.0.0.1:{port}/mcp")),
            );
        }
        if let (Backend::Redis { .. }, Some(store)) = (replicas.backend, store) {
            for &pid in &store.master_pids {
                running.measured.add("redis", pid);
            }
            for &pid in &store.replica_pids {
                running.measured.add("redis-rep", pid);
            }
        }
        running
    }

    /// Nothing running yet, with a log directory of its own.
    fn running(&mut self) -> Running {
        self.started += 1;
        Running {
            children: Vec::new(),
            urls: Vec::new(),
            measured: Measured::default(),
            dir: TempDir::new("load", &self.started.to_string()),
        }
    }
}

/// A scenario's running servers, stopped when dropped (nginx first).
pub struct Running {
    /// In start order; stopped in reverse.
    children: Vec<Child>,
    /// Where the load goes.
    pub urls: Vec<String>,
    /// The processes to measure (the driver is added by the caller).
    pub measured: Measured,
    /// Logs; removed after the children stop (declared after them).
    dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        while let Some(child) = self.children.pop() {
            drop(child);
        }
    }
}

impl Running {
    async fn start_nginx(&mut self, ports: &[u16]) {
        let dir = self.dir.path().to_owned();
        let listen = free_port();
        let template = std::fs::read_to_string(deploy_nginx_conf()).expect("deploy/nginx.conf");
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&template, ports, listen, &dir)).expect("nginx.conf");
        let mut command = Command::new(find_nginx());
        command.arg("-p").arg(&dir).arg("-c").arg(&conf);
        command.arg("-e").arg(dir.join("nginx-error.log"));
        command.arg("-g").arg(format!(
            "daemon off; pid {};",
            dir.join("nginx.pid").display()
        ));
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let mut child = Child::spawn("nginx", command, Some(&dir), Stop::Terminate);
        let healthz = format!("http://127.0.0.1:{listen}/healthz");
        child.wait_ready(async || http_ok(&healthz).await).await;
        self.measured.add_with_children("nginx", child.pid());
        self.children.push(child);
        self.urls.push(format!("http://127.0.0.1:{listen}/mcp"));
    }
}

/// Whether a GET of `url` answers 200.
async fn http_ok(url: &str) -> bool {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    matches!(client.get(url).send().await, Ok(r) if r.status() == 200)
}

fn deploy_nginx_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf")
}

/// Debian's nginx (`scripts/ensure-packages.sh` installs it).
fn find_nginx() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].map(PathBuf::from))
        .find(|p| p.is_file())
        .expect("nginx not found: run scripts/ensure-packages.sh")
}

/// `server replica-N:PORT[ params];` of `deploy/nginx.conf`: the indent and the params.
fn upstream_server(line: &str) -> Option<(&str, &str)> {
    let text = line.trim_start();
    let indent = &line[..line.len() - text.len()];
    let rest = text.strip_prefix("server replica-")?.strip_suffix(';')?;
    let (number, rest) = rest.split_once(':')?;
    let port_end = rest.find(' ').unwrap_or(rest.len());
    let (port, params) = rest.split_at(port_end);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(number) && digits(port)).then_some((indent, params))
}

/// `deploy/nginx.conf` with the replicas' loopback ports as its upstream servers, the
/// balancer on `127.0.0.1:listen` and nginx's temporary files in `workdir`: the rewrite
/// `scripts/topology` makes, so the benchmark's balancer is the deployed one.
///
/// # Panics
/// When the file no longer has the shape the rewrite expects (upstream `server
/// replica-N:PORT` lines, one `listen PORT;`, one `http {`).
pub fn nginx_conf(template: &str, ports: &[u16], listen: u16, workdir: &Path) -> String {
    let (mut servers_done, mut listens, mut https) = (false, 0, 0);
    let mut out = String::with_capacity(template.len() + 512);
    for line in template.lines() {
        if let Some((indent, params)) = upstream_server(line) {
            if !servers_done {
                for port in ports {
                    out.push_str(&format!("{indent}server 127.0.0.1:{port}{params};\n"));
                }
                servers_done = true;
            }
            continue;
        }
        let text = line.trim_start();
        let indent = &line[..line.len() - text.len()];
        let port = text
            .strip_prefix("listen ")
            .and_then(|r| r.strip_suffix(';'));
        if port.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            out.push_str(&format!("{indent}listen 127.0.0.1:{listen};\n"));
            listens += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == "http {" {
            https += 1;
            for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                let path = workdir.join(kind);
                out.push_str(&format!("    {kind}_temp_path {};\n", path.display()));
            }
        }
    }
    assert!(
        servers_done && listens == 1 && https == 1,
        "deploy/nginx.conf no longer has the expected shape (`server replica-N:PORT` \
         lines, one `listen PORT;`, one `http {{`)"
    );
    out
}

/// The run's `auth.api_keys_file`.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    use sha2::Digest;

    /// A file of one `<principal> <sha256 hex of the key>` line, removed with the last
    /// clone.
    #[derive(Clone)]
    pub struct KeysFile(std::sync::Arc<PathBuf>);

    impl KeysFile {
        /// Writes the line for `principal` and `key` to a new file under the temporary
        /// directory.
        pub fn write(principal: &str, key: &str) -> Self {
            let digest = sha2::Sha256::digest(key.as_bytes());
            let path = std::env::temp_dir().join(format!("smcp-load-{}-keys", std::process::id()));
            std::fs::write(
                &path,
                format!("{principal} {}\n", stateful_mcp::ids::hex(&digest)),
            )
            .expect("the API keys file is written");
            Self(std::sync::Arc::new(path))
        }

        /// Where it is.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for KeysFile {
        fn drop(&mut self) {
            if std::sync::Arc::strong_count(&self.0) == 1 {
                let _ = std::fs::remove_file(self.0.as_path());
            }
        }
    }
}
