//! A loopback TCP proxy in front of a server (a `redis-server`), switched at runtime
//! between network faults: pass-through, a delay on every chunk, a blackhole and resets.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards every chunk as it comes.
    Pass,
    /// Holds every chunk this long before forwarding it.
    Delay(Duration),
    /// Accepts connections and forwards nothing, keeping them open. What was sent is held
    /// (as TCP would keep retransmitting it) and delivered if the mode changes back.
    Blackhole,
    /// Resets every open connection, and every new one as soon as it is accepted.
    Reset,
}

/// The proxy; dropping it resets its connections and stops accepting.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `upstream`, passing traffic through.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, upstream, mode.clone(), open.clone()));
        Self {
            addr,
            mode,
            open,
            task,
        }
    }

    /// `redis://` on the proxy's port.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Switches every connection, open and future, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Reset);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    open: Arc<AtomicUsize>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        if *mode.borrow() == Mode::Reset {
            reset(inbound);
            continue;
        }
        let Ok(outbound) = TcpStream::connect(upstream).await else {
            reset(inbound);
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let open = OpenGuard::new(open.clone());
        tokio::spawn(connection(inbound, outbound, mode.subscribe(), open));
    }
}

/// Counts one open connection while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes `stream` with a reset (RST) instead of a graceful FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Pumps both directions until either side closes or the mode turns to [`Mode::Reset`],
/// which resets both sides.
async fn connection(
    mut inbound: TcpStream,
    mut outbound: TcpStream,
    mode: watch::Receiver<Mode>,
    _open: OpenGuard,
) {
    let mut reset_signal = mode.clone();
    let (in_read, in_write) = inbound.split();
    let (out_read, out_write) = outbound.split();
    tokio::select! {
        _ = pump(in_read, out_write, mode.clone()) => {}
        _ = pump(out_read, in_write, mode.clone()) => {}
        _ = reset_signal.wait_for(|m| *m == Mode::Reset) => {}
    }
    if *mode.borrow() == Mode::Reset {
        reset(inbound);
        reset(outbound);
    }
}

/// Copies chunks from `from` to `to`, each as the current mode says.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(current) = mode.wait_for(|m| *m != Mode::Blackhole).await.map(|m| *m) else {
            return;
        };
        match current {
            Mode::Reset => return,
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            Mode::Pass | Mode::Blackhole => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
