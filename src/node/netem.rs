//! A seeded UDP proxy in front of every node of a `kaon chaos` region: network faults without
//! root. QUIC runs over UDP, so each node's peers dial its *front* (a socket of this proxy)
//! instead of the node itself; the front forwards each datagram to the node from an upstream
//! socket of its own per sender, and the node's answers back the same way. On the way, every
//! datagram passes the rules of the moment: links cut one way or both ways (partitions,
//! isolation, "A hears B but not back"), random loss, duplication and delay.
//!
//! ```text
//!   node A ──► front(B) ──[rules A→B]──► upstream(A) ──► node B
//!   node A ◄── front(B) ◄─[rules B→A]─── upstream(A) ◄── node B
//! ```
//!
//! Nodes dial from the socket they listen on (one QUIC endpoint each), so a datagram's source
//! address names its node. Everything is bounded: senders per front, datagrams held for delay.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::UdpSocket;

/// A node of the region, by its place in the list given to [`Netem::start`].
pub type NodeId = usize;

/// Distinct senders one front forwards for (each costs an upstream socket and a task).
const MAX_SENDERS_PER_FRONT: usize = 64;
/// Datagrams held back for delay at once, over all fronts; more are dropped (as a congested
/// link would).
const MAX_DELAYED: usize = 16_384;
/// Largest datagram forwarded (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;

/// How every link behaves apart from cuts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkQuality {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Each datagram is held a delay drawn uniformly from this range, in milliseconds
    /// (`(0, 0)`: none). Different delays reorder datagrams.
    pub delay_ms: (u64, u64),
}

/// Datagrams seen by the proxy, by fate.
#[derive(Debug, Default)]
pub struct NetemStats {
    pub forwarded: AtomicU64,
    pub cut: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
}

/// The rules of the moment and the seeded draws made under them.
struct Rules {
    /// Datagrams from the first node to the second are dropped.
    cut: HashSet<(NodeId, NodeId)>,
    quality: LinkQuality,
    rng: StdRng,
}

/// What to do with one datagram.
struct Fate {
    copies: usize,
    delay: Duration,
}

struct Shared {
    rules: Mutex<Rules>,
    /// Node of each listening address (a datagram's source).
    nodes: HashMap<SocketAddr, NodeId>,
    delayed: AtomicUsize,
    stats: NetemStats,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fate of a datagram from `from` to `to` (either may be a sender the proxy does not
    /// know, which only quality rules touch).
    fn fate(&self, from: Option<NodeId>, to: Option<NodeId>) -> Fate {
        let mut rules = self.rules();
        if let (Some(from), Some(to)) = (from, to) {
            if rules.cut.contains(&(from, to)) {
                self.stats.cut.fetch_add(1, Ordering::Relaxed);
                return Fate {
                    copies: 0,
                    delay: Duration::ZERO,
                };
            }
        }
        let quality = rules.quality;
        if quality.loss > 0.0 && rules.rng.gen_bool(quality.loss.min(1.0)) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return Fate {
                copies: 0,
                delay: Duration::ZERO,
            };
        }
        let copies = if quality.duplicate > 0.0 && rules.rng.gen_bool(quality.duplicate.min(1.0)) {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let (lo, hi) = quality.delay_ms;
        let delay = if hi > 0 {
            Duration::from_millis(rules.rng.gen_range(lo.min(hi)..=hi))
        } else {
            Duration::ZERO
        };
        Fate { copies, delay }
    }
}

/// Where a datagram goes: to the node through the sender's upstream socket, or back to the
/// sender through the front.
#[derive(Clone)]
enum Hop {
    Up(Arc<UdpSocket>),
    Back(Arc<UdpSocket>, SocketAddr),
}

impl Hop {
    async fn send(&self, bytes: &[u8]) {
        // An error (the node is down) loses the datagram, as the link would.
        let _ = match self {
            Self::Up(socket) => socket.send(bytes).await,
            Self::Back(socket, to) => socket.send_to(bytes, *to).await,
        };
    }
}

/// The running proxy; dropping it stops every front.
pub struct Netem {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    fronts: Vec<SocketAddr>,
}

impl Netem {
    /// A front on 127.0.0.1 (an ephemeral port) for each node, given by the address it listens
    /// on; the draws of loss, duplication and delay follow `seed`.
    pub fn start(nodes: &[SocketAddr], seed: u64) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netem")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            rules: Mutex::new(Rules {
                cut: HashSet::new(),
                quality: LinkQuality::default(),
                rng: StdRng::seed_from_u64(seed),
            }),
            nodes: nodes.iter().enumerate().map(|(i, &a)| (a, i)).collect(),
            delayed: AtomicUsize::new(0),
            stats: NetemStats::default(),
        });
        let mut fronts = Vec::with_capacity(nodes.len());
        for (node, &real) in nodes.iter().enumerate() {
            let socket = runtime.block_on(UdpSocket::bind(("127.0.0.1", 0)))?;
            fronts.push(socket.local_addr()?);
            runtime.spawn(serve_front(
                Arc::new(socket),
                node,
                real,
                Arc::clone(&shared),
            ));
        }
        Ok(Self {
            runtime,
            shared,
            fronts,
        })
    }

    /// The address node `node`'s peers dial.
    pub fn front(&self, node: NodeId) -> SocketAddr {
        self.fronts[node]
    }

    /// Drops datagrams from `from` to `to` until [`Netem::heal`].
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.shared.rules().cut.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    /// Sets loss, duplication and delay on every link.
    pub fn set_quality(&self, quality: LinkQuality) {
        self.shared.rules().quality = quality;
    }

    /// Removes every cut and every loss, duplication and delay.
    pub fn heal(&self) {
        let mut rules = self.shared.rules();
        rules.cut.clear();
        rules.quality = LinkQuality::default();
    }

    pub fn stats(&self) -> &NetemStats {
        &self.shared.stats
    }

    /// Stops every front at once (also done on drop).
    pub fn stop(self) {
        self.runtime.shutdown_background();
    }
}

/// Forwards datagrams arriving at node `node`'s front to it, one upstream socket per sender
/// (whose answers [`serve_back`] returns).
async fn serve_front(front: Arc<UdpSocket>, node: NodeId, real: SocketAddr, shared: Arc<Shared>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, sender)) = front.recv_from(&mut buf).await else {
            // ICMP errors from a node that is down surface here; the front keeps serving.
            continue;
        };
        let upstream = match upstreams.get(&sender) {
            Some(up) => Arc::clone(up),
            None if upstreams.len() >= MAX_SENDERS_PER_FRONT => continue,
            None => {
                let Ok(up) = upstream_to(real).await else {
                    continue;
                };
                let up = Arc::new(up);
                let from = shared.nodes.get(&sender).copied();
                tokio::spawn(serve_back(
                    Arc::clone(&up),
                    Arc::clone(&front),
                    sender,
                    (node, from),
                    Arc::clone(&shared),
                ));
                upstreams.insert(sender, Arc::clone(&up));
                up
            }
        };
        let from = shared.nodes.get(&sender).copied();
        pass(&shared, from, Some(node), &buf[..len], Hop::Up(upstream)).await;
    }
}

async fn upstream_to(real: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
    socket.connect(real).await?;
    Ok(socket)
}

/// Returns node `link.0`'s answers to the sender `to` (node `link.1`, if known).
async fn serve_back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    to: SocketAddr,
    link: (NodeId, Option<NodeId>),
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Errors are ICMP "port unreachable" while the node is down: keep going.
        if let Ok(len) = upstream.recv(&mut buf).await {
            let hop = Hop::Back(Arc::clone(&front), to);
            pass(&shared, Some(link.0), link.1, &buf[..len], hop).await;
        }
    }
}

/// Sends one datagram on as the rules say: dropped, once or twice, now or after a delay.
async fn pass(
    shared: &Arc<Shared>,
    from: Option<NodeId>,
    to: Option<NodeId>,
    bytes: &[u8],
    hop: Hop,
) {
    let fate = shared.fate(from, to);
    for _ in 0..fate.copies {
        if fate.delay.is_zero() {
            hop.send(bytes).await;
            shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if shared.delayed.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED {
            shared.delayed.fetch_sub(1, Ordering::Relaxed);
            shared.stats.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.stats.delayed.fetch_add(1, Ordering::Relaxed);
        let (shared, hop, bytes, delay) =
            (Arc::clone(shared), hop.clone(), bytes.to_vec(), fate.delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            hop.send(&bytes).await;
            shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            shared.delayed.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdSocket;

    /// Two plain UDP "nodes" behind a proxy: node 0 sends to node 1's front.
    fn pair() -> (Netem, StdSocket, StdSocket) {
        let a = StdSocket::bind("127.0.0.1:0").unwrap();
        let b = StdSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let netem = Netem::start(&[a.local_addr().unwrap(), b.local_addr().unwrap()], 7).unwrap();
        (netem, a, b)
    }

    fn recv(socket: &StdSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buf).ok()?;
        Some((buf[..len].to_vec(), from))
    }

    #[test]
    fn forwards_both_ways_and_a_cut_drops_only_its_direction() {
        let (netem, a, b) = pair();
        a.send_to(b"ping", netem.front(1)).unwrap();
        let (got, upstream) = recv(&b).expect("forwarded to node 1");
        assert_eq!(got, b"ping");
        b.send_to(b"pong", upstream).unwrap();
        let (got, from) = recv(&a).expect("the answer comes back");
        assert_eq!((got.as_slice(), from), (&b"pong"[..], netem.front(1)));

        // Node 1 no longer hears node 0, but node 0 still hears node 1.
        netem.cut(0, 1);
        a.send_to(b"lost", netem.front(1)).unwrap();
        assert!(recv(&b).is_none(), "0 → 1 is cut");
        b.send_to(b"heard", upstream).unwrap();
        assert_eq!(recv(&a).map(|(g, _)| g), Some(b"heard".to_vec()));
        assert_eq!(netem.stats().cut.load(Ordering::Relaxed), 1);

        netem.heal();
        a.send_to(b"again", netem.front(1)).unwrap();
        assert_eq!(recv(&b).map(|(g, _)| g), Some(b"again".to_vec()));
    }

    #[test]
    fn loss_drops_everything_and_duplication_sends_twice() {
        let (netem, a, b) = pair();
        netem.set_quality(LinkQuality {
            loss: 1.0,
            ..LinkQuality::default()
        });
        a.send_to(b"x", netem.front(1)).unwrap();
        assert!(recv(&b).is_none());
        assert_eq!(netem.stats().lost.load(Ordering::Relaxed), 1);
        netem.set_quality(LinkQuality {
            duplicate: 1.0,
            delay_ms: (20, 20),
            ..LinkQuality::default()
        });
        a.send_to(b"y", netem.front(1)).unwrap();
        assert_eq!(recv(&b).map(|(g, _)| g), Some(b"y".to_vec()));
        assert_eq!(recv(&b).map(|(g, _)| g), Some(b"y".to_vec()));
        assert_eq!(netem.stats().delayed.load(Ordering::Relaxed), 2);
    }
}
