//! How the pool reaches one node: its client (TLS trusting `redis.tls_ca_file` when the
//! address is `rediss://`), and the address of another node over the same transport,
//! for the nodes the sentinels or a cluster's slot map name.

use redis::{Client, ConnectionAddr, ConnectionInfo};

use super::RedisPoolError;
use crate::config::RedisSettings;

/// The CA certificates of `redis.tls_ca_file`, when set.
pub(super) fn root_cert(settings: &RedisSettings) -> Result<Option<Vec<u8>>, RedisPoolError> {
    if settings.tls_ca_file.as_os_str().is_empty() {
        return Ok(None);
    }
    std::fs::read(&settings.tls_ca_file).map(Some).map_err(|e| {
        RedisPoolError::Unavailable(format!(
            "redis.tls_ca_file {}: {e}",
            settings.tls_ca_file.display()
        ))
    })
}

/// `host:port` over the same transport as `template` (TLS or not, and its TLS settings).
pub(super) fn addr_like(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionAddr {
    match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    }
}

/// The client of `info`: TLS for a `rediss://` address, trusting `root_cert` when set.
pub(super) fn client(
    info: ConnectionInfo,
    root_cert: Option<&[u8]>,
) -> Result<Client, RedisPoolError> {
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Ok(Client::open(info)?);
    }
    // rustls needs one process-wide crypto provider; keep one already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(root_cert) = root_cert else {
        return Ok(Client::open(info)?);
    };
    Ok(Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert.to_vec()),
        },
    )?)
}
