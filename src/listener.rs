//! The replica's TCP listener, with the accept side of a graceful drain: when told to
//! stop accepting, it first takes every connection the kernel has already queued (they
//! completed their handshake and may carry a request), then closes the socket so new
//! connections are refused (a balancer retries those elsewhere), while the server goes
//! on serving the connections it has. Closing a listener with queued connections would
//! reset them, and a balancer cannot tell whether a reset request ran.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A [`TcpListener`] that sets `TCP_NODELAY` on accepted sockets and drains its backlog
/// on request.
pub struct DrainingListener {
    inner: Option<TcpListener>,
    local_addr: SocketAddr,
    stop_accepting: CancellationToken,
    drained: CancellationToken,
}

impl DrainingListener {
    /// Wraps `inner`. After `stop_accepting` fires, queued connections are still
    /// accepted; once none is left the socket is closed and `drained` fires.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn new(
        inner: TcpListener,
        stop_accepting: CancellationToken,
        drained: CancellationToken,
    ) -> io::Result<Self> {
        Ok(Self {
            local_addr: inner.local_addr()?,
            inner: Some(inner),
            stop_accepting,
            drained,
        })
    }

    /// One connection already queued in the kernel, without waiting: a non-blocking
    /// `accept` straight on the socket (tokio's readiness cache could still say "not
    /// ready" for a connection whose event the reactor has not seen yet).
    fn take_queued(listener: &TcpListener) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match socket2::SockRef::from(listener).accept() {
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
            let Some(listener) = &self.inner else {
                // Closed: the server keeps serving its connections until its own
                // graceful shutdown, and never gets another one from here.
                std::future::pending::<()>().await;
                continue;
            };
            if self.stop_accepting.is_cancelled() {
                match Self::take_queued(listener) {
                    Ok(Some((stream, addr))) => {
                        no_delay(&stream);
                        return (stream, addr);
                    }
                    Ok(None) => {
                        self.inner = None;
                        self.drained.cancel();
                    }
                    Err(e) => accept_error(e).await,
                }
                continue;
            }
            tokio::select! {
                accepted = listener.accept() => match accepted {
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
        Ok(self.local_addr)
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

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn queued_connections_are_served_and_then_the_socket_refuses() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let (stop, drained) = (CancellationToken::new(), CancellationToken::new());
        let mut listener = DrainingListener::new(inner, stop.clone(), drained.clone()).unwrap();

        // Two clients complete their handshakes (the kernel queues them) before the
        // replica stops accepting.
        let queued_a = TcpStream::connect(addr).await.unwrap();
        let queued_b = TcpStream::connect(addr).await.unwrap();
        stop.cancel();
        let (first, _) = listener.accept().await;
        let (second, _) = listener.accept().await;
        let mut accepted = [first.peer_addr().unwrap(), second.peer_addr().unwrap()];
        let mut expected = [
            queued_a.local_addr().unwrap(),
            queued_b.local_addr().unwrap(),
        ];
        accepted.sort();
        expected.sort();
        assert_eq!(accepted, expected);
        assert!(!drained.is_cancelled());

        // The next accept finds the backlog empty, closes the socket and never returns.
        let pending = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(pending.is_err());
        assert!(drained.is_cancelled());
        let refused = TcpStream::connect(addr).await;
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }
}
