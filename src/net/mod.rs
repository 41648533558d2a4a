//! CN-to-CN networking over QUIC (quinn), the only module that imports `quinn`.
//!
//! Each node listens on one UDP socket and dials every peer. A dialled connection carries one
//! long-lived unidirectional stream of frames from the dialler; the listener authenticates the
//! dialler by its CN key before reading anything else ([`handshake`]). Per peer, outbound frames
//! wait in a bounded queue (a full queue drops and counts — consensus retransmits through round
//! changes and sync); reconnects back off exponentially. Every read has a limit and a deadline:
//! frames are length-prefixed and refused above `max_frame_bytes`, a started frame must finish
//! within `frame_timeout`, and the handshake within `handshake_timeout`. Bad frames are counted
//! against the peer, which is disconnected after a few.

pub mod handshake;
pub mod tls;

use crate::consensus::selection::CnSet;
use crate::crypto::bls::SecretKey;
use crate::pipeline::LinkSender;
use crate::types::codec::{decode_frame, Kind};
use crate::types::{CnIndex, ConsensusMessage, TxBatch};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bad frames from one connection before it is closed.
const MAX_BAD_FRAMES: u32 = 8;

/// Network settings of one node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: SocketAddr,
    /// Largest frame accepted from a peer; bounds memory per connection.
    pub max_frame_bytes: usize,
    /// Frames queued per peer before new ones are dropped.
    pub queue_depth: usize,
    pub handshake_timeout: Duration,
    pub frame_timeout: Duration,
}

impl NetConfig {
    /// Defaults for a node listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            // The largest consensus message (a proposal with its justification) must fit.
            max_frame_bytes: <ConsensusMessage as crate::types::WireMessage>::MAX_PAYLOAD
                + crate::types::codec::FRAME_OVERHEAD,
            queue_depth: 1024,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(5),
        }
    }
}

/// A decoded message from an authenticated peer.
#[derive(Debug, Clone)]
pub enum Inbound {
    Consensus(ConsensusMessage),
    Txs(TxBatch),
}

/// Counters an operator watches.
#[derive(Debug, Default)]
pub struct NetStats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_inbound_full: AtomicU64,
    pub bad_frames: AtomicU64,
    pub rejected_handshakes: AtomicU64,
    pub connects: AtomicU64,
}

/// A running node network.
pub struct Network {
    endpoint: quinn::Endpoint,
    identity: Identity,
    queue_depth: usize,
    peers: Vec<(CnIndex, mpsc::Sender<Arc<Vec<u8>>>)>,
    stats: Arc<NetStats>,
}

/// Who we are, for the handshake.
#[derive(Clone)]
struct Identity {
    me: CnIndex,
    key: SecretKey,
    /// Every CN set this node has known (genesis and each committed change).
    sets: Arc<std::sync::RwLock<Vec<Arc<CnSet>>>>,
}

impl Identity {
    fn known_sets(&self) -> Vec<Arc<CnSet>> {
        self.sets.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Network {
    /// Accepts peers of `set` from now on (a CN-set change committed).
    pub fn learn_set(&self, set: Arc<CnSet>) {
        let mut sets = self
            .identity
            .sets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !sets.iter().any(|s| s.root() == set.root()) {
            sets.push(set);
        }
    }

    /// Binds the listener and starts accepting authenticated peers on `rt`.
    pub fn bind(
        rt: &tokio::runtime::Handle,
        config: NetConfig,
        me: CnIndex,
        key: SecretKey,
        set: Arc<CnSet>,
        inbound: LinkSender<(CnIndex, Inbound)>,
    ) -> anyhow::Result<Self> {
        let _guard = rt.enter();
        let mut endpoint = quinn::Endpoint::server(tls::server_config()?, config.listen)?;
        endpoint.set_default_client_config(tls::client_config()?);
        let stats = Arc::new(NetStats::default());
        let identity = Identity {
            me,
            key,
            sets: Arc::new(std::sync::RwLock::new(vec![set])),
        };
        let queue_depth = config.queue_depth;
        rt.spawn(accept_loop(
            endpoint.clone(),
            identity.clone(),
            Arc::new(config),
            inbound,
            Arc::clone(&stats),
        ));
        Ok(Self {
            endpoint,
            identity,
            queue_depth,
            peers: Vec::new(),
            stats,
        })
    }

    /// Starts one dialler (with its bounded queue and reconnect backoff) per peer.
    pub fn connect(&mut self, rt: &tokio::runtime::Handle, peers: &[(CnIndex, SocketAddr)]) {
        for &(cn, addr) in peers {
            let (tx, rx) = mpsc::channel(self.queue_depth);
            let (endpoint, identity, stats) = (
                self.endpoint.clone(),
                self.identity.clone(),
                Arc::clone(&self.stats),
            );
            rt.spawn(dial_loop(endpoint, identity, addr, rx, stats));
            self.peers.push((cn, tx));
        }
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }

    /// Queues `frame` for every peer; never blocks.
    pub fn broadcast(&self, frame: Arc<Vec<u8>>) {
        for (_, queue) in &self.peers {
            self.enqueue(queue, Arc::clone(&frame));
        }
    }

    /// Queues `frame` for one peer; never blocks.
    pub fn send(&self, to: CnIndex, frame: Arc<Vec<u8>>) {
        if let Some((_, queue)) = self.peers.iter().find(|(cn, _)| *cn == to) {
            self.enqueue(queue, frame);
        }
    }

    fn enqueue(&self, queue: &mpsc::Sender<Arc<Vec<u8>>>, frame: Arc<Vec<u8>>) {
        if queue.try_send(frame).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    identity: Identity,
    config: Arc<NetConfig>,
    inbound: LinkSender<(CnIndex, Inbound)>,
    stats: Arc<NetStats>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let (identity, config, inbound, stats) = (
            identity.clone(),
            Arc::clone(&config),
            inbound.clone(),
            Arc::clone(&stats),
        );
        tokio::spawn(async move {
            if let Err(e) = serve_connection(incoming, identity, config, inbound, &stats).await {
                tracing::debug!(error = %e, "inbound connection ended");
            }
        });
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    identity: Identity,
    config: Arc<NetConfig>,
    inbound: LinkSender<(CnIndex, Inbound)>,
    stats: &NetStats,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let mut stream = tokio::time::timeout(config.handshake_timeout, conn.accept_uni()).await??;
    let peer = match tokio::time::timeout(
        config.handshake_timeout,
        handshake::accept(&conn, &mut stream, &identity.known_sets()),
    )
    .await?
    {
        Ok(peer) => peer,
        Err(e) => {
            stats.rejected_handshakes.fetch_add(1, Ordering::Relaxed);
            conn.close(1u32.into(), b"handshake");
            return Err(e);
        }
    };
    let mut bad = 0u32;
    loop {
        let frame = match read_frame(&mut stream, &config, stats).await? {
            Some(frame) => frame,
            None => return Ok(()),
        };
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        match decode_inbound(&frame) {
            Ok(msg) => {
                if inbound.try_send((peer, msg)).is_err() {
                    stats.dropped_inbound_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                bad += 1;
                tracing::debug!(peer = %peer, error = %e, "bad frame");
                if bad >= MAX_BAD_FRAMES {
                    conn.close(2u32.into(), b"bad frames");
                    anyhow::bail!("peer {peer} sent {bad} bad frames");
                }
            }
        }
    }
}

/// Decodes a frame by the kind it names.
pub fn decode_inbound(frame: &[u8]) -> Result<Inbound, crate::types::CodecError> {
    match Kind::of_frame(frame) {
        Some(Kind::TxBatch) => decode_frame::<TxBatch>(frame).map(Inbound::Txs),
        _ => decode_frame::<ConsensusMessage>(frame).map(Inbound::Consensus),
    }
}

/// Reads one length-prefixed frame; `None` at a clean end of stream. Oversize and stalled
/// frames end the connection and count as bad frames.
async fn read_frame(
    stream: &mut quinn::RecvStream,
    config: &NetConfig,
    stats: &NetStats,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    // Waiting for the next frame has no deadline (keep-alives detect dead peers); once a
    // frame has started, it must finish in time.
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > config.max_frame_bytes {
        stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        anyhow::bail!(
            "frame of {len} bytes over the {} limit",
            config.max_frame_bytes
        );
    }
    let mut frame = vec![0u8; len];
    match tokio::time::timeout(config.frame_timeout, stream.read_exact(&mut frame)).await {
        Ok(read) => read?,
        Err(elapsed) => {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            return Err(elapsed.into());
        }
    }
    Ok(Some(frame))
}

async fn dial_loop(
    endpoint: quinn::Endpoint,
    identity: Identity,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Arc<Vec<u8>>>,
    stats: Arc<NetStats>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(&endpoint, &identity, addr).await {
            Ok((_conn, mut stream)) => {
                stats.connects.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                while let Some(frame) = queue.recv().await {
                    let len = (frame.len() as u32).to_le_bytes();
                    if stream.write_all(&len).await.is_err()
                        || stream.write_all(&frame).await.is_err()
                    {
                        break;
                    }
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
                if queue.is_closed() {
                    return;
                }
            }
            Err(e) => tracing::trace!(%addr, error = %e, "dial failed"),
        }
        if queue.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    addr: SocketAddr,
) -> anyhow::Result<(quinn::Connection, quinn::SendStream)> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.connect(addr, tls::SERVER_NAME)?,
    )
    .await??;
    let mut stream = conn.open_uni().await?;
    handshake::initiate(&conn, &mut stream, identity.me, &identity.key).await?;
    Ok((conn, stream))
}
