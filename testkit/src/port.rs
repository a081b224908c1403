//! Free loopback ports, for servers that must be told their port before they start.

/// A loopback port that was free a moment ago.
///
/// # Panics
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
