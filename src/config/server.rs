//! `[server]`: the HTTP listener, its request limits, the drain's timings and the URL
//! other replicas reach this one at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde::Deserialize;

use super::{ConfigError, positive};

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    /// Socket address to listen on.
    pub bind: SocketAddr,
    /// Host names (optionally with port) accepted in the `Host` header; empty = rmcp's
    /// loopback default.
    #[serde(deserialize_with = "super::comma_list")]
    pub allowed_hosts: Vec<String>,
    /// Origins accepted in the `Origin` header (loopback by default); empty = none.
    /// Requests without an `Origin` header are not affected.
    #[serde(deserialize_with = "super::comma_list")]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Replica id used in logs, stats and Redis liveness keys; empty = random.
    pub replica_id: String,
    /// How long the replica keeps serving after a shutdown signal, with readiness red,
    /// before it stops accepting (the balancer's time to notice).
    pub prestop_delay_secs: u64,
    /// How long in-flight requests may run once the replica stops accepting.
    pub shutdown_timeout_secs: u64,
    /// How long a draining replica keeps serving its open connections (answering with
    /// `Connection: close`) before closing idle ones; longer than the balancer's
    /// upstream keep-alive timeout.
    pub keepalive_drain_secs: u64,
    /// SSE keep-alive comment interval.
    pub sse_keep_alive_secs: u64,
    /// How long a client may take to send a request's head (line and headers) before
    /// its connection is closed.
    pub header_read_timeout_secs: u64,
    /// How long a connection may stay open with no request in flight (after its first
    /// request, or between two) before it is closed: an idle HTTP/1 keep-alive
    /// connection is closed, an idle HTTP/2 one sent `GOAWAY`.
    pub idle_timeout_secs: u64,
    /// Most HTTP connections open at once on a replica; one more is answered 503 and
    /// closed.
    pub max_connections: usize,
    /// The base URL (`http://host:port`) other replicas reach this one at, to forward
    /// the requests of the 2025-era sessions it serves; empty = `http://` and the bound
    /// address (loopback for an unspecified one). Read it with
    /// [`ServerSettings::advertised_url`].
    pub advertise_url: String,
    /// How long a forwarded request waits for the holding replica's response head
    /// (its body, an SSE stream, is not limited) before the forward fails; never past
    /// the request's deadline.
    pub forward_timeout_ms: u64,
    /// How long a request's Redis steps may take together, counted from its arrival
    /// (its body read): the session touch, a forward to the holding replica, the rate
    /// limit, a new session's writes and the tool's store calls. Past it the request
    /// is answered 503 (or a tool call a JSON-RPC error) instead of taking one
    /// `redis.command_timeout_ms` per step.
    pub request_deadline_ms: u64,
    /// The header a trusted proxy in front of the replicas appends the client's address
    /// to (`x-forwarded-for`), read from its last entry; empty = the connection's peer
    /// is the client. Only set it when every request comes through such a proxy: a
    /// client could otherwise name any address.
    pub trusted_proxy_header: String,
}

impl ServerSettings {
    /// Where other replicas reach this one: `advertise_url`, or the bound address
    /// (`bound`, else `bind`). An unspecified IP (`0.0.0.0`, `::`) reads as the address
    /// of the interface that routes outwards (a container's or pod's own IP), else as
    /// loopback.
    pub fn advertised_url(&self, bound: Option<SocketAddr>) -> String {
        if !self.advertise_url.is_empty() {
            return self.advertise_url.trim_end_matches('/').to_owned();
        }
        let mut addr = bound.unwrap_or(self.bind);
        if addr.ip().is_unspecified() {
            addr.set_ip(outward_ip(addr.is_ipv4()));
        }
        format!("http://{addr}")
    }

    /// Checks the `server.*` keys.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let advertise = &self.advertise_url;
        let base_url = |url: &str| {
            url.starts_with("http://")
                && url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.host().is_some() && matches!(u.path(), "" | "/"))
        };
        if !advertise.is_empty() && !base_url(advertise) {
            return Err(ConfigError::Invalid {
                key: "server.advertise_url",
                reason: "must be the http://host:port (no path) other replicas reach this \
                         one at"
                    .into(),
            });
        }
        if self.keepalive_drain_secs >= self.shutdown_timeout_secs {
            return Err(ConfigError::Invalid {
                key: "server.keepalive_drain_secs",
                reason: "must be shorter than server.shutdown_timeout_secs".into(),
            });
        }
        positive("server.max_body_bytes", self.max_body_bytes as u64)?;
        positive("server.forward_timeout_ms", self.forward_timeout_ms)?;
        positive("server.request_deadline_ms", self.request_deadline_ms)?;
        positive(
            "server.header_read_timeout_secs",
            self.header_read_timeout_secs,
        )?;
        positive("server.max_connections", self.max_connections as u64)?;
        positive("server.idle_timeout_secs", self.idle_timeout_secs)?;
        if !self.trusted_proxy_header.is_empty()
            && http::HeaderName::from_bytes(self.trusted_proxy_header.as_bytes()).is_err()
        {
            return Err(ConfigError::Invalid {
                key: "server.trusted_proxy_header",
                reason: "must be an HTTP header name".into(),
            });
        }
        positive("server.sse_keep_alive_secs", self.sse_keep_alive_secs)
    }
}

/// The local address of the route out of this host, learnt by connecting a UDP socket
/// (no packet leaves); loopback when there is no such route.
fn outward_ip(v4: bool) -> IpAddr {
    let (any, documentation): (IpAddr, IpAddr) = if v4 {
        (
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
        )
    } else {
        (
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        )
    };
    UdpSocket::bind((any, 0))
        .and_then(|socket| {
            socket.connect((documentation, 9))?;
            socket.local_addr()
        })
        .map(|local| local.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(if v4 {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        })
}

#[cfg(test)]
mod tests {
    use super::super::{Settings, tests::env};

    #[test]
    fn the_advertised_url_is_the_setting_or_the_bound_address() {
        let load = |pairs: &[(&str, &str)]| Settings::load_with_env(None, env(pairs)).unwrap();
        let s = load(&[]);
        assert_eq!(s.server.advertised_url(None), "http://127.0.0.1:8080");
        let bound = "127.0.0.1:41234".parse().ok();
        assert_eq!(s.server.advertised_url(bound), "http://127.0.0.1:41234");
        let any = load(&[("STATEFUL_MCP__SERVER__BIND", "0.0.0.0:9000")]);
        let url = any.server.advertised_url(None);
        assert!(
            url.starts_with("http://") && url.ends_with(":9000"),
            "{url}"
        );
        assert!(!url.contains("0.0.0.0"), "{url}");
        let set = load(&[(
            "STATEFUL_MCP__SERVER__ADVERTISE_URL",
            "http://10.1.2.3:8080/",
        )]);
        assert_eq!(set.server.advertised_url(bound), "http://10.1.2.3:8080");
        for bad in [
            "10.1.2.3:8080",
            "https://a:1",
            "http://a b",
            "http://a:1/mcp",
        ] {
            let err =
                Settings::load_with_env(None, env(&[("STATEFUL_MCP__SERVER__ADVERTISE_URL", bad)]))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("server.advertise_url"), "{bad}: {err}");
        }
    }
}
