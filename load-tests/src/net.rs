//! Target resolution and TCP connection setup shared by the HTTP and
//! WebSocket clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper::Uri;
use tokio::net::{TcpSocket, TcpStream};

/// Where the server lives, resolved once so that thousands of connection
/// attempts do not each perform a DNS lookup.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved socket address of the server.
    pub addr: SocketAddr,
    /// Value for the HTTP `Host` header (`host:port`).
    pub authority: String,
    /// WebSocket endpoint, e.g. `ws://127.0.0.1:8080/ws`.
    pub ws_url: String,
}

impl Target {
    /// Parses an `http://host:port` base URL and resolves it, preferring IPv4
    /// because the source-address spreading only works for IPv4 loopback.
    pub async fn resolve(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid server URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            other => {
                bail!(
                    "server URL {url:?} must start with http:// (got scheme {other:?}); TLS is not supported"
                )
            }
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("server URL {url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| anyhow!("{host} resolved to no address"))?;
        let authority = format!("{host}:{port}");
        Ok(Self {
            addr,
            ws_url: format!("ws://{authority}/ws"),
            authority,
        })
    }
}

/// Round-robin choice of loopback source addresses (127.0.0.2, 127.0.0.3, …).
///
/// Every source IP has its own ~28k ephemeral ports, so spreading tens of
/// thousands of client sockets over several of them avoids port exhaustion
/// and keeps the 4-tuples distinct even with many worker processes.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    count: u8,
}

impl SourceAddrs {
    /// `count` addresses starting at 127.0.0.2; 0 disables binding. Binding is
    /// also skipped when the target is not IPv4 loopback, where a 127.x source
    /// could not reach it.
    pub fn new(count: u8, target: &Target) -> Self {
        let usable = matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Self {
            count: if usable { count.min(253) } else { 0 },
        }
    }

    /// Source address for the connection with global index `index`.
    pub fn for_index(&self, index: usize) -> Option<SocketAddr> {
        if self.count == 0 {
            return None;
        }
        let last_octet = 2 + (index % usize::from(self.count)) as u8;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)),
            0,
        ))
    }
}

/// Opens a TCP connection to the target, optionally from a fixed source IP,
/// with a timeout so a full accept queue cannot stall a task forever.
pub async fn connect(
    target: &Target,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("socket()")?;
    if let Some(src) = source {
        socket
            .bind(src)
            .with_context(|| format!("bind to source {src}"))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(target.addr))
        .await
        .map_err(|_| anyhow!("TCP connect to {} timed out", target.addr))?
        .with_context(|| format!("TCP connect to {}", target.addr))?;
    // Small latency-sensitive frames: do not let Nagle hold them back.
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(stream)
}
