//! A Debian nginx balancer in front of loopback replicas, configured as
//! `deploy/nginx.conf` (round robin, keep-alive upstreams, `proxy_next_upstream error
//! timeout`): what drains and upgrades are tested behind.

use std::process::Command;

use testkit::{
    free_port,
    process::{Child, Stop},
    temp_dir::TempDir,
};

use super::wait::wait_until;

/// An nginx master process with its own prefix directory, stopped on drop with SIGTERM:
/// the master stops its workers and exits (a SIGKILLed master would leave its workers
/// running); SIGKILL only if it has not gone within 5 s.
pub struct Nginx {
    _child: Child,
    /// Removed once the process has stopped (declared after it).
    dir: TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx on a free loopback port in front of the replicas on `upstreams`.
    pub fn start(upstreams: &[u16]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is required for this test: scripts/test.sh installs it");
        let port = free_port();
        let dir = TempDir::new("nginx", &port.to_string());
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        // The same proxy settings as deploy/nginx.conf, on loopback ports.
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mcp {{
{servers}        keepalive 16;
        # Shorter than the replicas' keepalive_drain_secs: nginx closes idle
        # connections to a draining replica before the replica would.
        keepalive_timeout 1s;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        client_body_buffer_size 1m;
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#,
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(binary);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
        let child = Child::spawn("nginx", command, None, Stop::Terminate);
        Self {
            _child: child,
            dir,
            port,
        }
    }

    /// The MCP endpoint behind it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// What nginx logged (upstream errors it met, retried or not).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }

    /// Waits until it answers `/healthz` through an upstream.
    pub async fn wait_ready(&self) {
        let healthz = format!("http://127.0.0.1:{}/healthz", self.port);
        wait_until("nginx comes up", async || {
            reqwest::get(&healthz)
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
}
