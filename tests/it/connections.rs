//! The replica's connection bounds, seen from raw TCP clients: a connection that brings
//! no request within `server.header_read_timeout_secs` is closed whatever protocol it
//! started, one with no request in flight for `server.idle_timeout_secs` after its
//! requests is closed too (an open SSE stream is in flight), and
//! `server.max_connections` caps the open ones with a clear refusal.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use std::time::Duration;

use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::http::{legacy_get, legacy_session};

use crate::support::{
    replica::Replica,
    wait::{retry, within},
};

/// The client preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame, which completes the preface.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the server closes `stream`; what it sent before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET /healthz` on a fresh connection: the status line, or the error.
async fn healthz(replica: &Replica) -> Result<String, String> {
    let mut stream = TcpStream::connect(replica.addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    if status.contains(" 200 ") {
        Ok(status)
    } else {
        Err(format!("answered {status:?}"))
    }
}

#[tokio::test]
async fn connections_that_bring_no_request_are_closed_whatever_they_started() {
    let replica = Replica::memory(&[("STATEFUL_MCP__SERVER__HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut silent = TcpStream::connect(replica.addr).await.unwrap();
    let mut half_preface = TcpStream::connect(replica.addr).await.unwrap();
    half_preface.write_all(&H2_PREFACE[..10]).await.unwrap();
    let mut h2_without_stream = TcpStream::connect(replica.addr).await.unwrap();
    h2_without_stream.write_all(H2_PREFACE).await.unwrap();
    h2_without_stream.write_all(H2_SETTINGS).await.unwrap();

    within("a silent connection is closed", until_closed(&mut silent)).await;
    within(
        "a connection with part of the HTTP/2 preface is closed",
        until_closed(&mut half_preface),
    )
    .await;
    let said = within(
        "an HTTP/2 connection that opens no stream is closed",
        until_closed(&mut h2_without_stream),
    )
    .await;
    assert!(
        !said.is_empty(),
        "the HTTP/2 server spoke first (its SETTINGS)"
    );

    assert_eq!(
        replica
            .metric(&["connections_closed_without_request_total"])
            .await,
        Some(3.0)
    );
    healthz(&replica).await.unwrap();
}

#[tokio::test]
async fn the_connection_cap_refuses_one_more_and_recovers_when_one_closes() {
    let replica = Replica::memory(&[
        ("STATEFUL_MCP__SERVER__MAX_CONNECTIONS", "2"),
        ("STATEFUL_MCP__SERVER__HEADER_READ_TIMEOUT_SECS", "60"),
    ])
    .await;
    // Accepted in the order they connected: these two take both places.
    let first = TcpStream::connect(replica.addr).await.unwrap();
    let _second = TcpStream::connect(replica.addr).await.unwrap();
    let mut third = TcpStream::connect(replica.addr).await.unwrap();
    let refusal = within("the third connection is refused", until_closed(&mut third)).await;
    let refusal = String::from_utf8_lossy(&refusal);
    assert!(
        refusal.starts_with("HTTP/1.1 503 ") && refusal.contains("too many open connections"),
        "{refusal}"
    );

    drop(first);
    retry("a new connection is served once one closed", async || {
        healthz(&replica).await
    })
    .await;
    let refused = replica.metric(&["connections_refused_total"]).await;
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
}

#[tokio::test]
async fn connections_idle_after_their_requests_are_closed_but_not_open_streams() {
    let replica = Replica::memory(&[("STATEFUL_MCP__SERVER__IDLE_TIMEOUT_SECS", "1")]).await;

    // HTTP/2 (prior knowledge): one stream, answered, then nothing.
    let stream = TcpStream::connect(replica.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let h2 = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/healthz", replica.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // HTTP/1.1 keep-alive: one request, answered, then nothing.
    let mut h1 = TcpStream::connect(replica.addr).await.unwrap();
    h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();

    // A 2025-era session's GET stream on its own connection: quiet (no event, no
    // keep-alive comment within the test) but in flight, so it stays open.
    let session = legacy_session(&replica.url()).await;
    let listener = reqwest::Client::new();
    let response = legacy_get(&listener, &replica.url(), &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();

    within("an idle HTTP/2 connection is sent GOAWAY and closed", h2)
        .await
        .unwrap()
        .unwrap();
    let answer = within(
        "an idle HTTP/1.1 keep-alive connection is closed",
        until_closed(&mut h1),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "),
        "the request was answered before the close"
    );
    let still_open = tokio::time::timeout(Duration::from_millis(1500), async {
        while let Some(chunk) = body.next().await {
            chunk?;
        }
        Ok::<_, reqwest::Error>(())
    })
    .await;
    assert!(
        still_open.is_err(),
        "a GET stream past the idle timeout ended: {still_open:?}"
    );
    let closed = replica.metric(&["connections_closed_idle_total"]).await;
    assert!(closed.is_some_and(|n| n >= 2.0), "{closed:?}");
}
