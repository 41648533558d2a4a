//! CN-to-CN QUIC on 127.0.0.1: delivery between real nodes, refusal of impostors and of
//! handshakes replayed from another session, hostile frames from an authenticated peer, and
//! the frame decoder on damaged bytes. Every wait is bounded; every test stops its nodes.

use alloy_primitives::{Bytes, B256};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::net::{decode_inbound, handshake, tls, Inbound, NetConfig, Network};
use kaon::pipeline::{link, LinkReceiver};
use kaon::types::codec::encode_frame;
use kaon::types::{BlockHash, CnIndex, ConsensusMessage, Height, Round, TxBatch, Vote, VoteKind};
use proptest::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Longest any test waits for one event (connection set-up included) before failing.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);
/// The exporter label of `kaon::net::handshake`, restated: the replay test forges hellos.
const AUTH_LABEL: &[u8] = b"EXPORTER-kaon-peer-auth-v1";

type Inbox = LinkReceiver<(CnIndex, Inbound)>;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32]).expect("32-byte seed")
}

/// CN `i` holds the key of seed `i + 1`.
fn cn_set(n: u8) -> Arc<CnSet> {
    Arc::new(CnSet::new((1..=n).map(|s| key(s).public_key()).collect()).expect("CN set"))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

/// A node listening on an ephemeral port of 127.0.0.1, and its inbox.
fn node(
    rt: &Runtime,
    config: NetConfig,
    me: u32,
    key: SecretKey,
    set: &Arc<CnSet>,
) -> (Network, Inbox) {
    let (tx, rx) = link("net_consensus", 64);
    let net = Network::bind(rt.handle(), config, CnIndex(me), key, Arc::clone(set), tx)
        .expect("bind 127.0.0.1:0");
    (net, rx)
}

fn addr(net: &Network) -> SocketAddr {
    net.local_addr().expect("bound socket")
}

fn frame_of(msg: &ConsensusMessage) -> Arc<Vec<u8>> {
    Arc::new(encode_frame(msg))
}

fn recv(inbox: &Inbox, what: &str) -> (CnIndex, Inbound) {
    match inbox.recv_timeout(WAIT) {
        Ok(item) => item,
        Err(true) => panic!("inbox closed while waiting for {what}"),
        Err(false) => panic!("no {what} within {WAIT:?}"),
    }
}

fn assert_quiet(inbox: &Inbox, after: &str) {
    if let Ok((from, msg)) = inbox.recv_timeout(QUIET) {
        panic!("{after}, yet CN {from} delivered {msg:?}");
    }
}

/// Polls `counter` until it reaches `at_least`, failing after [`WAIT`].
fn wait_for(counter: &AtomicU64, at_least: u64, what: &str) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: {} after {WAIT:?}, expected at least {at_least}",
            counter.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expect_sync_request(got: (CnIndex, Inbound), from: u32, height: u64) {
    match got {
        (cn, Inbound::Consensus(ConsensusMessage::SyncRequest(h)))
            if cn == CnIndex(from) && h == Height(height) => {}
        other => panic!("expected SyncRequest({height}) from CN {from}, got {other:?}"),
    }
}

fn shutdown(rt: Runtime, nets: impl IntoIterator<Item = Network>) {
    for net in nets {
        net.close();
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}

#[test]
fn two_nodes_exchange_consensus_messages_and_tx_batches() {
    let rt = runtime();
    let set = cn_set(2);
    let (mut n0, inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let (mut n1, inbox1) = node(&rt, NetConfig::new(localhost()), 1, key(2), &set);
    n0.connect(rt.handle(), &[(CnIndex(1), addr(&n1))]);
    n1.connect(rt.handle(), &[(CnIndex(0), addr(&n0))]);

    // Queued before the connection is up: the dialler delivers them once it is.
    n1.send(
        CnIndex(0),
        frame_of(&ConsensusMessage::SyncRequest(Height(7))),
    );
    let batch = TxBatch {
        txs: vec![
            Bytes::from_static(b"\x02not really a transaction"),
            Bytes::from(vec![0xab; 3000]),
            Bytes::new(),
        ],
    };
    n1.send(CnIndex(0), Arc::new(encode_frame(&batch)));
    // To a CN we are not connected to: silently nothing.
    n1.send(
        CnIndex(5),
        frame_of(&ConsensusMessage::SyncRequest(Height(1))),
    );

    expect_sync_request(recv(&inbox0, "the sync request"), 1, 7);
    match recv(&inbox0, "the tx batch") {
        (CnIndex(1), Inbound::Txs(got)) => assert_eq!(got, batch),
        other => panic!("expected the tx batch from CN 1, got {other:?}"),
    }

    // The other direction, through broadcast, with a vote carrying a real signature.
    let vote = ConsensusMessage::Vote(Box::new(sample_vote()));
    n0.broadcast(frame_of(&vote));
    match recv(&inbox1, "the vote") {
        (CnIndex(0), Inbound::Consensus(got)) => assert_eq!(got, vote),
        other => panic!("expected the vote from CN 0, got {other:?}"),
    }
    assert_quiet(&inbox0, "both frames were already delivered");
    assert_eq!(n0.stats().frames_received.load(Ordering::Relaxed), 2);
    // Counted right after the write, which may trail the delivery by a moment.
    wait_for(&n1.stats().frames_sent, 2, "frames sent by CN 1");
    assert_eq!(n1.stats().frames_sent.load(Ordering::Relaxed), 2);
    assert_eq!(n0.stats().rejected_handshakes.load(Ordering::Relaxed), 0);
    assert_eq!(n0.stats().bad_frames.load(Ordering::Relaxed), 0);
    // Each side's dialler delivered, so each holds one live CN link.
    assert_eq!(n0.stats().cn_peers.load(Ordering::Relaxed), 1);
    assert_eq!(n1.stats().cn_peers.load(Ordering::Relaxed), 1);
    assert_eq!(n0.stats().peer_count(), 1);
    shutdown(rt, [n0, n1]);
}

#[test]
fn a_dialler_without_the_key_of_the_index_it_claims_is_refused() {
    let rt = runtime();
    let set = cn_set(2);
    let (n0, inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let listener = addr(&n0);

    // Claims CN 1, whose key is seed 2's, holding seed 9's.
    let (mut impostor, _) = node(&rt, NetConfig::new(localhost()), 1, key(9), &set);
    impostor.connect(rt.handle(), &[(CnIndex(0), listener)]);
    impostor.send(
        CnIndex(0),
        frame_of(&ConsensusMessage::SyncRequest(Height(66))),
    );
    wait_for(
        &n0.stats().rejected_handshakes,
        1,
        "rejected handshakes of the impostor",
    );
    // Claims an index outside the set.
    let (mut stranger, _) = node(&rt, NetConfig::new(localhost()), 7, key(2), &set);
    stranger.connect(rt.handle(), &[(CnIndex(0), listener)]);
    stranger.send(
        CnIndex(0),
        frame_of(&ConsensusMessage::SyncRequest(Height(67))),
    );
    wait_for(
        &n0.stats().rejected_handshakes,
        2,
        "rejected handshakes of the stranger",
    );
    assert_quiet(&inbox0, "every handshake was refused");
    assert_eq!(n0.stats().frames_received.load(Ordering::Relaxed), 0);

    // The listener still serves the real CN 1.
    let (mut honest, _) = node(&rt, NetConfig::new(localhost()), 1, key(2), &set);
    honest.connect(rt.handle(), &[(CnIndex(0), listener)]);
    honest.send(
        CnIndex(0),
        frame_of(&ConsensusMessage::SyncRequest(Height(68))),
    );
    expect_sync_request(recv(&inbox0, "the honest CN's request"), 1, 68);
    assert_quiet(&inbox0, "only the honest CN got through");
    shutdown(rt, [n0, impostor, stranger, honest]);
}

/// A raw QUIC connection to `to` with one open unidirectional stream.
async fn dial_raw(to: SocketAddr) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let endpoint = quinn::Endpoint::client(localhost()).expect("client endpoint");
    let config = tls::client_config().expect("client TLS config");
    let conn = endpoint
        .connect_with(config, to, tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let stream = conn.open_uni().await.expect("uni stream");
    (endpoint, conn, stream)
}

/// Writes one length-prefixed frame, as the dialler does.
async fn write_frame(stream: &mut quinn::SendStream, frame: &[u8]) {
    let len = u32::try_from(frame.len())
        .expect("small frame")
        .to_le_bytes();
    stream.write_all(&len).await.expect("write length");
    stream.write_all(frame).await.expect("write frame");
}

/// How the listener ended `conn`, within [`WAIT`].
fn closed(rt: &Runtime, conn: &quinn::Connection, what: &str) -> quinn::ConnectionError {
    // The timer must be created inside the runtime.
    rt.block_on(async { tokio::time::timeout(WAIT, conn.closed()).await })
        .unwrap_or_else(|_| panic!("{what}: connection still open after {WAIT:?}"))
}

fn garbage(seed: u8, len: usize) -> Vec<u8> {
    // Not a valid frame: the checksum of random bytes matches with probability 2^-32, and
    // these fixed bytes were checked to fail (the test asserts it).
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn hostile_frames_from_an_authenticated_peer_cost_it_the_connection() {
    let rt = runtime();
    let set = cn_set(3);
    let mut config = NetConfig::new(localhost());
    config.max_frame_bytes = 4096;
    config.frame_timeout = Duration::from_millis(300);
    let (n0, inbox0) = node(&rt, config, 0, key(1), &set);
    let listener = addr(&n0);
    let stats = Arc::clone(n0.stats());

    // CN 1, authenticated for real, then sending junk.
    let (_ep, conn, mut stream) = rt.block_on(async {
        let (ep, conn, mut stream) = dial_raw(listener).await;
        handshake::initiate(&conn, &mut stream, CnIndex(1), &key(2))
            .await
            .expect("hello");
        write_frame(&mut stream, &garbage(1, 64)).await;
        (ep, conn, stream)
    });
    for seed in 1..=8 {
        assert!(decode_inbound(&garbage(seed, 64)).is_err());
    }
    wait_for(
        &stats.bad_frames,
        1,
        "bad frames after the first junk frame",
    );
    assert_quiet(&inbox0, "the only frame was junk");
    // One bad frame is tolerated: a good frame on the same stream still arrives.
    rt.block_on(write_frame(
        &mut stream,
        &encode_frame(&ConsensusMessage::SyncRequest(Height(3))),
    ));
    expect_sync_request(recv(&inbox0, "the good frame after junk"), 1, 3);
    // Seven more make eight: the listener hangs up.
    rt.block_on(async {
        for seed in 2..=8 {
            write_frame(&mut stream, &garbage(seed, 64)).await;
        }
    });
    match closed(&rt, &conn, "after eight bad frames") {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                2u32.into(),
                "closed for bad frames: {close:?}"
            );
        }
        other => panic!("expected the listener to close for bad frames, got {other:?}"),
    }
    assert_eq!(stats.bad_frames.load(Ordering::Relaxed), 8);

    // A length prefix over max_frame_bytes: refused unread, the connection dropped.
    let (_ep2, conn2) = rt.block_on(async {
        let (ep, conn, mut stream) = dial_raw(listener).await;
        handshake::initiate(&conn, &mut stream, CnIndex(1), &key(2))
            .await
            .expect("hello");
        stream
            .write_all(&4097u32.to_le_bytes())
            .await
            .expect("write length");
        // Whatever follows is never read; the listener must not wait for 4 097 bytes.
        let _ = stream.write_all(&[0u8; 16]).await;
        (ep, conn)
    });
    assert!(
        matches!(
            closed(&rt, &conn2, "after an oversize length prefix"),
            quinn::ConnectionError::ApplicationClosed(_)
        ),
        "the listener, not a timeout, ends the connection"
    );

    // A frame that starts and never finishes: cut off after frame_timeout.
    let (_ep3, conn3, _stream3) = rt.block_on(async {
        let (ep, conn, mut stream) = dial_raw(listener).await;
        handshake::initiate(&conn, &mut stream, CnIndex(1), &key(2))
            .await
            .expect("hello");
        stream
            .write_all(&100u32.to_le_bytes())
            .await
            .expect("write length");
        stream.write_all(&[7u8; 10]).await.expect("write start");
        (ep, conn, stream)
    });
    assert!(matches!(
        closed(&rt, &conn3, "after a stalled frame"),
        quinn::ConnectionError::ApplicationClosed(_)
    ));
    assert_quiet(&inbox0, "nothing valid was sent after the good frame");

    // Honest CN 2 is unaffected.
    let (mut honest, _) = node(&rt, NetConfig::new(localhost()), 2, key(3), &set);
    honest.connect(rt.handle(), &[(CnIndex(0), listener)]);
    honest.send(
        CnIndex(0),
        frame_of(&ConsensusMessage::SyncRequest(Height(11))),
    );
    expect_sync_request(recv(&inbox0, "the honest CN's request"), 2, 11);
    assert_eq!(stats.rejected_handshakes.load(Ordering::Relaxed), 0);
    shutdown(rt, [n0, honest]);
}

/// The hello `handshake::initiate` sends, signed over `conn`'s exported secret.
fn hello(conn: &quinn::Connection, me: CnIndex, key: &SecretKey) -> Vec<u8> {
    let mut secret = [0u8; 32];
    conn.export_keying_material(&mut secret, AUTH_LABEL, b"")
        .expect("keying material");
    let sig = key.sign(&[AUTH_LABEL, &secret[..]].concat());
    [&me.to_be_bytes()[..], &sig.to_bytes().0[..]].concat()
}

#[test]
fn a_hello_replayed_on_another_connection_is_refused() {
    let rt = runtime();
    let set = cn_set(2);
    let (n0, inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let listener = addr(&n0);
    let stats = Arc::clone(n0.stats());

    // A hello forged by hand on its own connection is accepted: the forgery matches the
    // protocol, so the refusal below is about the session, not the encoding.
    let (_ep1, _conn1, _s1, recorded) = rt.block_on(async {
        let (ep, conn, mut stream) = dial_raw(listener).await;
        let recorded = hello(&conn, CnIndex(1), &key(2));
        stream.write_all(&recorded).await.expect("hello");
        write_frame(
            &mut stream,
            &encode_frame(&ConsensusMessage::SyncRequest(Height(21))),
        )
        .await;
        (ep, conn, stream, recorded)
    });
    expect_sync_request(recv(&inbox0, "the hand-made hello's frame"), 1, 21);

    // The same bytes on a new connection: the session secret differs, so must the signature.
    let (_ep2, conn2, _s2) = rt.block_on(async {
        let (ep, conn, mut stream) = dial_raw(listener).await;
        stream.write_all(&recorded).await.expect("replayed hello");
        write_frame(
            &mut stream,
            &encode_frame(&ConsensusMessage::SyncRequest(Height(22))),
        )
        .await;
        (ep, conn, stream)
    });
    wait_for(&stats.rejected_handshakes, 1, "rejected replayed hellos");
    match closed(&rt, &conn2, "after a replayed hello") {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, 1u32.into(), "closed for the handshake");
        }
        other => panic!("expected the listener to refuse the hello, got {other:?}"),
    }
    assert_quiet(&inbox0, "the replayed hello was refused");
    assert_eq!(stats.frames_received.load(Ordering::Relaxed), 1);
    shutdown(rt, [n0]);
}

fn sample_vote() -> Vote {
    let block_hash = BlockHash(B256::repeat_byte(0x5a));
    let signing = Vote::signing_message(VoteKind::Commit, Height(9), Round(2), block_hash);
    Vote {
        kind: VoteKind::Commit,
        height: Height(9),
        round: Round(2),
        block_hash,
        voter: CnIndex(0),
        signature: key(1).sign(&signing).to_bytes(),
    }
}

fn sample_frames() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        vec![
            encode_frame(&ConsensusMessage::SyncRequest(Height(7))),
            encode_frame(&ConsensusMessage::SyncRequest(Height(u64::MAX))),
            encode_frame(&ConsensusMessage::Vote(Box::new(sample_vote()))),
            encode_frame(&TxBatch::default()),
            encode_frame(&TxBatch {
                txs: vec![Bytes::from(vec![0x02; 70]), Bytes::from_static(b"\xc0")],
            }),
        ]
    })
}

#[test]
fn decode_inbound_refuses_truncated_and_bit_flipped_frames() {
    for frame in sample_frames() {
        let frame = frame.clone();
        let whole = decode_inbound(&frame);
        assert!(whole.is_ok(), "intact frame: {whole:?}");
        for len in 0..frame.len() {
            assert!(
                decode_inbound(&frame[..len]).is_err(),
                "truncated to {len} of {} bytes",
                frame.len()
            );
        }
        for bit in 0..frame.len() * 8 {
            let mut flipped = frame.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_inbound(&flipped).is_err(), "bit {bit} flipped");
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decode_inbound(&longer).is_err(), "a trailing byte");
    }
    // Frames of the other kinds are not inbound messages.
    assert!(decode_inbound(&encode_frame(&sample_vote())).is_err());
    assert!(decode_inbound(&[]).is_err());
}

/// Re-seals `body` (version, kind, payload) with a valid checksum, so the decoder must parse it.
fn sealed(body: &[u8]) -> Vec<u8> {
    let mut frame = body.to_vec();
    frame.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_inbound_never_panics(
        which in 0usize..5,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        noise in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = decode_inbound(&noise);
        let _ = decode_inbound(&sealed(&noise));
        // Edit the payload of a valid frame and re-seal it: this reaches the RLP decoders.
        let frame = &sample_frames()[which];
        let mut body = frame[..frame.len() - 4].to_vec();
        for (at, byte, op) in edits {
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => { body.truncate(i.max(2)); }
            }
        }
        if let Ok(Inbound::Consensus(msg)) = decode_inbound(&sealed(&body)) {
            // Whatever decodes re-encodes to a frame that decodes to the same message.
            match decode_inbound(&encode_frame(&msg)) {
                Ok(Inbound::Consensus(again)) => prop_assert_eq!(again, msg),
                other => prop_assert!(false, "re-encoded {:?} decodes to {:?}", msg, other),
            }
        }
    }
}

/// A vote goes to its leader by key, whatever number a later CN set gives the leader: peers
/// keep the numbering of the configured set. A key no dialled peer holds goes to every peer
/// (more messages, never a lost vote). Kills "route votes by key" (after a set change that
/// renumbers members, routing by number sent votes to another node).
#[test]
fn a_frame_sent_to_a_key_reaches_the_node_holding_it_or_every_peer() {
    let rt = runtime();
    let set = cn_set(3);
    let (mut n0, _inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let (n1, inbox1) = node(&rt, NetConfig::new(localhost()), 1, key(2), &set);
    let (n2, inbox2) = node(&rt, NetConfig::new(localhost()), 2, key(3), &set);
    n0.connect(
        rt.handle(),
        &[(CnIndex(1), addr(&n1)), (CnIndex(2), addr(&n2))],
    );
    // A renumbered set in force (CN 1 left: the holder of key 3 is now CN 1).
    n0.learn_set(Arc::new(
        CnSet::new(vec![key(1).public_key(), key(3).public_key()]).expect("CN set"),
    ));
    let to_key3 = ConsensusMessage::SyncRequest(Height(3));
    n0.send_to_key(&key(3).public_key(), frame_of(&to_key3));
    match recv(&inbox2, "the frame for key 3") {
        (_, Inbound::Consensus(got)) => assert_eq!(got, to_key3),
        other => panic!("expected the frame for key 3, got {other:?}"),
    }
    assert_quiet(&inbox1, "the frame was for key 3");
    let unknown = ConsensusMessage::SyncRequest(Height(9));
    n0.send_to_key(&key(9).public_key(), frame_of(&unknown));
    for inbox in [&inbox1, &inbox2] {
        match recv(inbox, "the frame for a key no peer holds") {
            (_, Inbound::Consensus(got)) => assert_eq!(got, unknown),
            other => panic!("expected the broadcast frame, got {other:?}"),
        }
    }
    shutdown(rt, [n0, n1, n2]);
}

/// Requests in turn (a catching-up node's sync ranges) go only to peers whose link is up: a
/// configured peer that is down would swallow every other range and cost the asker a retry
/// each time. Kills "turns count over the peers that are up".
#[test]
fn requests_in_turn_skip_a_peer_that_is_down() {
    let rt = runtime();
    let set = cn_set(3);
    let (mut n0, _inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let (n2, inbox2) = node(&rt, NetConfig::new(localhost()), 2, key(3), &set);
    // CN 1's address, with nothing listening there any more.
    let gone = std::net::UdpSocket::bind(localhost())
        .and_then(|s| s.local_addr())
        .expect("an ephemeral UDP port");
    n0.connect(rt.handle(), &[(CnIndex(1), gone), (CnIndex(2), addr(&n2))]);
    wait_for(&n0.stats().cn_peers, 1, "n0's link to CN 2");
    for turn in 0..4u64 {
        n0.send_in_turn(
            turn as usize,
            frame_of(&ConsensusMessage::SyncRequest(Height(turn))),
        );
    }
    for turn in 0..4u64 {
        expect_sync_request(recv(&inbox2, "a request in turn"), 0, turn);
    }
    shutdown(rt, [n0, n2]);
}

/// A peer that never answers keeps its frames queued: transaction gossip stops being queued at
/// `GOSSIP_QUEUE_BYTES`, every frame at `PEER_QUEUE_BYTES`, however few frames that is; a
/// peer that is down does not hold back gossip to the others (`gossip_room`).
#[test]
fn a_peer_queue_is_bounded_by_bytes_and_gossip_stops_first() {
    use kaon::net::{GOSSIP_QUEUE_BYTES, PEER_QUEUE_BYTES};
    const MIB: usize = 1 << 20;
    let rt = runtime();
    let set = cn_set(2);
    let (mut n0, _inbox0) = node(&rt, NetConfig::new(localhost()), 0, key(1), &set);
    let gone = std::net::UdpSocket::bind(localhost())
        .and_then(|s| s.local_addr())
        .expect("an ephemeral UDP port");
    n0.connect(rt.handle(), &[(CnIndex(1), gone)]);
    let frame = Arc::new(vec![0u8; MIB]);
    let stats = Arc::clone(n0.stats());
    for _ in 0..GOSSIP_QUEUE_BYTES / MIB + 1 {
        n0.broadcast_gossip(Arc::clone(&frame));
    }
    assert_eq!(stats.dropped_gossip.load(Ordering::Relaxed), 1);
    assert_eq!(n0.gossip_room(), GOSSIP_QUEUE_BYTES, "its link is down");
    for _ in GOSSIP_QUEUE_BYTES / MIB..PEER_QUEUE_BYTES / MIB {
        n0.broadcast(Arc::clone(&frame));
    }
    assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 0);
    n0.broadcast(Arc::clone(&frame));
    assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
    shutdown(rt, [n0]);
}

/// Small gossip frames stop being queued while a quarter of a peer's frames are still free, so
/// consensus frames behind them are never dropped for want of a slot.
#[test]
fn small_gossip_frames_leave_room_in_a_peer_queue_for_consensus_frames() {
    let rt = runtime();
    let set = cn_set(2);
    let mut config = NetConfig::new(localhost());
    config.queue_depth = 16;
    let (mut n0, _inbox0) = node(&rt, config, 0, key(1), &set);
    let gone = std::net::UdpSocket::bind(localhost())
        .and_then(|s| s.local_addr())
        .expect("an ephemeral UDP port");
    n0.connect(rt.handle(), &[(CnIndex(1), gone)]);
    let stats = Arc::clone(n0.stats());
    for _ in 0..16 {
        n0.broadcast_gossip(Arc::new(vec![0u8; 200]));
    }
    assert_eq!(stats.dropped_gossip.load(Ordering::Relaxed), 4);
    for height in 0..4 {
        n0.broadcast(frame_of(&ConsensusMessage::SyncRequest(Height(height))));
    }
    assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 0);
    n0.broadcast(frame_of(&ConsensusMessage::SyncRequest(Height(4))));
    assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
    shutdown(rt, [n0]);
}
