//! Private `redis-server` processes on free loopback ports (killed and restarted for fault
//! injection), pools on them, and a key prefix per test.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use stateful_mcp::{
    config::{RedisSettings, Settings},
    redis_pool::RedisPool,
};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::wait::wait_until;

/// A `redis-server` owned by one test: started on a free loopback port, killed on drop.
/// With `REDIS_URL` set, tests that do not inject faults use that server instead.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    url: String,
    /// Arguments after the defaults (TLS, ACL users).
    extra_args: Vec<String>,
    /// The CA to trust for `rediss://`.
    tls_ca: Option<PathBuf>,
    /// Whether every write goes to an append-only file in `dir` before it is
    /// acknowledged, so a restart keeps the data.
    persistent: bool,
}

impl RedisServer {
    /// Starts a private server (never the shared one on 6379).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts a private server that writes every change to its append-only file before
    /// acknowledging it (`--appendonly yes --appendfsync always`), so a kill and a
    /// [`RedisServer::restart`] lose no acknowledged write.
    pub async fn start_persistent() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("smcp-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port,
            dir,
            url: format!("redis://127.0.0.1:{port}"),
            extra_args: Vec::new(),
            tls_ca: None,
            persistent,
        };
        server.spawn().await;
        server
    }

    /// Starts a private server that speaks only TLS (a CA and a server certificate made
    /// with `openssl` for this test) and knows one ACL user, `app` with password `pw`,
    /// limited to the keys and channels under `prefix` and denied `@dangerous` commands;
    /// the `default` user is off. [`RedisServer::url`] carries the credentials.
    pub async fn start_tls_acl(prefix: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("smcp-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
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
        let extra_args = [
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
        let mut server = Self {
            child: None,
            port,
            url: format!("rediss://app:pw@127.0.0.1:{port}"),
            tls_ca: Some(dir.join("ca.crt")),
            dir,
            extra_args,
            persistent: false,
        };
        server.spawn().await;
        server
    }

    /// A server for tests that only need *a* Redis: `REDIS_URL` when the user set it,
    /// else a private one.
    pub async fn shared_or_start() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self {
                child: None,
                port: 0,
                dir: PathBuf::new(),
                url,
                extra_args: Vec::new(),
                tls_ca: None,
                persistent: false,
            },
            _ => Self::start().await,
        }
    }

    async fn spawn(&mut self) {
        let persistence: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                self.dir.to_str().unwrap(),
                "--maxmemory-policy",
                "noeviction",
            ])
            .args(persistence)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let pool = self.pool();
        wait_until("redis-server answers PING", async || {
            pool.ping().await.is_ok()
        })
        .await;
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA file to trust, for a server from [`RedisServer::start_tls_acl`].
    pub fn tls_ca(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    /// The shipped Redis settings, pointed at this server.
    pub fn settings(&self) -> RedisSettings {
        let mut settings = Settings::load_with_env(None, Vec::new()).unwrap().redis;
        settings.url = self.url.clone();
        if let Some(ca) = &self.tls_ca {
            settings.tls_ca_file = ca.clone();
        }
        settings
    }

    /// A pool on this server with the shipped settings.
    pub fn pool(&self) -> RedisPool {
        RedisPool::new(&self.settings()).unwrap()
    }

    /// Kills the process (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
        self.signal("STOP");
    }

    /// Lets a [paused](RedisServer::pause) process run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a private, running server");
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A plain connection for assertions on raw keys.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Clients connected to this server, not counting the connection that asks.
    pub async fn connected_clients(&self) -> usize {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        let count = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("INFO clients has connected_clients");
        count.saturating_sub(1)
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

    /// What `f` returns, and the commands clients sent this server while it ran, as
    /// `MONITOR` lines (not the commands scripts ran). Meant for a private server: on a
    /// shared one other tests' commands show too.
    pub async fn client_commands<T>(&self, f: impl Future<Output = T>) -> (T, Vec<String>) {
        let mut stream = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "+OK");
        let value = f.await;
        let mut seen = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
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
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
