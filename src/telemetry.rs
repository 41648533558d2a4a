//! Logging and operator-facing counters.
//!
//! Logs go through `tracing` (one span per pipeline stage); `RUST_LOG` overrides the configured
//! filter. [`Metrics`] renders counters, gauges and histograms in the Prometheus text format and
//! [`serve_metrics`] serves them (`--metrics ADDR`): chain height and round, committed
//! transactions, rejections by reason, network drops, every pipeline link's depth and
//! backpressure (a full link with growing backpressure sits in front of the bottleneck stage),
//! the EIP-2159 names ([`ChainHead`]), and the process' CPU, memory, descriptors and build.
//! Every metric is listed in `docs/metrics.md`.
//!
//! Imports only `link` (layer 2) and std/tokio.

use crate::link::LinkSnapshot;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber writing to stderr. Safe to call twice (the second
/// call is ignored, e.g. in tests).
pub fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

mod exposition;
mod process;

pub use exposition::{HistogramSnapshot, Metrics};
pub use process::{process_metrics, VERSION};

/// Checks exposition text as Prometheus reads it (for tests of every metrics source).
#[cfg(test)]
pub(crate) use exposition::tests::parse_exposition;

/// Where a node's chain stands, under the names of EIP-2159 so that dashboards and alerts made
/// for Ethereum clients read Kaon nodes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Last committed (CN) or audited and stored (RN) height: `eth_blockNumber`.
    pub height: u64,
    /// Highest height this node has heard of (`eth_syncing`'s `highestBlock`).
    pub best_known: u64,
    /// Peers connected now: `net_peerCount`.
    pub peers: u64,
}

impl Metrics {
    /// `ethereum_blockchain_height`, `ethereum_best_known_block_number` (never below the
    /// height: EIP-2159 has it equal the height when not syncing) and `ethereum_peer_count`.
    pub fn chain_head(&mut self, labels: &[(&str, &str)], head: ChainHead) {
        self.gauge(
            "ethereum_blockchain_height",
            "Height of the canonical chain (eth_blockNumber)",
            labels,
            head.height as f64,
        );
        self.gauge(
            "ethereum_best_known_block_number",
            "Highest block known to exist (eth_syncing highestBlock, else the height)",
            labels,
            head.best_known.max(head.height) as f64,
        );
        self.gauge(
            "ethereum_peer_count",
            "Peers connected now (net_peerCount)",
            labels,
            head.peers as f64,
        );
    }

    /// Link counters of a pipeline, labelled by link name.
    pub fn links(&mut self, links: &[LinkSnapshot], labels: &[(&str, &str)]) {
        for l in links {
            let mut with_link = labels.to_vec();
            with_link.push(("link", l.name));
            self.gauge(
                "kaon_link_depth",
                "Items queued in a pipeline link",
                &with_link,
                l.depth as f64,
            );
            self.gauge(
                "kaon_link_capacity",
                "Capacity of a pipeline link",
                &with_link,
                l.capacity as f64,
            );
            self.counter(
                "kaon_link_sent_total",
                "Items sent into a link",
                &with_link,
                l.sent,
            );
            self.counter(
                "kaon_link_received_total",
                "Items taken from a link",
                &with_link,
                l.received,
            );
            self.counter(
                "kaon_link_backpressure_total",
                "Sends that found the link full and waited",
                &with_link,
                l.backpressure,
            );
        }
    }
}

/// Longest request head read from a metrics client, and how long it may take.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// Scrapes served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `addr` (Prometheus), rendering with `render` per request and adding
/// the process' own families ([`process_metrics`]; `render` must not add them). Returns the
/// bound address. Bad or slow clients are cut off; nothing they send can grow memory.
pub fn serve_metrics(
    rt: &tokio::runtime::Handle,
    addr: std::net::SocketAddr,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let _guard = rt.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let render = std::sync::Arc::clone(&render);
            // The slot goes with the rendering, which outlives a timed-out connection.
            tokio::spawn(tokio::time::timeout(
                REQUEST_DEADLINE,
                answer(stream, render, permit),
            ));
        }
    });
    Ok(bound)
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = if head.starts_with(b"GET /metrics ") {
        // Sources may read the disk (a region's load from its block log): off the runtime's
        // workers, which also serve the node's JSON-RPC.
        let mut body = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut own = Metrics::default();
            process_metrics(&mut own);
            render() + &own.render()
        })
        .await
        .map_err(std::io::Error::other)?;
        body.insert_str(
            0,
            &format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
        );
        body
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
