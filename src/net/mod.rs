//! Node networking over QUIC (quinn), the only module that imports `quinn`.
//!
//! Each CN listens on one UDP socket and dials every peer. A dialled connection carries one
//! long-lived unidirectional stream of frames from the dialler; the listener authenticates the
//! dialler by its CN key before reading anything else ([`handshake`]). Per peer, outbound frames
//! wait in a bounded queue (a full queue drops and counts — consensus retransmits through round
//! changes and sync); reconnects back off exponentially. Every read has a limit and a deadline:
//! frames are length-prefixed and refused above `max_frame_bytes`, a started frame must finish
//! within `frame_timeout`, and the handshake within `handshake_timeout`. Bad frames are counted
//! against the peer, which is disconnected after a few.
//!
//! Ranger nodes dial CNs too, authenticated by their own node key: a CN admits at most
//! `max_rn_peers` of them, at most `max_rn_per_key` per key and `max_rn_per_address` per IP
//! address ([`admission`]), answers their block requests ([`sync`]) from its block log, and
//! takes their forwarded transactions — nothing they send reaches consensus. Their frames are
//! read with the `TxBatch` limit (8 MiB), not the consensus one, and an RN that sends nothing
//! (no frame, no request) for `rn_idle_timeout` loses its slot; RNs send an empty `TxBatch` as a
//! heartbeat when they have nothing else to say. The RN side, and the RN-to-RN gossip network,
//! is [`rn`].

pub mod admission;
pub mod handshake;
pub mod hello_checks;
pub mod probe;
pub mod rn;
pub mod sync;
pub mod tls;

use crate::consensus::selection::CnSet;
use crate::crypto::bls::SecretKey;
use crate::link::LinkSender;
use crate::types::codec::{decode_frame, Kind};
use crate::types::{CnIndex, ConsensusMessage, TxBatch};
use handshake::{Credential, Peer, Side};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Bad frames from one connection before it is closed.
pub const MAX_BAD_FRAMES: u32 = 8;

/// Ranger nodes a CN serves at once by default: each costs a connection and, at most, one
/// block request in progress.
pub const DEFAULT_MAX_RN_PEERS: usize = 64;
/// How long an RN may hold a slot on a CN without sending a frame or a block request (RNs send
/// a heartbeat every [`rn::DEFAULT_CN_HEARTBEAT`], well within it).
pub const DEFAULT_RN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest frame an RN may send a CN: the only RN frame is a transaction batch.
pub const RN_FRAME_LIMIT: usize =
    <TxBatch as crate::types::WireMessage>::MAX_PAYLOAD + crate::types::codec::FRAME_OVERHEAD;

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
    /// Ranger nodes admitted at once; more are refused at the handshake.
    pub max_rn_peers: usize,
    /// Ranger-node connections one node key may hold.
    pub max_rn_per_key: usize,
    /// Ranger-node connections one IP address may hold.
    pub max_rn_per_address: usize,
    /// An RN silent this long (no frame, no block request) is disconnected.
    pub rn_idle_timeout: Duration,
    /// Hellos of unauthenticated peers checked at once; more are refused.
    pub max_hello_checks: usize,
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
            max_rn_peers: DEFAULT_MAX_RN_PEERS,
            max_rn_per_key: admission::DEFAULT_MAX_PER_KEY,
            max_rn_per_address: admission::DEFAULT_MAX_PER_ADDRESS,
            rn_idle_timeout: DEFAULT_RN_IDLE_TIMEOUT,
            max_hello_checks: hello_checks::DEFAULT_MAX_HELLO_CHECKS,
        }
    }

    fn rn_limits(&self) -> admission::Limits {
        admission::Limits {
            total: self.max_rn_peers,
            per_key: self.max_rn_per_key,
            per_address: self.max_rn_per_address,
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
    /// Transaction gossip frames not queued for a peer whose queue held
    /// [`GOSSIP_QUEUE_BYTES`] or more.
    pub dropped_gossip: AtomicU64,
    pub dropped_inbound_full: AtomicU64,
    pub bad_frames: AtomicU64,
    pub rejected_handshakes: AtomicU64,
    pub connects: AtomicU64,
    /// Block requests answered, sent, and sent without a usable answer.
    pub requests_served: AtomicU64,
    pub requests_sent: AtomicU64,
    pub request_failures: AtomicU64,
    /// Ranger nodes connected now (a gauge).
    pub rn_peers: AtomicU64,
    /// CNs this node's diallers hold a link to now (a gauge).
    pub cn_peers: AtomicU64,
}

impl NetStats {
    /// Peers connected now: CN links up and ranger nodes admitted (`net_peerCount`).
    pub fn peer_count(&self) -> u64 {
        let load = |g: &AtomicU64| g.load(Ordering::Relaxed);
        load(&self.cn_peers).saturating_add(load(&self.rn_peers))
    }

    /// The peer gauges for the Prometheus endpoint, with `labels` on every sample.
    pub fn peer_metrics(&self, m: &mut crate::telemetry::Metrics, labels: &[(&str, &str)]) {
        let gauges = [
            ("kaon_net_cn_peers", "CNs linked to now", &self.cn_peers),
            (
                "kaon_net_rn_peers",
                "Ranger nodes connected now",
                &self.rn_peers,
            ),
        ];
        for (name, help, gauge) in gauges {
            m.gauge(name, help, labels, gauge.load(Ordering::Relaxed) as f64);
        }
    }
}

/// Counts one live link on a gauge until dropped, however the link ends.
struct LiveLink<'a>(&'a AtomicU64);

impl<'a> LiveLink<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for LiveLink<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Misbehaviour count of one connection (at [`MAX_BAD_FRAMES`] the connection is closed),
/// and when it was last used.
pub(crate) struct PeerScore {
    pub peer: Peer,
    conn: quinn::Connection,
    bad: AtomicU32,
    opened: Instant,
    /// Milliseconds after `opened` of the last frame or request.
    active_ms: AtomicU64,
}

impl PeerScore {
    pub fn new(peer: Peer, conn: quinn::Connection) -> Arc<Self> {
        Arc::new(Self {
            peer,
            conn,
            bad: AtomicU32::new(0),
            opened: Instant::now(),
            active_ms: AtomicU64::new(0),
        })
    }

    /// Records that the peer used its connection now.
    pub fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.active_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// How long the peer has not used its connection.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Returns once the peer has been idle for `limit`, having closed its connection.
    pub async fn close_when_idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                tracing::debug!(peer = %self.peer, ?idle, "disconnecting an idle peer");
                self.conn.close(4u32.into(), b"idle");
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }

    /// Counts one bad frame (or bad block, or bad request); true once the peer is cut off.
    pub fn strike(&self, stats: &NetStats) -> bool {
        stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        let bad = self.bad.fetch_add(1, Ordering::Relaxed) + 1;
        if bad >= MAX_BAD_FRAMES {
            tracing::info!(peer = %self.peer, bad, "disconnecting a misbehaving peer");
            self.conn.close(2u32.into(), b"bad frames");
            return true;
        }
        false
    }
}

/// A running node network.
pub struct Network {
    endpoint: quinn::Endpoint,
    rt: tokio::runtime::Handle,
    identity: Identity,
    queue_depth: usize,
    peers: Vec<PeerLink>,
    stats: Arc<NetStats>,
}

/// Bytes queued for one peer (not yet handed to its connection) beyond which nothing more is
/// queued: the largest frame (a proposal of a full block with its justification, 128 MiB)
/// fits with almost as much again.
pub const PEER_QUEUE_BYTES: usize = 256 << 20;
/// Bytes queued for one peer beyond which transaction gossip is dropped (consensus frames still
/// go): about a third of a second of gossip at 50 MB/s. A deeper gossip backlog only delays
/// the proposals queued behind it, and holds transactions a peer may need to fill a compact
/// proposal ([`crate::pipeline::compact`]) until seconds after it arrives.
pub const GOSSIP_QUEUE_BYTES: usize = 16 << 20;

/// A dialled CN: its bounded send queue (by frames and by bytes), and whether a connection to
/// it is up now.
struct PeerLink {
    cn: CnIndex,
    queue: mpsc::Sender<Arc<Vec<u8>>>,
    /// Bytes of the frames in `queue`.
    queued: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
}

impl PeerLink {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts `len` more queued bytes if they fit under `budget` (atomically: senders on other
    /// threads cannot overshoot it together).
    fn reserve(&self, len: usize, budget: usize) -> bool {
        self.queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                q.checked_add(len).filter(|total| *total <= budget)
            })
            .is_ok()
    }
}

/// Marks a dialled peer's link up while a connection to it lives.
struct LinkUp(Arc<AtomicBool>);

impl LinkUp {
    fn new(up: &Arc<AtomicBool>) -> Self {
        up.store(true, Ordering::Relaxed);
        Self(Arc::clone(up))
    }
}

impl Drop for LinkUp {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Who we are, for the handshake, and what we offer ranger nodes.
#[derive(Clone)]
struct Identity {
    me: CnIndex,
    key: SecretKey,
    /// Every CN set this node has known (genesis and each committed change).
    sets: Arc<std::sync::RwLock<Vec<Arc<CnSet>>>>,
    /// Where RN block requests are answered from (set once storage is open).
    blocks: sync::ServerSlot,
    /// Slots of connected ranger nodes.
    rns: Arc<admission::Admission>,
    /// The bounded pool inbound hellos are checked on.
    hello_checks: Arc<hello_checks::HelloChecks>,
    /// Wakes the dialler of each configured peer out of its reconnect backoff.
    redial: Arc<std::sync::RwLock<Vec<Redial>>>,
}

/// A configured peer's number, and the signal that cuts its dialler's backoff short.
type Redial = (CnIndex, Arc<tokio::sync::Notify>);

impl Identity {
    fn known_sets(&self) -> Vec<Arc<CnSet>> {
        self.sets.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A peer that just connected to us is up again (it restarted, or the network healed):
    /// our dialler to it retries now instead of at the end of its backoff (up to 5 s), so what
    /// we send it — an answer to its first sync request, a vote — is not held that long.
    fn redial(&self, cn: CnIndex) {
        let redial = self.redial.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kick)) = redial.iter().find(|(peer, _)| *peer == cn) {
            kick.notify_one();
        }
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

    /// Answers ranger nodes' block requests from `server` from now on.
    pub fn serve_blocks(&self, server: Arc<sync::BlockServer>) {
        if self.identity.blocks.set(server).is_err() {
            tracing::warn!("block server already set; keeping the first");
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
        let endpoint = tls::endpoint(config.listen, &key)?;
        let stats = Arc::new(NetStats::default());
        let identity = Identity {
            me,
            key,
            sets: Arc::new(std::sync::RwLock::new(vec![set])),
            blocks: Arc::default(),
            rns: admission::Admission::new(config.rn_limits()),
            hello_checks: Arc::new(hello_checks::HelloChecks::new(config.max_hello_checks)),
            redial: Arc::default(),
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
            rt: rt.clone(),
            identity,
            queue_depth,
            peers: Vec::new(),
            stats,
        })
    }

    /// Starts one dialler (with its bounded queue and reconnect backoff) per peer.
    pub fn connect(&mut self, rt: &tokio::runtime::Handle, peers: &[(CnIndex, SocketAddr)]) {
        for &(cn, addr) in peers {
            let (queue, rx) = mpsc::channel(self.queue_depth);
            let queued = Arc::new(AtomicUsize::new(0));
            let up = Arc::new(AtomicBool::new(false));
            let kick = Arc::new(tokio::sync::Notify::new());
            self.identity
                .redial
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((cn, Arc::clone(&kick)));
            let dialler = Dialler {
                endpoint: self.endpoint.clone(),
                identity: self.identity.clone(),
                addr,
                stats: Arc::clone(&self.stats),
                up: Arc::clone(&up),
                queued: Arc::clone(&queued),
                kick,
            };
            rt.spawn(dialler.run(rx));
            self.peers.push(PeerLink {
                cn,
                queue,
                queued,
                up,
            });
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
        for peer in &self.peers {
            self.enqueue(peer, Arc::clone(&frame));
        }
    }

    /// Queues transaction gossip for every peer whose queue holds less than
    /// [`GOSSIP_QUEUE_BYTES`] and has a quarter of its frames free (many small gossip frames
    /// must not fill it either, or consensus frames would be dropped); dropped (and counted)
    /// for the others. Never blocks.
    pub fn broadcast_gossip(&self, frame: Arc<Vec<u8>>) {
        for peer in &self.peers {
            let frames_free = peer.queue.capacity() > self.queue_depth / 4;
            if frames_free && peer.reserve(frame.len(), GOSSIP_QUEUE_BYTES) {
                self.queue_reserved(peer, Arc::clone(&frame));
            } else {
                self.stats.dropped_gossip.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Bytes of gossip every peer whose link is up would take now: a node that admits no more
    /// transactions than this never has to drop their gossip (backpressure).
    pub fn gossip_room(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.is_up())
            .map(|p| GOSSIP_QUEUE_BYTES.saturating_sub(p.queued.load(Ordering::Relaxed)))
            .min()
            .unwrap_or(GOSSIP_QUEUE_BYTES)
    }

    /// Queues `frame` for one peer; never blocks.
    pub fn send(&self, to: CnIndex, frame: Arc<Vec<u8>>) {
        if let Some(peer) = self.peers.iter().find(|p| p.cn == to) {
            self.enqueue(peer, frame);
        }
    }

    /// Sends `frame` to the CN holding `key`, whatever number later CN sets give it (dialled
    /// peers keep the numbering of the set this node was configured with: a CN-set change that
    /// renumbers the members must not send a vote to another node). With no dialled peer
    /// holding `key` — a CN that joined later — it goes to every peer instead, which costs
    /// messages, never delivery.
    pub fn send_to_key(&self, key: &crate::crypto::bls::PublicKey, frame: Arc<Vec<u8>>) {
        let configured = self.configured_index(key);
        match configured.and_then(|cn| self.peers.iter().find(|p| p.cn == cn)) {
            Some(peer) => self.enqueue(peer, frame),
            None => self.broadcast(frame),
        }
    }

    /// The number `key` has among this node's peers: its place in the set this node was
    /// configured with (what [`Network::send`] and inbound frames' senders use).
    pub fn configured_index(&self, key: &crate::crypto::bls::PublicKey) -> Option<CnIndex> {
        self.identity
            .sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .and_then(|set| set.keys().iter().position(|k| k == key))
            .map(|i| CnIndex(i as u32))
    }

    /// Queues `frame` for the peer whose turn it is, so callers rotate requests among them:
    /// `turn` counts over the peers whose link is up now (a peer that is down would cost the
    /// caller a retry), over every configured peer when none is; never blocks.
    pub fn send_in_turn(&self, turn: usize, frame: Arc<Vec<u8>>) {
        // The flags are read once: a link going down meanwhile must not lose the frame.
        let up: Vec<&PeerLink> = self.peers.iter().filter(|p| p.is_up()).collect();
        let candidates: Vec<&PeerLink> = match up.is_empty() {
            true => self.peers.iter().collect(),
            false => up,
        };
        if let Some(peer) = turn
            .checked_rem(candidates.len())
            .and_then(|i| candidates.get(i))
        {
            self.enqueue(peer, frame);
        }
    }

    /// Queues `frame` for `peer` unless its queue is full by frames or by
    /// [`PEER_QUEUE_BYTES`]; never blocks.
    fn enqueue(&self, peer: &PeerLink, frame: Arc<Vec<u8>>) {
        // Counted before the frame is queued, so the writer never subtracts bytes not added.
        if peer.reserve(frame.len(), PEER_QUEUE_BYTES) {
            self.queue_reserved(peer, frame);
        } else {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues `frame`, whose bytes `peer.queued` already counts (given back if the queue is
    /// full by frames).
    fn queue_reserved(&self, peer: &PeerLink, frame: Arc<Vec<u8>>) {
        let len = frame.len();
        if peer.queue.try_send(frame).is_err() {
            peer.queued.fetch_sub(len, Ordering::Relaxed);
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every connection (see [`tls::close`]).
    pub fn close(&self) {
        tls::close(&self.endpoint, &self.rt);
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
    stats: &Arc<NetStats>,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let mut stream = tokio::time::timeout(config.handshake_timeout, conn.accept_uni()).await??;
    let hello = handshake::accept_peer(
        &conn,
        &mut stream,
        identity.known_sets(),
        &identity.hello_checks,
    );
    let peer = match tokio::time::timeout(config.handshake_timeout, hello).await? {
        Ok(peer) => peer,
        Err(e) => {
            refuse_handshake(&conn, &e, stats);
            return Err(e);
        }
    };
    let cn = match peer {
        Peer::Cn(cn) => cn,
        Peer::Rn(_) => return serve_rn(conn, stream, peer, identity, config, inbound, stats).await,
    };
    identity.redial(cn);
    let mut bad = 0u32;
    loop {
        let frame = match read_frame(&mut stream, &config, stats).await? {
            Some(frame) => frame,
            None => return Ok(()),
        };
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        match decode_inbound(&frame) {
            Ok(msg) => {
                if inbound.try_send((cn, msg)).is_err() {
                    stats.dropped_inbound_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                bad += 1;
                tracing::debug!(peer = %cn, error = %e, "bad frame");
                if bad >= MAX_BAD_FRAMES {
                    conn.close(2u32.into(), b"bad frames");
                    anyhow::bail!("peer {cn} sent {bad} bad frames");
                }
            }
        }
    }
}

/// Closes a connection whose hello was not admitted: code 5 when the check pool was busy (try
/// again later), 1 when the hello was bad.
pub(crate) fn refuse_handshake(conn: &quinn::Connection, error: &anyhow::Error, stats: &NetStats) {
    stats.rejected_handshakes.fetch_add(1, Ordering::Relaxed);
    if error.downcast_ref::<hello_checks::Busy>().is_some() {
        conn.close(5u32.into(), b"busy");
    } else {
        conn.close(1u32.into(), b"handshake");
    }
}

/// An admitted RN's slot; the RN gauge follows it, however the connection ends.
struct RnSlot {
    _slot: admission::Slot,
    stats: Arc<NetStats>,
}

impl RnSlot {
    fn new(slot: admission::Slot, stats: &Arc<NetStats>) -> Self {
        stats.rn_peers.fetch_add(1, Ordering::Relaxed);
        Self {
            _slot: slot,
            stats: Arc::clone(stats),
        }
    }
}

impl Drop for RnSlot {
    fn drop(&mut self) {
        self.stats.rn_peers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A ranger node on a CN: admitted within the per-key and per-address bounds, answered with
/// this CN's hello, its block requests served, its transaction batches taken to ingress (under
/// [`crate::consensus::machine::NOT_A_MEMBER`]); any other frame is a strike, and a silent RN
/// is cut off after `rn_idle_timeout`.
async fn serve_rn(
    conn: quinn::Connection,
    stream: quinn::RecvStream,
    peer: Peer,
    identity: Identity,
    config: Arc<NetConfig>,
    inbound: LinkSender<(CnIndex, Inbound)>,
    stats: &Arc<NetStats>,
) -> anyhow::Result<()> {
    let Peer::Rn(key) = peer else {
        anyhow::bail!("{peer} is not a ranger node");
    };
    let _slot = match identity.rns.admit(key, conn.remote_address().ip()) {
        Ok(slot) => RnSlot::new(slot, stats),
        Err(refusal) => {
            stats.rejected_handshakes.fetch_add(1, Ordering::Relaxed);
            conn.close(3u32.into(), b"too many ranger nodes");
            anyhow::bail!("{peer} refused: {refusal}");
        }
    };
    let mut reply = conn.open_uni().await?;
    let credential = Credential::Cn(identity.me, &identity.key);
    tokio::time::timeout(
        config.handshake_timeout,
        handshake::say_hello(&conn, &mut reply, credential, Side::Listener),
    )
    .await??;
    let score = PeerScore::new(peer, conn.clone());
    let serve = sync::serve_requests(
        conn.clone(),
        Arc::clone(&identity.blocks),
        config.frame_timeout,
        Arc::clone(&score),
        Arc::clone(stats),
    );
    let read = read_rn_frames(stream, &score, &config, &inbound, stats);
    let result = tokio::select! {
        result = read => result,
        _ = serve => Ok(()),
        _ = score.close_when_idle(config.rn_idle_timeout) => Ok(()),
    };
    if result.is_err() {
        conn.close(2u32.into(), b"bad frames");
    }
    result
}

/// Reads an RN's transaction batches into ingress until the stream ends; an empty batch is a
/// heartbeat.
async fn read_rn_frames(
    mut stream: quinn::RecvStream,
    score: &PeerScore,
    config: &NetConfig,
    inbound: &LinkSender<(CnIndex, Inbound)>,
    stats: &NetStats,
) -> anyhow::Result<()> {
    let peer = score.peer;
    while let Some(frame) =
        read_next_frame(&mut stream, RN_FRAME_LIMIT, config.frame_timeout, stats).await?
    {
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        match decode_frame::<TxBatch>(&frame) {
            Ok(batch) => {
                score.touch();
                if batch.txs.is_empty() {
                    continue;
                }
                let from = crate::consensus::machine::NOT_A_MEMBER;
                if inbound.try_send((from, Inbound::Txs(batch))).is_err() {
                    stats.dropped_inbound_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "bad frame from a ranger node");
                if score.strike(stats) {
                    anyhow::bail!("{peer} sent {MAX_BAD_FRAMES} bad frames");
                }
            }
        }
    }
    Ok(())
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
    read_next_frame(stream, config.max_frame_bytes, config.frame_timeout, stats).await
}

/// [`read_frame`] with explicit limits: waiting for the next frame has no deadline
/// (keep-alives detect dead peers); once a frame has started, it must finish in time.
pub(crate) async fn read_next_frame(
    stream: &mut quinn::RecvStream,
    max_frame_bytes: usize,
    frame_timeout: Duration,
    stats: &NetStats,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    read_body(stream, len, max_frame_bytes, frame_timeout, stats)
        .await
        .map(Some)
}

/// Reads one length-prefixed frame that must arrive whole within `timeout`.
pub(crate) async fn read_frame_within(
    stream: &mut quinn::RecvStream,
    max_frame_bytes: usize,
    timeout: Duration,
    stats: &NetStats,
) -> anyhow::Result<Vec<u8>> {
    let started = tokio::time::Instant::now();
    let mut len = [0u8; 4];
    tokio::time::timeout(timeout, stream.read_exact(&mut len))
        .await
        .map_err(|_| anyhow::anyhow!("no frame within {timeout:?}"))??;
    let left = timeout.saturating_sub(started.elapsed());
    read_body(stream, len, max_frame_bytes, left, stats).await
}

async fn read_body(
    stream: &mut quinn::RecvStream,
    len: [u8; 4],
    max_frame_bytes: usize,
    frame_timeout: Duration,
    stats: &NetStats,
) -> anyhow::Result<Vec<u8>> {
    let len = u32::from_le_bytes(len) as usize;
    if len > max_frame_bytes {
        stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        anyhow::bail!("frame of {len} bytes over the {max_frame_bytes} limit");
    }
    let mut frame = vec![0u8; len];
    match tokio::time::timeout(frame_timeout, stream.read_exact(&mut frame)).await {
        Ok(read) => read?,
        Err(elapsed) => {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            return Err(elapsed.into());
        }
    }
    Ok(frame)
}

/// Writes one length-prefixed frame.
pub(crate) async fn write_frame(
    stream: &mut quinn::SendStream,
    frame: &[u8],
) -> anyhow::Result<()> {
    let len = u32::try_from(frame.len())
        .map_err(|_| anyhow::anyhow!("frame of {} bytes is too large to send", frame.len()))?;
    stream.write_all(&len.to_le_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

/// A frame sent when a link has had nothing to send for `every` (so the receiver's idle
/// deadline sees a live peer).
pub(crate) struct Heartbeat {
    pub every: Duration,
    pub frame: Arc<Vec<u8>>,
}

/// Sends queued frames on `stream` until the queue closes or the connection ends; `true` when
/// the queue closed (the node is shutting down). With a `heartbeat`, its frame fills silences.
pub(crate) async fn pump(
    conn: &quinn::Connection,
    stream: &mut quinn::SendStream,
    queue: &mut mpsc::Receiver<Arc<Vec<u8>>>,
    stats: &NetStats,
    heartbeat: Option<&Heartbeat>,
    queued: Option<&AtomicUsize>,
) -> bool {
    // Without a heartbeat the silence timer never fires.
    let every = heartbeat.map_or(Duration::MAX, |h| h.every);
    loop {
        let frame = tokio::select! {
            frame = queue.recv() => match frame {
                Some(frame) => {
                    if let Some(queued) = queued {
                        queued.fetch_sub(frame.len(), Ordering::Relaxed);
                    }
                    frame
                }
                None => return true,
            },
            _ = conn.closed() => return false,
            _ = sleep_for(every) => match heartbeat {
                Some(h) => Arc::clone(&h.frame),
                None => continue,
            },
        };
        if write_frame(stream, &frame).await.is_err() {
            return false;
        }
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sleeps `duration`, or forever when it is too long to represent as a deadline.
async fn sleep_for(duration: Duration) {
    match tokio::time::Instant::now().checked_add(duration) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The task that keeps one configured peer's outbound link up.
struct Dialler {
    endpoint: quinn::Endpoint,
    identity: Identity,
    addr: SocketAddr,
    stats: Arc<NetStats>,
    /// Set while a connection to the peer lives.
    up: Arc<AtomicBool>,
    /// Bytes of the frames in its queue.
    queued: Arc<AtomicUsize>,
    /// Cuts a reconnect backoff short (the peer connected to us).
    kick: Arc<tokio::sync::Notify>,
}

impl Dialler {
    /// Connects, pumps `queue` into the link, and reconnects with backoff until the queue
    /// closes.
    async fn run(self, mut queue: mpsc::Receiver<Arc<Vec<u8>>>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match connect(&self.endpoint, &self.identity, self.addr).await {
                Ok((conn, mut stream)) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    backoff = Duration::from_millis(50);
                    let _live = LiveLink::new(&self.stats.cn_peers);
                    let _up = LinkUp::new(&self.up);
                    let queued = Some(&*self.queued);
                    if pump(&conn, &mut stream, &mut queue, &self.stats, None, queued).await {
                        return;
                    }
                }
                Err(e) => tracing::trace!(addr = %self.addr, error = %e, "dial failed"),
            }
            if queue.is_closed() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.kick.notified() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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
