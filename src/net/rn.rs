//! The ranger node's network: links to CNs (block requests, forwarded transactions) and the
//! RN network (gossip of audited blocks and equivocation evidence, block requests between RNs).
//!
//! ```text
//!  RN ──dial──► CN      RN hello → CN hello back; uni stream RN→CN: TxBatch frames;
//!                       bi streams: block requests (the CN serves them from its block log)
//!  RN ◄──dial──► RN     RN hellos both ways; one uni stream each way: Block / Evidence gossip;
//!                       bi streams both ways: block requests
//! ```
//!
//! Anyone may join the RN network by dialling any RN: an RN admits any peer that proves a node
//! key, because everything gossiped is checked by the receiver (blocks are audited, evidence
//! verified) before it is kept or relayed. Admitted peers are bounded in total (`max_peers`),
//! per key and per IP address ([`super::admission`]); the peers the operator configured are
//! outside those bounds (the ones this node dials, and those that dial it from a configured
//! address), so strangers filling every slot cannot eclipse the node. Gossip goes to at most `fanout`
//! peers chosen at random, never back to where it came from; the receiver deduplicates.
//! Per peer: a bounded outbound queue (full → dropped and counted), frames with a size limit
//! and a deadline, and a strike per bad frame, bad request or bad block reported by the node
//! ([`RnNetwork::penalize`]) — eight strikes close the connection.
//!
//! A CN that dials with its CN hello is a PoSC prober ([`super::probe`]): its hello must
//! verify under its key in the CN set the node knows ([`RnNetwork::allow_probers`]) — else
//! anyone could hold the probe slots and make the RN fail honest CNs' probes. It gets the RN's
//! hello back and its block requests answered, nothing else (no gossip), for at most
//! [`PROBE_CONNECTION_LIFETIME`], at most [`MAX_PROBES_PER_CN`] at once per CN.

use super::admission::{Admission, Limits, Refusal, Slot};
use super::handshake::{self, Credential, Hello, Peer, Side};
use super::hello_checks::HelloChecks;
use super::sync::{self, BlockServer, ServerSlot};
use super::{pump, read_next_frame, tls, Heartbeat, NetStats, PeerScore};
use crate::crypto::bls::{PublicKey, PublicKeyBytes, SecretKey};
use crate::link::LinkSender;
use crate::types::codec::{decode_frame, encode_frame, Kind, FRAME_OVERHEAD};
use crate::types::sync::{BlockRangeRequest, BlockRangeResponse};
use crate::types::{Block, CodecError, EquivocationEvidence, TxBatch, WireMessage};
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Probe connections one CN may hold open at once (its rounds overlap); more are refused.
pub const MAX_PROBES_PER_CN: usize = 4;
/// Longest a probe connection is kept open.
pub const PROBE_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// RN peers admitted besides the configured ones.
pub const DEFAULT_MAX_RN_NETWORK_PEERS: usize = 64;
/// How often an RN with nothing to forward tells a CN it is alive (an empty `TxBatch`); a
/// quarter of the CN's default idle deadline ([`super::DEFAULT_RN_IDLE_TIMEOUT`]).
pub const DEFAULT_CN_HEARTBEAT: Duration = Duration::from_secs(15);

/// Settings of an RN's network.
#[derive(Debug, Clone)]
pub struct RnNetConfig {
    pub listen: SocketAddr,
    /// Largest gossip frame accepted (a whole block).
    pub max_frame_bytes: usize,
    /// Frames queued per peer before new ones are dropped.
    pub queue_depth: usize,
    pub handshake_timeout: Duration,
    pub frame_timeout: Duration,
    /// Deadline of one block request, beyond the time it lets the server wait.
    pub request_timeout: Duration,
    /// RN peers admitted at once, besides the configured ones (which always get in).
    pub max_peers: usize,
    /// Admitted RN connections one node key may hold.
    pub max_per_key: usize,
    /// Admitted RN connections one IP address may hold.
    pub max_per_address: usize,
    /// RN peers each gossiped item is sent to.
    pub fanout: usize,
    /// Silence after which an empty frame is sent to each CN (see [`DEFAULT_CN_HEARTBEAT`]).
    pub cn_heartbeat: Duration,
    /// Hellos of unauthenticated peers checked at once; more are refused.
    pub max_hello_checks: usize,
}

impl RnNetConfig {
    /// Defaults for an RN listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_frame_bytes: Block::MAX_PAYLOAD + FRAME_OVERHEAD,
            queue_depth: 256,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_peers: DEFAULT_MAX_RN_NETWORK_PEERS,
            max_per_key: super::admission::DEFAULT_MAX_PER_KEY,
            max_per_address: super::admission::DEFAULT_MAX_PER_ADDRESS,
            fanout: 8,
            cn_heartbeat: DEFAULT_CN_HEARTBEAT,
            max_hello_checks: super::hello_checks::DEFAULT_MAX_HELLO_CHECKS,
        }
    }
}

/// What RNs gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    Block(Box<Block>),
    Evidence(Box<EquivocationEvidence>),
}

/// Decodes a gossip frame by the kind it names; any other kind is an error.
pub fn decode_gossip(frame: &[u8]) -> Result<Gossip, CodecError> {
    match Kind::of_frame(frame) {
        Some(Kind::Evidence) => decode_frame(frame).map(|e| Gossip::Evidence(Box::new(e))),
        _ => decode_frame(frame).map(|b| Gossip::Block(Box::new(b))),
    }
}

/// A connection's number, for as long as it lives.
pub type PeerId = u64;

/// A connected peer that can answer block requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub id: PeerId,
    pub peer: Peer,
}

struct Entry {
    conn: quinn::Connection,
    score: Arc<PeerScore>,
    /// Gossip queue (RN peers only).
    gossip: Option<mpsc::Sender<Arc<Vec<u8>>>>,
    /// The admission slot of a stranger (`None` for CNs and configured peers); freed with the
    /// entry.
    _slot: Option<Slot>,
}

/// Frames every new RN peer is sent first (what the node wants each peer to have, such as the
/// evidence it holds).
pub type Welcome = Box<dyn Fn() -> Vec<Arc<Vec<u8>>> + Send + Sync>;

struct Shared {
    key: SecretKey,
    me: PublicKeyBytes,
    config: RnNetConfig,
    stats: Arc<NetStats>,
    peers: Mutex<BTreeMap<PeerId, Entry>>,
    next_id: AtomicU64,
    blocks: ServerSlot,
    inbound: LinkSender<(PeerId, Gossip)>,
    closed: AtomicBool,
    welcome: std::sync::OnceLock<Welcome>,
    /// Keys of the CNs allowed to probe, by CN index.
    probers: std::sync::RwLock<Vec<PublicKey>>,
    /// Probe connections open now, by CN index.
    probes: Mutex<BTreeMap<u32, usize>>,
    /// Slots of RN peers that are not configured.
    strangers: Arc<Admission>,
    /// Addresses of the configured RN peers.
    configured: Mutex<HashSet<SocketAddr>>,
    /// The bounded pool inbound hellos are checked on.
    hello_checks: HelloChecks,
}

impl Shared {
    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, Entry>> {
        // Single map operations under the lock: a poisoned map is still consistent.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an accepted connection comes from a configured peer's address.
    fn is_configured(&self, addr: SocketAddr) -> bool {
        self.configured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&addr)
    }

    /// Adds a connection (holding `slot`, if a stranger's).
    fn register(
        &self,
        peer: Peer,
        conn: &quinn::Connection,
        gossip: Option<mpsc::Sender<Arc<Vec<u8>>>>,
        slot: Option<Slot>,
    ) -> (PeerId, Arc<PeerScore>) {
        let mut peers = self.peers();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let score = PeerScore::new(peer, conn.clone());
        peers.insert(
            id,
            Entry {
                conn: conn.clone(),
                score: Arc::clone(&score),
                gossip,
                _slot: slot,
            },
        );
        self.count_rns(&peers);
        (id, score)
    }

    fn unregister(&self, id: PeerId) {
        let mut peers = self.peers();
        peers.remove(&id);
        self.count_rns(&peers);
    }

    fn count_rns(&self, peers: &BTreeMap<PeerId, Entry>) {
        let rns = peers.values().filter(|e| e.gossip.is_some()).count();
        self.stats.rn_peers.store(rns as u64, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// A ranger node's endpoint.
pub struct RnNetwork {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    /// Transaction queues of the CN links (kept across reconnects).
    cn_queues: Mutex<Vec<mpsc::Sender<Arc<Vec<u8>>>>>,
    rt: tokio::runtime::Handle,
}

impl RnNetwork {
    /// Binds the listener on `rt` and starts admitting RN peers; their gossip goes to
    /// `inbound` (dropped and counted when full).
    pub fn bind(
        rt: &tokio::runtime::Handle,
        config: RnNetConfig,
        key: SecretKey,
        inbound: LinkSender<(PeerId, Gossip)>,
    ) -> anyhow::Result<Self> {
        let _guard = rt.enter();
        let endpoint = tls::endpoint(config.listen, &key)?;
        let shared = Arc::new(Shared {
            me: key.public_key().to_bytes(),
            key,
            stats: Arc::default(),
            peers: Mutex::default(),
            next_id: AtomicU64::new(1),
            blocks: Arc::default(),
            inbound,
            closed: AtomicBool::new(false),
            welcome: std::sync::OnceLock::new(),
            probers: std::sync::RwLock::default(),
            probes: Mutex::default(),
            strangers: Admission::new(Limits {
                total: config.max_peers,
                per_key: config.max_per_key,
                per_address: config.max_per_address,
            }),
            configured: Mutex::default(),
            hello_checks: HelloChecks::new(config.max_hello_checks),
            config,
        });
        rt.spawn(accept_loop(endpoint.clone(), Arc::clone(&shared)));
        Ok(Self {
            endpoint,
            shared,
            cn_queues: Mutex::default(),
            rt: rt.clone(),
        })
    }

    /// Answers peers' block requests from `server` from now on.
    pub fn serve_blocks(&self, server: Arc<BlockServer>) {
        if self.shared.blocks.set(server).is_err() {
            tracing::warn!("block server already set; keeping the first");
        }
    }

    /// The CN set whose members may probe this RN (PoSC), keys by CN index; call again when
    /// the set changes.
    pub fn allow_probers(&self, keys: Vec<PublicKey>) {
        *self
            .shared
            .probers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// Sets what every RN peer is sent as soon as it connects (bounded by its queue).
    pub fn welcome_with(&self, welcome: Welcome) {
        if self.shared.welcome.set(welcome).is_err() {
            tracing::warn!("welcome already set; keeping the first");
        }
    }

    /// Keeps a link to the CN at `addr` whose key is `key` (reconnecting with backoff).
    pub fn connect_cn(&self, addr: SocketAddr, key: PublicKey) {
        let (tx, rx) = mpsc::channel(self.shared.config.queue_depth);
        self.cn_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        self.rt.spawn(cn_link(
            self.endpoint.clone(),
            Arc::clone(&self.shared),
            addr,
            key,
            rx,
        ));
    }

    /// Keeps a link to the RN at `addr` (reconnecting with backoff); a configured peer, outside
    /// the bounds on strangers in both directions.
    pub fn connect_rn(&self, addr: SocketAddr) {
        self.shared
            .configured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr);
        self.rt.spawn(rn_link(
            self.endpoint.clone(),
            Arc::clone(&self.shared),
            addr,
        ));
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This node's public key (its identity on the RN network).
    pub fn public_key(&self) -> PublicKeyBytes {
        self.shared.me
    }

    pub fn stats(&self) -> &Arc<NetStats> {
        &self.shared.stats
    }

    /// Connected peers that answer block requests: CNs first, then RNs.
    pub fn sources(&self) -> Vec<Source> {
        let mut sources: Vec<Source> = self
            .shared
            .peers()
            .iter()
            .map(|(id, e)| Source {
                id: *id,
                peer: e.score.peer,
            })
            .collect();
        sources.sort_by_key(|s| matches!(s.peer, Peer::Rn(_)));
        sources
    }

    /// Connected peers (CNs and RNs).
    pub fn peer_count(&self) -> usize {
        self.shared.peers().len()
    }

    /// Asks peer `id` for a block range (see [`sync::request_blocks`]).
    pub async fn request_blocks(
        &self,
        id: PeerId,
        request: &BlockRangeRequest,
    ) -> anyhow::Result<BlockRangeResponse> {
        let conn = self
            .shared
            .peers()
            .get(&id)
            .map(|e| e.conn.clone())
            .ok_or_else(|| anyhow::anyhow!("peer {id} is gone"))?;
        let timeout = self.shared.config.request_timeout;
        sync::request_blocks(&conn, request, timeout, &self.shared.stats).await
    }

    /// Queues raw transactions for every CN link; the number of CNs they were queued for.
    /// A batch over the frame limit a CN accepts is refused whole.
    pub fn forward(&self, batch: &TxBatch) -> anyhow::Result<usize> {
        let frame = Arc::new(encode_frame(batch));
        anyhow::ensure!(
            frame.len() <= TxBatch::MAX_PAYLOAD + FRAME_OVERHEAD,
            "a batch of {} bytes is over the {}-byte limit; send fewer transactions at once",
            frame.len(),
            TxBatch::MAX_PAYLOAD
        );
        let queues = self.cn_queues.lock().unwrap_or_else(|e| e.into_inner());
        Ok(queues
            .iter()
            .filter(|q| self.enqueue(q, Arc::clone(&frame)))
            .count())
    }

    /// Sends a gossip frame to at most `fanout` random RN peers other than `except`; the
    /// number it was queued for.
    pub fn gossip(&self, frame: Arc<Vec<u8>>, except: Option<PeerId>) -> usize {
        let mut targets: Vec<mpsc::Sender<Arc<Vec<u8>>>> = self
            .shared
            .peers()
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter_map(|(_, e)| e.gossip.clone())
            .collect();
        targets.shuffle(&mut rand::thread_rng());
        targets.truncate(self.shared.config.fanout);
        targets
            .iter()
            .filter(|q| self.enqueue(q, Arc::clone(&frame)))
            .count()
    }

    fn enqueue(&self, queue: &mpsc::Sender<Arc<Vec<u8>>>, frame: Arc<Vec<u8>>) -> bool {
        let sent = queue.try_send(frame).is_ok();
        if !sent {
            self.shared
                .stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Counts a strike against peer `id` (it sent a block or evidence that failed checks).
    pub fn penalize(&self, id: PeerId) {
        let score = self.shared.peers().get(&id).map(|e| Arc::clone(&e.score));
        if let Some(score) = score {
            score.strike(&self.shared.stats);
        }
    }

    /// Closes every connection and stops reconnecting.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.cn_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tls::close(&self.endpoint, &self.rt);
    }
}

/// Dials `addr` and exchanges hellos: ours as an RN dialler, theirs as the listener.
async fn dial(
    endpoint: &quinn::Endpoint,
    shared: &Shared,
    addr: SocketAddr,
) -> anyhow::Result<(
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Hello,
)> {
    let limit = shared.config.handshake_timeout;
    let conn = tokio::time::timeout(limit, endpoint.connect(addr, tls::SERVER_NAME)?).await??;
    let mut send = conn.open_uni().await?;
    let credential = Credential::Rn(&shared.key);
    handshake::say_hello(&conn, &mut send, credential, Side::Dialler).await?;
    let mut recv = tokio::time::timeout(limit, conn.accept_uni()).await??;
    let hello = tokio::time::timeout(
        limit,
        handshake::read_hello(&conn, &mut recv, Side::Listener),
    )
    .await??;
    Ok((conn, send, recv, hello))
}

/// Exponential backoff between reconnects, capped.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

async fn cn_link(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    addr: SocketAddr,
    key: PublicKey,
    mut queue: mpsc::Receiver<Arc<Vec<u8>>>,
) {
    let mut backoff = Backoff(Backoff::FIRST);
    while !shared.is_closed() {
        match dial(&endpoint, &shared, addr).await {
            Ok((conn, mut send, _recv, hello)) if hello.verify_cn(&key) => {
                backoff = Backoff(Backoff::FIRST);
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                let (id, _) = shared.register(hello.peer, &conn, None, None);
                tracing::debug!(%addr, peer = %hello.peer, "connected to CN");
                let heartbeat = Heartbeat {
                    every: shared.config.cn_heartbeat,
                    frame: Arc::new(encode_frame(&TxBatch { txs: Vec::new() })),
                };
                let done = pump(
                    &conn,
                    &mut send,
                    &mut queue,
                    &shared.stats,
                    Some(&heartbeat),
                    None,
                )
                .await;
                shared.unregister(id);
                if done {
                    return;
                }
            }
            Ok((conn, ..)) => {
                shared
                    .stats
                    .rejected_handshakes
                    .fetch_add(1, Ordering::Relaxed);
                conn.close(1u32.into(), b"handshake");
                tracing::warn!(%addr, "the node at this address is not the configured CN");
            }
            Err(e) => tracing::trace!(%addr, error = %e, "dial failed"),
        }
        if queue.is_closed() {
            return;
        }
        backoff.wait().await;
    }
}

async fn rn_link(endpoint: quinn::Endpoint, shared: Arc<Shared>, addr: SocketAddr) {
    let mut backoff = Backoff(Backoff::FIRST);
    while !shared.is_closed() {
        match dial(&endpoint, &shared, addr).await {
            Ok((conn, _, _, hello)) if hello.peer == Peer::Rn(shared.me) => {
                conn.close(0u32.into(), b"self");
                tracing::warn!(%addr, "this address is the node itself; not dialling it");
                return;
            }
            Ok((conn, send, recv, hello)) if hello.verify_rn() => {
                backoff = Backoff(Backoff::FIRST);
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                run_rn_peer(&shared, conn, send, recv, hello.peer, Origin::Configured).await;
            }
            Ok((conn, ..)) => {
                shared
                    .stats
                    .rejected_handshakes
                    .fetch_add(1, Ordering::Relaxed);
                conn.close(1u32.into(), b"handshake");
            }
            Err(e) => tracing::trace!(%addr, error = %e, "dial failed"),
        }
        backoff.wait().await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = accept_one(incoming, &shared).await {
                tracing::debug!(error = %e, "inbound RN connection ended");
            }
        });
    }
}

async fn accept_one(incoming: quinn::Incoming, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let limit = shared.config.handshake_timeout;
    let hello = async {
        let mut recv = tokio::time::timeout(limit, conn.accept_uni()).await??;
        let hello = tokio::time::timeout(
            limit,
            handshake::read_hello(&conn, &mut recv, Side::Dialler),
        )
        .await??;
        let prober = match hello.peer {
            Peer::Cn(cn) => Some(
                shared
                    .probers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(cn.0 as usize)
                    .cloned(),
            ),
            Peer::Rn(_) => None,
        };
        let me = shared.me;
        let (hello, admitted) = shared
            .hello_checks
            .run(move || {
                let admitted = match (hello.peer, prober) {
                    (Peer::Cn(_), Some(key)) => key.is_some_and(|key| hello.verify_cn(&key)),
                    (Peer::Rn(_), _) => hello.verify_rn() && hello.peer != Peer::Rn(me),
                    (Peer::Cn(_), None) => false,
                };
                (hello, admitted)
            })
            .await?;
        anyhow::ensure!(admitted, "{} is not an authenticated RN or CN", hello.peer);
        Ok((recv, hello))
    };
    let (recv, hello) = match hello.await {
        Ok(ok) => ok,
        Err(e) => {
            super::refuse_handshake(&conn, &e, &shared.stats);
            return Err(e);
        }
    };
    let mut send = conn.open_uni().await?;
    let credential = Credential::Rn(&shared.key);
    tokio::time::timeout(
        limit,
        handshake::say_hello(&conn, &mut send, credential, Side::Listener),
    )
    .await??;
    if let Peer::Cn(cn) = hello.peer {
        answer_probe(shared, conn, cn.0, hello.peer).await;
    } else {
        let origin = if shared.is_configured(conn.remote_address()) {
            Origin::Configured
        } else {
            Origin::Stranger
        };
        run_rn_peer(shared, conn, send, recv, hello.peer, origin).await;
    }
    Ok(())
}

/// Serves a PoSC prober's block requests until it hangs up or its time is up.
async fn answer_probe(shared: &Arc<Shared>, conn: quinn::Connection, cn: u32, peer: Peer) {
    let admitted = {
        let mut probes = shared.probes.lock().unwrap_or_else(|e| e.into_inner());
        let open = probes.entry(cn).or_default();
        *open += 1;
        *open <= MAX_PROBES_PER_CN
    };
    if admitted {
        let serve = sync::serve_requests(
            conn.clone(),
            Arc::clone(&shared.blocks),
            shared.config.frame_timeout,
            PeerScore::new(peer, conn.clone()),
            Arc::clone(&shared.stats),
        );
        let _ = tokio::time::timeout(PROBE_CONNECTION_LIFETIME, serve).await;
    }
    let mut probes = shared.probes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(open) = probes.get_mut(&cn) {
        *open -= 1;
        if *open == 0 {
            probes.remove(&cn);
        }
    }
    conn.close(0u32.into(), b"probe done");
}

/// Whether an RN peer is one the operator configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Dialled by this node, or dialling from a configured address: always admitted.
    Configured,
    /// Anyone else: admitted within the bounds on strangers.
    Stranger,
}

/// A stranger's slot (`Ok(None)` for a configured peer), or why it gets none.
fn admit(
    shared: &Shared,
    conn: &quinn::Connection,
    peer: Peer,
    origin: Origin,
) -> Result<Option<Slot>, Refusal> {
    match (origin, peer) {
        (Origin::Stranger, Peer::Rn(key)) => shared
            .strangers
            .admit(key, conn.remote_address().ip())
            .map(Some),
        _ => Ok(None),
    }
}

/// Runs one RN connection until it ends: gossip out, gossip in, block requests in.
async fn run_rn_peer(
    shared: &Arc<Shared>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: Peer,
    origin: Origin,
) {
    let slot = match admit(shared, &conn, peer, origin) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::debug!(%peer, %refusal, "RN peer refused");
            shared
                .stats
                .rejected_handshakes
                .fetch_add(1, Ordering::Relaxed);
            conn.close(3u32.into(), b"too many peers");
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel(shared.config.queue_depth);
    if let Some(welcome) = shared.welcome.get() {
        for frame in welcome() {
            if tx.try_send(frame).is_err() {
                break;
            }
        }
    }
    let (id, score) = shared.register(peer, &conn, Some(tx), slot);
    tracing::debug!(%peer, id, "RN peer connected");
    let serve = sync::serve_requests(
        conn.clone(),
        Arc::clone(&shared.blocks),
        shared.config.frame_timeout,
        Arc::clone(&score),
        Arc::clone(&shared.stats),
    );
    tokio::select! {
        _ = serve => {}
        _ = read_gossip(shared, id, &score, recv) => {}
        _ = pump(&conn, &mut send, &mut rx, &shared.stats, None, None) => {}
    }
    shared.unregister(id);
    conn.close(0u32.into(), b"done");
    tracing::debug!(%peer, id, "RN peer disconnected");
}

async fn read_gossip(shared: &Shared, id: PeerId, score: &PeerScore, mut recv: quinn::RecvStream) {
    let (max, timeout) = (shared.config.max_frame_bytes, shared.config.frame_timeout);
    while let Ok(Some(frame)) = read_next_frame(&mut recv, max, timeout, &shared.stats).await {
        shared.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        match decode_gossip(&frame) {
            Ok(gossip) => {
                if shared.inbound.try_send((id, gossip)).is_err() {
                    shared
                        .stats
                        .dropped_inbound_full
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(peer = %score.peer, error = %e, "bad gossip frame");
                if score.strike(&shared.stats) {
                    return;
                }
            }
        }
    }
}
