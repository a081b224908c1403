//! The replica's TCP listener, with the accept side of a graceful drain: when told to
//! stop accepting, it first takes every connection the kernel has already queued (they
//! completed their handshake and may carry a request), and only then reports the
//! backlog drained so the server can close the socket. Closing a listener with queued
//! connections would reset them, and a balancer cannot tell whether a reset request ran.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A [`TcpListener`] that sets `TCP_NODELAY` on accepted sockets and drains its backlog
/// on request.
pub struct DrainingListener {
    inner: TcpListener,
    stop_accepting: CancellationToken,
    drained: CancellationToken,
}

impl DrainingListener {
    /// Wraps `inner`. After `stop_accepting` fires, queued connections are still
    /// accepted; `drained` fires once none is left.
    pub fn new(
        inner: TcpListener,
        stop_accepting: CancellationToken,
        drained: CancellationToken,
    ) -> Self {
        Self {
            inner,
            stop_accepting,
            drained,
        }
    }

    /// One connection already queued in the kernel, without waiting: a non-blocking
    /// `accept` straight on the socket (tokio's readiness cache could still say "not
    /// ready" for a connection whose event the reactor has not seen yet).
    fn take_queued(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match socket2::SockRef::from(&self.inner).accept() {
            Ok((socket, addr)) => {
                socket.set_nonblocking(true)?;
                let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
                let addr = addr
                    .as_socket()
                    .ok_or_else(|| io::Error::other("accepted a non-IP socket"))?;
                Ok(Some((stream, addr)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Nagle plus delayed ACKs hold small SSE writes back by ~40 ms.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if self.stop_accepting.is_cancelled() {
                match self.take_queued() {
                    Ok(Some((stream, addr))) => {
                        no_delay(&stream);
                        return (stream, addr);
                    }
                    Ok(None) => {
                        self.drained.cancel();
                        // The server stops calling `accept` once `drained` fires.
                        std::future::pending::<()>().await;
                    }
                    Err(e) => accept_error(e).await,
                }
                continue;
            }
            tokio::select! {
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, addr)) => {
                        no_delay(&stream);
                        return (stream, addr);
                    }
                    Err(e) => accept_error(e).await,
                },
                () = self.stop_accepting.cancelled() => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Per-connection errors are the peer's problem; anything else (out of file
/// descriptors) is worth a pause, as hyper and axum do.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
