//! Private `redis-server` processes on free loopback ports (killed, paused and restarted
//! for fault injection, killed with the run that started them), raw connections to them
//! for assertions, and a key prefix per test.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    port::free_port,
    process::{Child, Stop},
    temp_dir::TempDir,
};

/// A `redis-server` owned by one test or benchmark: started on a free loopback port,
/// killed on drop. With `REDIS_URL` set, [`RedisServer::shared_or_start`] uses that
/// server instead. `REDIS_SERVER_BIN` names another `redis-server` binary (Valkey's
/// `valkey-server`, from `scripts/ensure-valkey.sh`).
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    url: String,
    /// Arguments after the defaults (persistence, TLS, ACL users, tuning).
    args: Vec<String>,
    /// The CA to trust for `rediss://`.
    tls_ca: Option<PathBuf>,
    /// Its data, certificates and log; none for a shared server.
    dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts a private server (never the shared one on 6379).
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// Starts a private server that writes every change to its append-only file before
    /// acknowledging it (`--appendonly yes --appendfsync always`), so a kill and a
    /// [`RedisServer::restart`] lose no acknowledged write.
    pub async fn start_persistent() -> Self {
        let args = ["--appendonly", "yes", "--appendfsync", "always"];
        Self::start_on(free_port(), args.map(str::to_owned).to_vec()).await
    }

    /// Starts a private server without persistence, `args` after the defaults (a
    /// benchmark's `--hash-max-listpack-value` as deployed, ...).
    pub async fn start_with_args(args: &[&str]) -> Self {
        let mut all = vec!["--appendonly".to_owned(), "no".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::start_on(free_port(), all).await
    }

    /// Starts a plain server on `port` with `args` after the defaults.
    async fn start_on(port: u16, args: Vec<String>) -> Self {
        Self {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}"),
            args,
            tls_ca: None,
            dir: Some(TempDir::new("redis", &port.to_string())),
        }
        .spawned()
        .await
    }

    /// Starts a private server that speaks only TLS (a CA and a server certificate made
    /// with `openssl` for this test) and knows one ACL user, `app` with password `pw`,
    /// limited to the keys and channels under `prefix` and denied `@dangerous` commands;
    /// the `default` user is off. [`RedisServer::url`] carries the credentials.
    pub async fn start_tls_acl(prefix: &str) -> Self {
        let port = free_port();
        // The certificates go where the server will keep its data.
        let dir = TempDir::new("redis", &port.to_string());
        let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.crt"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
        ]);
        std::fs::write(file("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.crt"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &file("san.ext"),
            "-out",
            &file("server.crt"),
        ]);
        let args = [
            "--appendonly",
            "no",
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "app",
            "on",
            ">pw",
            &format!("~{prefix}:*"),
            &format!("&{prefix}:*"),
            "+@all",
            "-@dangerous",
        ]
        .map(str::to_owned)
        .to_vec();
        Self {
            child: None,
            port,
            url: format!("rediss://app:pw@127.0.0.1:{port}"),
            args,
            tls_ca: Some(dir.path().join("ca.crt")),
            dir: Some(dir),
        }
        .spawned()
        .await
    }

    /// Whether `REDIS_TEST_ONE_NODE_CLUSTER` asks for private servers to be one-node
    /// clusters (every slot on the one node, plain connections still work): Redis then
    /// refuses any script or multi-key command whose keys span hash slots, so a suite run
    /// this way proves the key layout fits Redis Cluster.
    pub fn one_node_cluster() -> bool {
        std::env::var("REDIS_TEST_ONE_NODE_CLUSTER").is_ok_and(|v| !v.is_empty() && v != "0")
    }

    /// Gives a fresh cluster-enabled node every slot (a restarted one already has them in
    /// its `nodes.conf`) and waits until it reports the cluster up.
    async fn own_every_slot(client: &redis::Client) {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: Result<(), _> = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async(&mut conn)
            .await;
        for _ in 0..200 {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the one-node cluster did not come up");
    }

    /// A server for tests that only need *a* Redis: `REDIS_URL` when the user set it,
    /// else a private one.
    pub async fn shared_or_start() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self {
                child: None,
                port: 0,
                url,
                args: Vec::new(),
                tls_ca: None,
                dir: None,
            },
            _ => Self::start().await,
        }
    }

    /// Itself, with its process started and answering `PING`.
    async fn spawned(mut self) -> Self {
        self.spawn().await;
        self
    }

    /// Starts the process (in its directory, on its port) and waits until it answers
    /// `PING`.
    ///
    /// # Panics
    /// When it exits or does not answer within [`crate::process::START_TIMEOUT`].
    async fn spawn(&mut self) {
        let dir = self.dir.as_ref().expect("a private server").path();
        let mut command = Command::new(redis_server_binary());
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                dir.to_str().unwrap(),
                "--maxmemory-policy",
                "noeviction",
            ])
            .args(&self.args);
        // Servers that are already cluster nodes, or replicas of another (a Sentinel
        // set), stay what their test made them.
        let one_node_cluster = Self::one_node_cluster()
            && self.tls_ca.is_none()
            && !self
                .args
                .iter()
                .any(|a| a == "--cluster-enabled" || a == "--replicaof");
        if one_node_cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let mut child = Child::spawn("redis", command, Some(dir), Stop::Kill);
        let client = self.client();
        child
            .wait_ready(async || {
                let ping = async {
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(1), ping).await,
                    Ok(Some(_))
                )
            })
            .await;
        if one_node_cluster {
            Self::own_every_slot(&client).await;
        }
        self.child = Some(child);
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with the user's credentials for a server
    /// from [`RedisServer::start_tls_acl`]; `REDIS_URL` for a shared one).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA file to trust, for a server from [`RedisServer::start_tls_acl`].
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    /// A client of this server: TLS for a server from [`RedisServer::start_tls_acl`],
    /// trusting its CA.
    ///
    /// # Panics
    /// When the URL is not a Redis URL or the CA file cannot be read.
    pub fn client(&self) -> redis::Client {
        let Some(ca) = &self.tls_ca else {
            return redis::Client::open(self.url.as_str()).expect("a Redis URL");
        };
        // rustls needs one process-wide crypto provider; keep one already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root_cert = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
        redis::Client::build_with_tls(
            self.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
        .expect("a Redis URL")
    }

    /// Kills the process (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same port, with the data of its append-only file when it
    /// is [persistent](RedisServer::start_persistent), else empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Freezes the process (`SIGSTOP`): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a [paused](RedisServer::pause) process run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a private, running server");
        child.signal(signal);
    }

    /// The process id of a private, running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A plain connection for assertions on raw keys.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Clients connected to this server, not counting the connection that asks.
    pub async fn connected_clients(&self) -> usize {
        let count = self.info_number("clients", "connected_clients").await;
        usize::try_from(count)
            .unwrap_or(usize::MAX)
            .saturating_sub(1)
    }

    /// The number `field` of `INFO <section>` (`total_net_output_bytes` of `stats`: the
    /// bytes the server has sent its clients).
    ///
    /// # Panics
    /// When the section has no such whole number.
    pub async fn info_number(&self, section: &str, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no number {field}"))
    }

    /// Every key matching `pattern` (a `SCAN MATCH` glob), sorted.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.conn().await;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// What `f` returns, and the commands clients sent this server while it ran and
    /// until 300 ms passed without one (at most a second more), as `MONITOR` lines (not
    /// the commands scripts ran). Meant for a private server: on a shared one other
    /// tests' commands show too; replicas' periodic commands (their liveness beat, their
    /// lease sweep) show when they fall in the window.
    pub async fn client_commands<T>(&self, f: impl Future<Output = T>) -> (T, Vec<String>) {
        let mut stream = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "+OK");
        let value = f.await;
        let mut seen = Vec::new();
        // Periodic commands of several replicas may never leave 300 ms quiet.
        let end = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(
            end.min(tokio::time::Instant::now() + Duration::from_millis(300)),
            lines.next_line(),
        )
        .await
        {
            if !line.contains("[0 lua]") {
                seen.push(line);
            }
        }
        (value, seen)
    }

    /// The remaining time to live of `key` in milliseconds (`PTTL`: -1 without one, -2
    /// when it does not exist).
    pub async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// Empties every database (`FLUSHALL`), so what comes next pays for no earlier keys.
    pub async fn flush_all(&self) {
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut self.conn().await)
            .await
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Before the directory goes (the fields drop after this).
        self.kill();
    }
}

/// The server binary: `REDIS_SERVER_BIN` (a `valkey-server`, say), else `redis-server`.
pub(crate) fn redis_server_binary() -> String {
    match std::env::var("REDIS_SERVER_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => "redis-server".into(),
    }
}

/// The command-line client that goes with [`redis_server_binary`]: `REDIS_CLI_BIN`; else
/// the `*-cli` beside a `REDIS_SERVER_BIN` named `*-server` (`valkey-cli` beside
/// `valkey-server`) when there is one, so a cluster is never built with another engine's
/// client by accident; else `redis-cli`.
pub(crate) fn redis_cli_binary() -> String {
    if let Ok(bin) = std::env::var("REDIS_CLI_BIN")
        && !bin.is_empty()
    {
        return bin;
    }
    let server = redis_server_binary();
    if let Some(stem) = server.strip_suffix("-server") {
        let cli = format!("{stem}-cli");
        if Path::new(&cli).is_file() {
            return cli;
        }
    }
    "redis-cli".into()
}

/// `cmd` on a fresh connection of `client`, bounded by `limit`: the probe of the
/// topologies' waits, where a node may be dead or frozen. Errors as text naming `what`.
pub(crate) async fn query_within<T: redis::FromRedisValue>(
    client: &redis::Client,
    cmd: &redis::Cmd,
    what: &str,
    limit: Duration,
) -> Result<T, String> {
    let attempt = async {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("connect to {what}: {e}"))?;
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| format!("{what}: {e}"))
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{what} did not answer within {limit:?}")))
}

/// A key prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
