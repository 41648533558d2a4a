//! Ranger nodes: the consensus audit and evidence rules on crafted chains, then real nodes —
//! four CNs and several RNs over QUIC on 127.0.0.1, RocksDB and block logs in temporary
//! directories. RNs catch up, follow, relay evidence along a line, resume after a restart, and
//! refuse forged certificates and garbage. Every wait is bounded.

use alloy_primitives::{Address, Bytes, U256};
use kaon::chain::genesis::Genesis;
use kaon::consensus::audit::{
    audit_consensus, verify_head, AuditError, AuditOutcome, ChainState, HeadClaimError,
};
use kaon::consensus::certificate::aggregate_commit_votes;
use kaon::consensus::machine::{Params, Tip};
use kaon::consensus::proposal::{build_block, BlockBody};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::{keccak256, sha256};
use kaon::crypto::tx::{Eip1559Tx, Transaction, TxKind};
use kaon::net::handshake::{self, Credential, Side};
use kaon::net::rn::{decode_gossip, Gossip};
use kaon::net::rn::{RnNetConfig, RnNetwork, Source};
use kaon::net::sync::{BlockServer, ChainReader};
use kaon::net::{tls, NetConfig};
use kaon::node::loadgen::dev_account;
use kaon::pipeline::link;
use kaon::pipeline::topology::{start_cluster, CnNode, CnSpec};
use kaon::rn::evidence::{
    check_evidence, Deferral, EvidenceError, PendingEvidence, MAX_PENDING_EVIDENCE,
    MAX_PENDING_EVIDENCE_BYTES, PENDING_EVIDENCE_WINDOW,
};
use kaon::rn::{CnPeer, RnConfig, RnHandle, RnNode};
use kaon::storage::blocklog::BlockLog;
use kaon::storage::store::{BlockIndex, Store};
use kaon::types::codec::decode_frame;
use kaon::types::codec::encode_frame;
use kaon::types::sync::{BlockRangeRequest, BlockRangeResponse};
use kaon::types::{
    Block, BlockHash, ChainId, CnIndex, EquivocationEvidence, Height, Round, SignerBitmap, Vote,
    VoteKind,
};
use proptest::prelude::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Longest any one wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(90);
const REGION: ChainId = ChainId(1000);
/// Committee size of every chain here: all four CNs sit on every committee.
const COMMITTEE: usize = 100;

fn cn_key(i: usize) -> SecretKey {
    SecretKey::from_seed(sha256(format!("rn-test-cn-{i}").as_bytes()).as_slice()).unwrap()
}

pub(crate) fn node_key(name: &str) -> SecretKey {
    SecretKey::from_seed(sha256(format!("rn-test-node-{name}").as_bytes()).as_slice()).unwrap()
}

pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_or_explain(what, cond, String::new);
}

/// Waits for `cond`; on timeout fails with `explain()`'s account of the state.
pub(crate) fn wait_or_explain(
    what: &str,
    mut cond: impl FnMut() -> bool,
    explain: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Heights, evidence, rejections and counters of RNs, for failure messages.
pub(crate) fn describe(rns: &[&RnHandle]) -> String {
    rns.iter()
        .enumerate()
        .map(|(i, rn)| {
            let mut m = kaon::telemetry::Metrics::default();
            rn.metrics(&mut m, &[]);
            format!(
                "RN {}: {:?}, evidence {}, rejected {:?}, peers {}\n{}",
                i + 1,
                rn.sync_status(),
                rn.evidence().len(),
                rn.rejected(),
                rn.peer_count(),
                m.render()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- crafted chains, no network

fn params() -> Params {
    Params {
        region: REGION,
        committee_size: COMMITTEE,
        block_interval_ms: 100,
        base_timeout_ms: 500,
        max_timeout_ms: 5_000,
        votes: Default::default(),
    }
}

fn crafted_genesis() -> Tip {
    Tip {
        height: Height(0),
        hash: BlockHash(sha256(b"rn-test-genesis")),
        mix: sha256(b"rn-test-mix"),
        timestamp_ms: 1_000,
    }
}

/// Seals `block` with commit votes of the committee members at `signers` (bitmap positions),
/// each signing `hash`'s commit message (`hash` may differ from the block's: a forgery).
fn seal(
    block: &mut Block,
    set: &CnSet,
    keys: &[SecretKey],
    mix: alloy_primitives::B256,
    signers: &[usize],
) {
    let header = block.header().clone();
    let round = block.sealed.seal.round;
    let committee = set.committee(mix, header.height, round, COMMITTEE);
    let msg = Vote::signing_message(VoteKind::Commit, header.height, round, header.hash());
    let votes: Vec<_> = signers
        .iter()
        .map(|&pos| {
            let cn = committee.members[pos];
            (cn, keys[cn.0 as usize].sign(&msg))
        })
        .collect();
    let mut bitmap = SignerBitmap::with_members(committee.size());
    let mut sigs = Vec::new();
    for (pos, (_, sig)) in signers.iter().zip(&votes) {
        bitmap.set(*pos);
        sigs.push(sig);
    }
    block.sealed.seal.signers = bitmap;
    block.sealed.seal.aggregate = kaon::crypto::bls::aggregate_signatures(sigs)
        .unwrap()
        .to_bytes();
}

/// `n` empty blocks on `genesis`, each proposed by its round-0 proposer and sealed by
/// `quorum` members.
fn crafted_chain(keys: &[SecretKey], set: &CnSet, genesis: Tip, n: usize) -> Vec<Block> {
    let mut tip = genesis;
    let mut blocks = Vec::new();
    for _ in 0..n {
        let committee = set.committee(tip.mix, tip.height.next(), Round(0), COMMITTEE);
        let proposer = committee.proposer;
        let mut block = build_block(
            &params(),
            &keys[proposer.0 as usize],
            proposer,
            set,
            &tip,
            Round(0),
            tip.timestamp_ms + 100,
            BlockBody::default(),
        );
        let votes: Vec<_> = committee.members[..committee.quorum()]
            .iter()
            .map(|cn| {
                let msg = Vote::signing_message(
                    VoteKind::Commit,
                    tip.height.next(),
                    Round(0),
                    block.hash(),
                );
                (*cn, keys[cn.0 as usize].sign(&msg))
            })
            .collect();
        block.sealed.seal = aggregate_commit_votes(&committee, &votes).unwrap();
        tip = Tip::of(&block);
        blocks.push(block);
    }
    blocks
}

fn four_cns() -> (Vec<SecretKey>, Arc<CnSet>) {
    let keys: Vec<SecretKey> = (0..4).map(cn_key).collect();
    let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    (keys, Arc::new(set))
}

fn audit(set: &Arc<CnSet>, blocks: &[Block]) -> AuditOutcome {
    let state = ChainState {
        tip: crafted_genesis(),
        set: Arc::clone(set),
    };
    audit_consensus(&params(), &state, blocks)
}

#[test]
fn the_audit_passes_a_valid_chain_and_stops_at_the_first_bad_block() {
    let (keys, set) = four_cns();
    let chain = crafted_chain(&keys, &set, crafted_genesis(), 6);
    assert_eq!(
        audit(&set, &chain),
        AuditOutcome {
            passed: 6,
            failure: None
        }
    );

    // A forged seal (a quorum that signed another hash) in the middle of a batch: the batch
    // check fails, bisection names block 3, blocks 0..3 still pass.
    let mut forged = chain.clone();
    let mix = forged[2].header().mix;
    let mut other = forged[3].clone();
    other.sealed.header.timestamp_ms += 1;
    seal(&mut other, &set, &keys, mix, &[0, 1, 2]);
    forged[3].sealed.seal = other.sealed.seal;
    let outcome = audit(&set, &forged);
    assert_eq!(outcome.passed, 3);
    assert!(
        matches!(outcome.failure, Some((3, AuditError::Certificate(_)))),
        "{outcome:?}"
    );

    // A seal short of the quorum (2 of 4 signers).
    let mut short = chain.clone();
    let mix = short[1].header().mix;
    seal(&mut short[2], &set, &keys, mix, &[0, 1]);
    let outcome = audit(&set, &short);
    assert_eq!(outcome.passed, 2);
    match outcome.failure {
        Some((2, AuditError::Certificate(e))) => {
            assert!(e.to_string().contains("short of the quorum"), "{e}")
        }
        other => panic!("expected a short certificate at block 2, got {other:?}"),
    }

    // A reveal by another CN, with the mix and the seal made consistent with it: only the
    // batch signature check can tell.
    let mut wrong_reveal = chain.clone();
    let last = &mut wrong_reveal[5];
    let proposer = last.header().proposer.0 as usize;
    let reveal =
        kaon::consensus::selection::reveal(&keys[(proposer + 1) % 4], last.header().height);
    let mix_before = chain[4].header().mix;
    last.sealed.header.random_reveal = reveal.0;
    last.sealed.header.mix = kaon::consensus::selection::next_mix(mix_before, &reveal);
    seal(last, &set, &keys, mix_before, &[0, 1, 2]);
    assert_eq!(
        audit(&set, &wrong_reveal),
        AuditOutcome {
            passed: 5,
            failure: Some((5, AuditError::Reveal))
        }
    );

    // A reveal that is not a signature over the height at all.
    let mut bad_reveal = chain.clone();
    let proposer = bad_reveal[4].header().proposer.0 as usize;
    bad_reveal[4].sealed.header.random_reveal =
        keys[(proposer + 1) % 4].sign(b"not a reveal").to_bytes();
    let outcome = audit(&set, &bad_reveal);
    assert_eq!(outcome.passed, 4);
    // The mix no longer matches the reveal: caught by the header walk before any signature.
    assert_eq!(outcome.failure, Some((4, AuditError::Header("mix"))));

    // A broken link.
    let mut unlinked = chain.clone();
    unlinked[1].sealed.header.parent = BlockHash(sha256(b"elsewhere"));
    let outcome = audit(&set, &unlinked);
    assert_eq!(outcome.passed, 1);
    assert_eq!(outcome.failure, Some((1, AuditError::Header("parent"))));
}

#[test]
fn a_claimed_head_is_believed_only_with_its_certificate() {
    let (keys, set) = four_cns();
    let chain = crafted_chain(&keys, &set, crafted_genesis(), 6);
    let (parent, block) = (&chain[4], &chain[5]);
    assert_eq!(verify_head(&params(), &set, parent, block), Ok(()));

    // A quorum that signed another hash.
    let mut forged = block.clone();
    let mut other = block.clone();
    other.sealed.header.timestamp_ms += 1;
    seal(&mut other, &set, &keys, parent.header().mix, &[0, 1, 2]);
    forged.sealed.seal = other.sealed.seal;
    let refused = verify_head(&params(), &set, parent, &forged).unwrap_err();
    assert!(
        matches!(refused, HeadClaimError::Certificate(_)),
        "{refused}"
    );
    assert!(refused.blames_peer());

    // Two of four signers.
    let mut short = block.clone();
    seal(&mut short, &set, &keys, parent.header().mix, &[0, 1]);
    assert!(matches!(
        verify_head(&params(), &set, parent, &short),
        Err(HeadClaimError::Certificate(_))
    ));

    // A "parent" that is not the block's: the committee would be drawn from the wrong mix.
    assert_eq!(
        verify_head(&params(), &set, &chain[3], block),
        Err(HeadClaimError::NotParent)
    );

    // Certified by a set this node does not know: not trusted, but no lie either.
    let strangers: Vec<SecretKey> = (10..14).map(cn_key).collect();
    let other_set = CnSet::new(strangers.iter().map(SecretKey::public_key).collect()).unwrap();
    let unknown = verify_head(&params(), &other_set, parent, block).unwrap_err();
    assert_eq!(unknown, HeadClaimError::OtherSet);
    assert!(!unknown.blames_peer());
}

#[test]
fn evidence_needs_two_quorums_or_a_double_vote_in_one_round() {
    let (keys, set) = four_cns();
    let genesis = crafted_genesis();
    let chain = crafted_chain(&keys, &set, genesis, 1);
    let canonical = &chain[0];
    let twin_of = |signers: &[usize], round: u32| {
        let mut twin = canonical.clone();
        twin.sealed.header.timestamp_ms += 1;
        twin.sealed.seal.round = Round(round);
        seal(&mut twin, &set, &keys, genesis.mix, signers);
        EquivocationEvidence::new(canonical.sealed.clone(), twin.sealed).unwrap()
    };

    // CN at position 1 signs a second block in the same round: provable alone.
    let double = check_evidence(&params(), &set, genesis.mix, &twin_of(&[1], 0)).unwrap();
    assert!(double.same_round && !double.conflicting_quorums);
    assert_eq!(double.in_both, vec![CnIndex(1)]);

    // Two full quorums in different rounds: two final blocks at one height.
    let finality = check_evidence(&params(), &set, genesis.mix, &twin_of(&[1, 2, 3], 1)).unwrap();
    assert!(finality.conflicting_quorums && !finality.same_round);

    // A lone vote in another round proves nothing.
    assert_eq!(
        check_evidence(&params(), &set, genesis.mix, &twin_of(&[3], 1)),
        Err(EvidenceError::NothingProven)
    );

    // A seal that does not verify is no evidence, whoever it names.
    let mut forged = twin_of(&[1], 0);
    forged.second.seal.aggregate = keys[1].sign(b"something else").to_bytes();
    assert!(matches!(
        check_evidence(&params(), &set, genesis.mix, &forged),
        Err(EvidenceError::Seal {
            which: "second",
            ..
        })
    ));
}

#[test]
fn far_future_evidence_is_not_queued_and_waiting_evidence_is_bounded() {
    let (keys, set) = four_cns();
    let block = crafted_chain(&keys, &set, crafted_genesis(), 1).remove(0);
    // A conflicting pair at `height` (never verified here; the queue must not need it to be),
    // its second header padded with `pad` announced keys.
    let at = |height: u64, salt: u64, pad: usize| {
        let (mut a, mut b) = (block.sealed.clone(), block.sealed.clone());
        a.header.height = Height(height);
        b.header.height = Height(height);
        b.header.timestamp_ms += 1 + salt;
        b.header.next_cn_set = vec![kaon::crypto::bls::PublicKeyBytes([7; 48]); pad];
        EquivocationEvidence::new(a, b).unwrap()
    };
    let next = Height(10);
    let edge = next.0 + PENDING_EVIDENCE_WINDOW;
    let mut pending = PendingEvidence::new();
    assert_eq!(pending.offer(next, 1, at(edge + 1, 0, 0)), Deferral::TooFar);
    assert_eq!(pending.offer(next, 1, at(u64::MAX, 0, 0)), Deferral::TooFar);
    assert!(pending.is_empty());
    assert_eq!(pending.offer(next, 1, at(edge, 0, 0)), Deferral::Queued);
    // The same item again takes no second slot.
    assert_eq!(pending.offer(next, 1, at(edge, 0, 0)), Deferral::Queued);
    assert_eq!(pending.len(), 1);
    for salt in 1..MAX_PENDING_EVIDENCE as u64 {
        assert_eq!(pending.offer(next, 1, at(edge, salt, 0)), Deferral::Queued);
    }
    assert_eq!(pending.offer(next, 1, at(edge, 999, 0)), Deferral::Full);
    // An item closer to being checked displaces one at the window's edge.
    assert_eq!(
        pending.offer(next, 2, at(next.0 + 1, 0, 0)),
        Deferral::Queued
    );
    assert_eq!(pending.len(), MAX_PENDING_EVIDENCE);
    assert!(pending.take_ready(next).is_empty());
    let ready = pending.take_ready(next.next());
    assert_eq!(ready.len(), 1);
    assert_eq!((ready[0].0, ready[0].1.height()), (2, next.next()));
    assert_eq!(pending.len(), MAX_PENDING_EVIDENCE - 1);

    // Big items hit the byte bound long before the count bound.
    let mut pending = PendingEvidence::new();
    let mut salt = 0;
    while pending.offer(next, 1, at(edge, salt, 20_000)) == Deferral::Queued {
        salt += 1;
    }
    assert!(
        pending.len() < MAX_PENDING_EVIDENCE / 2,
        "{}",
        pending.len()
    );
    assert!(pending.bytes() <= MAX_PENDING_EVIDENCE_BYTES);
}

/// Re-seals `body` (version, kind, payload) with a valid checksum, so decoders must parse it.
fn sealed(body: &[u8]) -> Vec<u8> {
    let mut frame = body.to_vec();
    frame.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    frame
}

/// One valid frame of every kind an RN reads from peers (built once).
fn rn_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(build_rn_frames)
}

fn build_rn_frames() -> Vec<Vec<u8>> {
    let (keys, set) = four_cns();
    let chain = crafted_chain(&keys, &set, crafted_genesis(), 1);
    let mut twin = chain[0].clone();
    twin.sealed.header.timestamp_ms += 1;
    let evidence = EquivocationEvidence::new(chain[0].sealed.clone(), twin.sealed).unwrap();
    let request = BlockRangeRequest {
        from: Height(1),
        max_blocks: 8,
        max_bytes: 1 << 20,
        wait_ms: 0,
    };
    let response = BlockRangeResponse {
        head: Height(1),
        blocks: chain.clone(),
    };
    vec![
        encode_frame(&chain[0]),
        encode_frame(&evidence),
        encode_frame(&request),
        encode_frame(&response),
    ]
}

#[test]
fn sync_messages_round_trip_and_responses_must_fit_their_request() {
    let (keys, set) = four_cns();
    let chain = crafted_chain(&keys, &set, crafted_genesis(), 3);
    let request = BlockRangeRequest {
        from: Height(1),
        max_blocks: 2,
        max_bytes: 1 << 20,
        wait_ms: 100,
    };
    assert_eq!(
        decode_frame::<BlockRangeRequest>(&encode_frame(&request)),
        Ok(request)
    );
    let fitting = BlockRangeResponse {
        head: Height(3),
        blocks: chain[..2].to_vec(),
    };
    assert_eq!(
        decode_frame::<BlockRangeResponse>(&encode_frame(&fitting)).as_ref(),
        Ok(&fitting)
    );
    assert!(fitting.fits(&request));
    let too_many = BlockRangeResponse {
        head: Height(3),
        blocks: chain.clone(),
    };
    assert!(!too_many.fits(&request));
    let skipping = BlockRangeResponse {
        head: Height(3),
        blocks: vec![chain[0].clone(), chain[2].clone()],
    };
    assert!(!skipping.fits(&request));
    // Gossip decodes blocks and evidence, and nothing else.
    assert!(matches!(
        decode_gossip(&encode_frame(&chain[0])),
        Ok(Gossip::Block(_))
    ));
    assert!(decode_gossip(&encode_frame(&request)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rn_decoders_never_panic_on_edited_frames(
        which in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let frame = &rn_frames()[which];
        let mut body = frame[..frame.len() - 4].to_vec();
        for (at, byte, op) in edits {
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => body.truncate(i.max(2)),
            }
        }
        let frame = sealed(&body);
        let _ = decode_gossip(&frame);
        let _ = decode_frame::<BlockRangeRequest>(&frame);
        if let Ok(response) = decode_frame::<BlockRangeResponse>(&frame) {
            // Whatever decodes re-encodes to the same response.
            prop_assert_eq!(decode_frame::<BlockRangeResponse>(&encode_frame(&response)), Ok(response));
        }
    }
}

// ---------------------------------------------------------------- real nodes over QUIC

pub(crate) struct Cluster {
    pub(crate) rt: Runtime,
    pub(crate) cns: Vec<CnNode>,
    pub(crate) genesis: Genesis,
    pub(crate) keys: Vec<SecretKey>,
}

impl Cluster {
    /// Four CNs with one funded development account on one servicechain.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {})
    }

    /// [`Cluster::start`] with genesis settings changed by `tweak`.
    pub(crate) fn start_with(dir: &Path, tweak: impl FnOnce(&mut Genesis)) -> Self {
        Self::start_custom(dir, tweak, |_| {})
    }

    /// [`Cluster::start`] with every CN's network settings changed by `tweak_net`.
    pub(crate) fn start_net(dir: &Path, tweak_net: impl Fn(&mut NetConfig)) -> Self {
        Self::start_custom(dir, |_| {}, tweak_net)
    }

    fn start_custom(
        dir: &Path,
        tweak: impl FnOnce(&mut Genesis),
        tweak_net: impl Fn(&mut NetConfig),
    ) -> Self {
        let keys: Vec<SecretKey> = (0..4).map(cn_key).collect();
        let accounts = [dev_account(0).address];
        let mut genesis = Genesis::new(
            REGION,
            &keys,
            1,
            &accounts,
            U256::from(10u64).pow(U256::from(24u64)),
            150,
            COMMITTEE,
        );
        tweak(&mut genesis);
        let rt = runtime();
        let specs = (0..4)
            .map(|i| {
                let mut net = NetConfig::new(localhost());
                tweak_net(&mut net);
                CnSpec::from_genesis(
                    &genesis,
                    CnIndex(i as u32),
                    keys[i].clone(),
                    dir.join(format!("cn{i}")),
                    net,
                )
                .unwrap()
            })
            .collect();
        let cns = start_cluster(rt.handle(), specs, |_| Box::new(|_| {})).unwrap();
        Self {
            rt,
            cns,
            genesis,
            keys,
        }
    }

    /// The lowest committed height across CNs.
    pub(crate) fn height(&self) -> u64 {
        self.cns
            .iter()
            .map(|n| n.consensus.height.load(Relaxed).saturating_sub(1))
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn peers(&self) -> Vec<CnPeer> {
        let addrs: Vec<_> = self
            .cns
            .iter()
            .map(|n| (n.me, n.net.local_addr().unwrap()))
            .collect();
        CnPeer::from_genesis(&self.genesis, &addrs).unwrap()
    }

    pub(crate) fn rn_config(
        &self,
        dir: &Path,
        name: &str,
        cns: Vec<CnPeer>,
        rns: Vec<SocketAddr>,
    ) -> RnConfig {
        let mut config = RnConfig::new(
            dir.join(name),
            self.genesis.clone(),
            node_key(name),
            localhost(),
        );
        config.cn_peers = cns;
        config.rn_peers = rns;
        config
    }

    pub(crate) fn shutdown(self) {
        for cn in self.cns {
            cn.shutdown().unwrap();
        }
        drop(self.rt);
    }
}

pub(crate) fn head(rn: &RnHandle) -> u64 {
    rn.head().0 .0
}

#[test]
fn forged_evidence_sent_first_does_not_get_the_real_evidence_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 3", || cluster.height() >= 3);
    let rn = RnNode::start(cluster.rn_config(dir.path(), "rn", cluster.peers(), vec![])).unwrap();
    wait_or_explain("the RN at height 2", || head(&rn) >= 2, || describe(&[&rn]));

    let canonical = rn.block_by_height(Height(2)).unwrap().unwrap();
    let equivocator = canonical.sealed.seal.signers.signers().next().unwrap();
    let twin = equivocate(&canonical, &cluster.keys, equivocator);
    let real = EquivocationEvidence::new(canonical.sealed.clone(), twin.sealed.clone()).unwrap();
    // The real headers under a seal that does not verify: the same conflict id.
    let mut junk = real.clone();
    junk.second.seal.aggregate = cluster.keys[equivocator].sign(b"junk").to_bytes();
    assert_eq!(junk.id(), real.id());
    assert_ne!(junk.digest(), real.digest());
    // A conflict far above anything the RN can check.
    let mut far = real.clone();
    let far_height = Height(head(&rn) + 1_000_000);
    far.first.header.height = far_height;
    far.second.header.height = far_height;

    let attacker = puppet(&cluster.rt, "attacker");
    attacker.connect_rn(rn.listen_addr());
    wait_until("the puppet connected to the RN", || {
        attacker.peer_count() == 1
    });
    // One stream per peer keeps the order: far, then junk, then the real evidence.
    assert_eq!(attacker.gossip(Arc::new(encode_frame(&far)), None), 1);
    assert_eq!(attacker.gossip(Arc::new(encode_frame(&junk)), None), 1);
    wait_or_explain(
        "the junk refused",
        || rn.evidence_counts().refused >= 1,
        || describe(&[&rn]),
    );
    assert_eq!(
        rn.evidence_counts().pending,
        0,
        "far-future evidence queued"
    );
    assert!(rn.evidence().is_empty());

    assert_eq!(attacker.gossip(Arc::new(encode_frame(&real)), None), 1);
    wait_or_explain(
        "the real evidence accepted after the junk",
        || rn.evidence().len() == 1,
        || describe(&[&rn]),
    );
    let held = &rn.evidence()[0];
    assert_eq!(held.evidence.digest(), real.digest());
    assert_eq!(held.finding.in_both, vec![CnIndex(equivocator as u32)]);

    attacker.close();
    rn.shutdown().unwrap();
    cluster.shutdown();
}

/// An RN endpoint driven by the test: it gossips whatever the test hands it.
fn puppet(rt: &Runtime, name: &str) -> RnNetwork {
    let (tx, _rx) = link("puppet_inbox", 64);
    // The inbox is dropped: whatever the puppet receives is discarded.
    RnNetwork::bind(
        rt.handle(),
        RnNetConfig::new(localhost()),
        node_key(name),
        tx,
    )
    .unwrap()
}

fn transfer(nonce: u64) -> Bytes {
    let tx = Transaction::Eip1559(Eip1559Tx {
        chain_id: ChainId(REGION.0 + 1),
        nonce,
        max_priority_fee_per_gas: 1,
        max_fee_per_gas: 1_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(0x5a)),
        value: U256::from(7u64),
        input: Bytes::new(),
        access_list: Default::default(),
    });
    tx.sign(&dev_account(0).secret).unwrap().raw().clone()
}

/// A second block at `canonical`'s height and seal round, signed by the CN at committee
/// position `pos` alone: that CN equivocated.
fn equivocate(canonical: &Block, keys: &[SecretKey], pos: usize) -> Block {
    let mut twin = canonical.clone();
    twin.sealed.header.timestamp_ms += 1;
    let (height, round) = (twin.header().height, twin.sealed.seal.round);
    let msg = Vote::signing_message(VoteKind::Commit, height, round, twin.hash());
    let mut signers = SignerBitmap::with_members(keys.len());
    signers.set(pos);
    twin.sealed.seal.signers = signers;
    // With four CNs every CN is on the committee, at the position of its index.
    twin.sealed.seal.aggregate = keys[pos].sign(&msg).to_bytes();
    twin
}

#[test]
fn three_rns_in_a_line_catch_up_follow_relay_evidence_and_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 4", || cluster.height() >= 4);

    // RN1 and RN2 fetch from the CNs; RN3 only knows RN2: CN → RN1 — RN2 — RN3.
    let rn1 = RnNode::start(cluster.rn_config(dir.path(), "rn1", cluster.peers(), vec![])).unwrap();
    let rn2 = RnNode::start(cluster.rn_config(
        dir.path(),
        "rn2",
        cluster.peers(),
        vec![rn1.listen_addr()],
    ))
    .unwrap();
    let rn3_config = cluster.rn_config(dir.path(), "rn3", vec![], vec![rn2.listen_addr()]);
    let rn3 = RnNode::start(rn3_config.clone()).unwrap();
    let target = cluster.height() + 2;
    let rns = [&rn1, &rn2, &rn3];
    wait_or_explain(
        "every RN past the CNs' height at start",
        || rns.iter().all(|rn| head(rn) >= target),
        || describe(&rns),
    );

    // Every RN holds the CNs' blocks, all audited, none refused.
    let decided = cluster.cns[0].consensus.recent_hashes();
    for (i, rn) in rns.iter().enumerate() {
        for (height, hash) in decided.range(..=Height(head(rn))) {
            let block = rn.block_by_height(*height).unwrap().expect("stored block");
            assert_eq!(block.hash(), *hash, "RN {} at height {height}", i + 1);
            assert_eq!(
                rn.block_by_hash(hash).unwrap().map(|b| b.header().height),
                Some(*height)
            );
        }
        assert!(
            rn.rejected().is_empty(),
            "RN {}: {:?}",
            i + 1,
            rn.rejected()
        );
        let status = rn.sync_status();
        assert_eq!(status.started_at, Height(0));
        assert!(status.head.0 >= target);
    }
    // RN3's only peer is RN2: everything it holds came through the RN network.
    assert_eq!(rn3.peer_count(), 1);

    // A transaction forwarded by RN1 reaches a CN, is committed, and is indexed by RN3.
    let tx = transfer(0);
    assert!(
        rn3.forward_txs(vec![tx.clone()]).is_err(),
        "RN3 has no CN link"
    );
    assert!(rn1.forward_txs(vec![tx.clone()]).unwrap() >= 1);
    let tx_hash = keccak256(&tx).0;
    wait_until("the forwarded transaction in RN3's index", || {
        rn3.store().tx_location(&tx_hash).unwrap().is_some()
    });

    // A CN that sealed block 2 signs a second block at height 2 in the seal's round; a puppet
    // RN hands it to RN1 only. RN1 turns it into evidence and the line relays it to RN3.
    let canonical = rn1.block_by_height(Height(2)).unwrap().unwrap();
    let equivocator = canonical.sealed.seal.signers.signers().next().unwrap();
    let twin = equivocate(&canonical, &cluster.keys, equivocator);
    let attacker = puppet(&cluster.rt, "attacker");
    attacker.connect_rn(rn1.listen_addr());
    wait_until("the puppet connected to RN1", || attacker.peer_count() == 1);
    assert_eq!(attacker.gossip(Arc::new(encode_frame(&twin)), None), 1);
    wait_or_explain(
        "the evidence at every RN",
        || rns.iter().all(|rn| rn.evidence().len() == 1),
        || describe(&rns),
    );
    let expected =
        EquivocationEvidence::new(canonical.sealed.clone(), twin.sealed.clone()).unwrap();
    for rn in rns {
        let held = &rn.evidence()[0];
        assert_eq!(held.id(), expected.id());
        assert_eq!(held.height(), Height(2));
        assert!(held.finding.same_round);
        assert_eq!(held.finding.in_both, vec![CnIndex(equivocator as u32)]);
        assert_eq!(held.to_json()["inBoth"], serde_json::json!([equivocator]));
    }
    // An RN that joins later, through RN3 only, is handed the evidence when it connects.
    let rn4 = RnNode::start(cluster.rn_config(dir.path(), "rn4", vec![], vec![rn3.listen_addr()]))
        .unwrap();
    wait_or_explain(
        "the evidence at the late RN",
        || rn4.evidence().len() == 1,
        || describe(&[&rn4]),
    );
    assert_eq!(rn4.evidence()[0].id(), expected.id());
    rn4.shutdown().unwrap();

    // The twin was not stored in place of the canonical block.
    assert_eq!(
        rn2.block_by_height(Height(2)).unwrap().unwrap().hash(),
        canonical.hash()
    );

    // RN3 stops and restarts on its datadir: it resumes from its height, keeps the evidence,
    // and never downloads a block it already had.
    // (It may store one more block between this read and the shutdown.)
    let stopped_at = head(&rn3);
    rn3.shutdown().unwrap();
    let rn3 = RnNode::start(rn3_config).unwrap();
    let started_at = rn3.sync_status().started_at;
    assert!(
        started_at == Height(stopped_at) || started_at == Height(stopped_at + 1),
        "resumed at {started_at}, stopped at {stopped_at}"
    );
    let stopped_at = started_at.0;
    assert_eq!(rn3.evidence().len(), 1, "evidence survives a restart");
    wait_until("the restarted RN3 two blocks further", || {
        head(&rn3) >= stopped_at + 2
    });
    let status = rn3.sync_status();
    assert!(
        status.first_fetched.is_none_or(|h| h.0 > stopped_at),
        "re-downloaded from {:?} after stopping at {stopped_at}",
        status.first_fetched
    );

    attacker.close();
    for rn in [rn1, rn2, rn3] {
        rn.shutdown().unwrap();
    }
    cluster.shutdown();
}

/// A raw authenticated RN connection to `to` with its open stream (hello already sent).
async fn raw_rn(
    to: SocketAddr,
    key: &SecretKey,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let endpoint = quinn::Endpoint::client(localhost()).unwrap();
    let conn = endpoint
        .connect_with(tls::client_config().unwrap(), to, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let mut stream = conn.open_uni().await.unwrap();
    let hello = handshake::hello(&conn, Credential::Rn(key), Side::Dialler).unwrap();
    stream.write_all(&hello).await.unwrap();
    (endpoint, conn, stream)
}

async fn write_frame(stream: &mut quinn::SendStream, frame: &[u8]) {
    stream
        .write_all(&(frame.len() as u32).to_le_bytes())
        .await
        .unwrap();
    stream.write_all(frame).await.unwrap();
}

fn closed_code(rt: &Runtime, conn: &quinn::Connection) -> u64 {
    match rt.block_on(async { tokio::time::timeout(DEADLINE, conn.closed()).await }) {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => close.error_code.into_inner(),
        other => panic!("expected the RN to close the connection, got {other:?}"),
    }
}

fn cn_source(net: &RnNetwork) -> Source {
    *net.sources().first().expect("a connected CN")
}

#[test]
fn forged_and_short_certificates_are_rejected_and_garbage_costs_the_peer_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 3", || cluster.height() >= 3);

    // The CNs' block server, through a puppet RN: bounded ranges from the block log.
    let puppet = puppet(&cluster.rt, "puppet");
    let cn0 = cluster.peers()[0];
    puppet.connect_cn(
        cn0.addr,
        kaon::crypto::bls::PublicKey::try_from(&cn0.key).unwrap(),
    );
    wait_until("the puppet connected to CN 0", || {
        puppet.sources().len() == 1
    });
    let source = cn_source(&puppet);
    let ask = |from: u64, max_blocks: u32, max_bytes: u32, wait_ms: u32| {
        let request = BlockRangeRequest {
            from: Height(from),
            max_blocks,
            max_bytes,
            wait_ms,
        };
        cluster
            .rt
            .block_on(puppet.request_blocks(source.id, &request))
            .unwrap()
    };
    let two = ask(1, 2, 1 << 20, 0);
    let heights: Vec<u64> = two.blocks.iter().map(|b| b.header().height.0).collect();
    assert_eq!(heights, vec![1, 2]);
    assert!(two.head.0 >= 3);
    assert_eq!(
        ask(1, 100, 1, 0).blocks.len(),
        1,
        "the first block always fits"
    );
    assert!(
        ask(0, 10, 1 << 20, 0).blocks.is_empty(),
        "genesis is not served"
    );
    let next = two.head.0 + 1;
    let waited = ask(next, 1, 1 << 20, 5_000);
    assert_eq!(
        waited.blocks.first().map(|b| b.header().height.0),
        Some(next),
        "long poll"
    );
    let (block1, block2) = (two.blocks[0].clone(), two.blocks[1].clone());

    // An RN with no CN: only the puppet feeds it.
    let victim = RnNode::start(cluster.rn_config(dir.path(), "victim", vec![], vec![])).unwrap();
    puppet.connect_rn(victim.listen_addr());
    wait_until("the puppet connected to the victim", || {
        puppet.sources().len() == 2
    });
    let feed = |block: &Block| assert_eq!(puppet.gossip(Arc::new(encode_frame(block)), None), 1);

    // Short: two of four signers.
    let mut short = block1.clone();
    seal(
        &mut short,
        &CnSet::from_bytes(&cluster_keys(&cluster)).unwrap(),
        &cluster.keys,
        cluster.genesis.mix,
        &[0, 1],
    );
    feed(&short);
    wait_until("the short certificate rejected", || {
        victim.rejected().len() == 1
    });
    // Forged: a quorum of real keys, but over another block's hash.
    let mut forged = block1.clone();
    let mut other = block1.clone();
    other.sealed.header.timestamp_ms += 1;
    seal(
        &mut other,
        &CnSet::from_bytes(&cluster_keys(&cluster)).unwrap(),
        &cluster.keys,
        cluster.genesis.mix,
        &[0, 1, 2],
    );
    forged.sealed.seal = other.sealed.seal;
    feed(&forged);
    wait_until("the forged certificate rejected", || {
        victim.rejected().len() == 2
    });
    let rejected = victim.rejected();
    assert!(
        rejected
            .iter()
            .all(|r| r.kind == "certificate" && r.height == Height(1)),
        "{rejected:?}"
    );
    assert!(
        rejected[0].reason.contains("short of the quorum"),
        "{}",
        rejected[0].reason
    );
    assert!(
        rejected[1].reason.contains("does not verify"),
        "{}",
        rejected[1].reason
    );
    assert_eq!(head(&victim), 0, "nothing of a rejected block is stored");
    assert!(victim.block_by_height(Height(1)).unwrap().is_none());
    assert!(victim.block_by_hash(&block1.hash()).unwrap().is_none());

    // Garbage from an authenticated RN: eight bad frames and the connection is closed.
    let garbage_key = node_key("garbage");
    let (_endpoint, conn, mut stream) = cluster
        .rt
        .block_on(raw_rn(victim.listen_addr(), &garbage_key));
    cluster.rt.block_on(async {
        for i in 0..8u8 {
            write_frame(&mut stream, &[i; 64]).await;
        }
    });
    assert_eq!(closed_code(&cluster.rt, &conn), 2, "closed for bad frames");
    // A bad block request is a strike too (on a fresh connection).
    let (_endpoint2, conn2, _stream2) = cluster
        .rt
        .block_on(raw_rn(victim.listen_addr(), &garbage_key));
    cluster.rt.block_on(async {
        for _ in 0..8 {
            if let Ok((mut send, _recv)) = conn2.open_bi().await {
                let _ = send.write_all(&[0xff; 32]).await;
                let _ = send.finish();
            }
        }
    });
    assert_eq!(
        closed_code(&cluster.rt, &conn2),
        2,
        "closed for bad requests"
    );
    // No hello at all.
    let stranger = cluster.rt.block_on(async {
        let endpoint = quinn::Endpoint::client(localhost()).unwrap();
        let conn = endpoint
            .connect_with(
                tls::client_config().unwrap(),
                victim.listen_addr(),
                tls::SERVER_NAME,
            )
            .unwrap()
            .await
            .unwrap();
        let mut stream = conn.open_uni().await.unwrap();
        stream.write_all(&[0xff; 200]).await.unwrap();
        (endpoint, conn, stream)
    });
    assert_eq!(
        closed_code(&cluster.rt, &stranger.1),
        1,
        "closed at the handshake"
    );

    // Re-execution: a quorum of real keys (a Byzantine quorum) over a header whose state
    // commitment the block does not produce.
    let mut diverged = block1.clone();
    diverged.sealed.header.segments[0].state_root = alloy_primitives::B256::repeat_byte(0x5a);
    seal(
        &mut diverged,
        &CnSet::from_bytes(&cluster_keys(&cluster)).unwrap(),
        &cluster.keys,
        cluster.genesis.mix,
        &[0, 1, 2],
    );
    feed(&diverged);
    wait_until("the block that does not re-execute rejected", || {
        victim.rejected().len() == 3
    });
    let rejected = victim.rejected();
    assert_eq!(rejected[2].kind, "execution", "{rejected:?}");
    assert_eq!(
        head(&victim),
        0,
        "nothing of a block that fails re-execution is stored"
    );

    // The victim still audits and stores the real blocks.
    feed(&block1);
    wait_until("the real block 1 stored", || head(&victim) == 1);
    feed(&block2);
    wait_until("the real block 2 stored", || head(&victim) == 2);
    assert_eq!(
        victim.block_by_height(Height(1)).unwrap().unwrap().hash(),
        block1.hash()
    );
    assert_eq!(victim.rejected().len(), 3);

    puppet.close();
    victim.shutdown().unwrap();
    cluster.shutdown();
}

fn cluster_keys(cluster: &Cluster) -> Vec<kaon::crypto::bls::PublicKeyBytes> {
    cluster
        .keys
        .iter()
        .map(|k| k.public_key().to_bytes())
        .collect()
}

/// A raw RN peer that answers every block request with `head` and no blocks (a peer lying
/// about how far the chain goes); the number of requests it answered.
fn serve_claims(rt: &Runtime, conn: quinn::Connection, head: Height) -> Arc<AtomicU64> {
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    rt.spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let mut len = [0u8; 4];
            if recv.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut request = vec![0u8; u32::from_le_bytes(len) as usize];
            if recv.read_exact(&mut request).await.is_err() {
                continue;
            }
            let claim = BlockRangeResponse {
                head,
                blocks: vec![],
            };
            write_frame(&mut send, &encode_frame(&claim)).await;
            let _ = send.finish();
            count.fetch_add(1, Relaxed);
        }
    });
    answered
}

#[test]
fn a_peer_claiming_an_unbacked_head_does_not_hold_the_rn_in_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 2", || cluster.height() >= 2);
    let rn = RnNode::start(cluster.rn_config(dir.path(), "rn", cluster.peers(), vec![])).unwrap();
    let (_endpoint, liar, _stream) = cluster
        .rt
        .block_on(raw_rn(rn.listen_addr(), &node_key("liar")));
    let answered = serve_claims(&cluster.rt, liar.clone(), Height(u64::MAX));
    wait_until("the RN asked the liar", || answered.load(Relaxed) >= 1);

    // The claim is never trusted: the RN follows the real chain and says so.
    let target = cluster.height() + 3;
    wait_or_explain(
        "the RN following past the CNs' height",
        || head(&rn) >= target,
        || describe(&[&rn]),
    );
    let status = rn.sync_status();
    assert!(
        status.highest_known.0 <= cluster.height() + 1,
        "an unbacked claim moved the sync target: {status:?}"
    );
    assert_eq!(status.phase, kaon::rn::SyncPhase::Following);
    // Claims it cannot back with a certified block are strikes: the liar is cut off.
    assert_eq!(
        closed_code(&cluster.rt, &liar),
        2,
        "closed for unbacked claims"
    );
    let later = head(&rn) + 2;
    wait_until("the RN still following", || head(&rn) >= later);

    rn.shutdown().unwrap();
    cluster.shutdown();
}

/// An authenticated RN connection to `to` from `local` (another loopback address is another
/// host to the listener).
async fn raw_rn_from(
    local: &str,
    to: SocketAddr,
    key: &SecretKey,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let endpoint = quinn::Endpoint::client(local.parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(tls::client_config().unwrap(), to, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let mut stream = conn.open_uni().await.unwrap();
    let hello = handshake::hello(&conn, Credential::Rn(key), Side::Dialler).unwrap();
    stream.write_all(&hello).await.unwrap();
    (endpoint, conn, stream)
}

#[test]
fn a_cn_bounds_rn_slots_per_key_and_per_address_and_cuts_off_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_secs(5);
    let cluster = Cluster::start_net(dir.path(), |net| {
        net.max_rn_per_address = 3;
        net.rn_idle_timeout = idle;
    });
    wait_until("the CNs at height 2", || cluster.height() >= 2);
    let cn0 = cluster.peers().remove(0);
    let honest = RnNode::start(cluster.rn_config(dir.path(), "honest", vec![cn0], vec![])).unwrap();
    wait_until("the honest RN syncing", || head(&honest) >= 1);
    // A quiet RN link (no sync driver: it never asks for blocks) lives on its heartbeats.
    let (tx, _rx) = link("quiet_inbox", 64);
    let mut quiet_config = RnNetConfig::new(localhost());
    quiet_config.cn_heartbeat = Duration::from_millis(200);
    let quiet = RnNetwork::bind(cluster.rt.handle(), quiet_config, node_key("quiet"), tx).unwrap();
    quiet.connect_cn(
        cn0.addr,
        kaon::crypto::bls::PublicKey::try_from(&cn0.key).unwrap(),
    );
    wait_until("the quiet link up", || quiet.sources().len() == 1);

    // One self-made key from another host: two connections, the third refused.
    let (to, rt) = (cn0.addr, &cluster.rt);
    let key = node_key("slot-holder");
    let cn_stats = cluster.cns[0].net.stats();
    let held = |n: u64| wait_until("the CN's RN slots", || cn_stats.rn_peers.load(Relaxed) == n);
    held(2);
    let first = rt.block_on(raw_rn_from("127.0.0.2:0", to, &key));
    let second = rt.block_on(raw_rn_from("127.0.0.2:0", to, &key));
    held(4);
    let third = rt.block_on(raw_rn_from("127.0.0.2:0", to, &key));
    assert_eq!(
        closed_code(rt, &third.1),
        3,
        "a third connection of one key"
    );
    // Fresh keys from the same host: one more fits the per-address bound, then none.
    let other = rt.block_on(raw_rn_from("127.0.0.2:0", to, &node_key("sybil-1")));
    held(5);
    let over = rt.block_on(raw_rn_from("127.0.0.2:0", to, &node_key("sybil-2")));
    assert_eq!(
        closed_code(rt, &over.1),
        3,
        "a fourth connection from one address"
    );

    // The admitted ones never use their slots: cut off once idle, code 4.
    for (_, conn, _) in [&first, &second, &other] {
        assert_eq!(closed_code(rt, conn), 4, "an idle RN connection");
    }
    // The honest RN and the quiet link (connected before the idle ones, so idle at least as
    // long) kept their connections throughout.
    let later = head(&honest) + 3;
    wait_until("the honest RN still following", || head(&honest) >= later);
    assert_eq!(
        honest.net_stats().connects.load(Relaxed),
        1,
        "never reconnected"
    );
    assert_eq!(
        quiet.stats().connects.load(Relaxed),
        1,
        "heartbeats kept it"
    );
    let cn_stats = cluster.cns[0].net.stats();
    wait_until("only the honest RNs hold slots", || {
        cn_stats.rn_peers.load(Relaxed) == 2
    });

    quiet.close();
    honest.shutdown().unwrap();
    cluster.shutdown();
}

/// A node that shuts down tells its peers at once, so a key restarted on a new address (where
/// no stateless reset reaches the old connections) several times in a row is admitted each
/// time: the per-key bound (two) counts live connections, not ones the peer still waits out.
#[test]
fn a_key_restarted_several_times_in_a_row_is_admitted_each_time() {
    let rt = runtime();
    let host = puppet(&rt, "restart-host");
    let to = host.local_addr().unwrap();
    // Half the QUIC idle timeout: a slot freed only by that timeout arrives too late.
    let within = Duration::from_secs(5);
    for restart in 0..4 {
        // Each run of the guest owns its runtime, which goes with it as a node's does.
        let guest_rt = runtime();
        let guest = puppet(&guest_rt, "restart-guest");
        guest.connect_rn(to);
        wait_until(&format!("restart {restart} admitted"), || {
            host.peer_count() == 1 && guest.peer_count() == 1
        });
        guest.close();
        drop(guest);
        drop(guest_rt);
        let closed = Instant::now();
        while host.peer_count() != 0 {
            assert!(
                closed.elapsed() < within,
                "restart {restart}: the host still holds the closed connection"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(host.stats().rejected_handshakes.load(Relaxed), 0);
    host.close();
}

#[test]
fn strangers_filling_every_rn_slot_do_not_eclipse_the_configured_peers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 2", || cluster.height() >= 2);
    // The configured peer's address, taken before it runs.
    let reserved = std::net::UdpSocket::bind(localhost()).unwrap();
    let peer_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let mut config = cluster.rn_config(dir.path(), "victim", vec![], vec![peer_addr]);
    config.net.max_peers = 2;
    let victim = RnNode::start(config).unwrap();

    // Two strangers take both slots (from another host, each with its own key); a third is
    // refused.
    let rt = &cluster.rt;
    let to = victim.listen_addr();
    let _a = rt.block_on(raw_rn_from("127.0.0.2:0", to, &node_key("eclipse-a")));
    let _b = rt.block_on(raw_rn_from("127.0.0.3:0", to, &node_key("eclipse-b")));
    wait_until("both strangers admitted", || victim.peer_count() == 2);
    let c = rt.block_on(raw_rn_from("127.0.0.4:0", to, &node_key("eclipse-c")));
    assert_eq!(closed_code(rt, &c.1), 3, "no slot left for strangers");

    // The configured peer comes up: the victim reaches it anyway and syncs through it.
    let mut peer_config = cluster.rn_config(dir.path(), "peer", cluster.peers(), vec![]);
    peer_config.net.listen = peer_addr;
    let peer = RnNode::start(peer_config).unwrap();
    let target = cluster.height() + 2;
    wait_or_explain(
        "the victim syncing through its configured peer",
        || head(&victim) >= target,
        || describe(&[&victim, &peer]),
    );

    victim.shutdown().unwrap();
    peer.shutdown().unwrap();
    cluster.shutdown();
}

#[test]
fn a_cn_reads_rn_frames_with_the_transaction_batch_limit_not_the_consensus_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 2", || cluster.height() >= 2);
    let cn0 = cluster.peers().remove(0);
    let honest = RnNode::start(cluster.rn_config(dir.path(), "honest", vec![cn0], vec![])).unwrap();
    wait_until("the honest RN syncing", || head(&honest) >= 1);

    // One frame just over the 8 MiB `TxBatch` limit (far under the consensus limit): a single
    // such frame costs the connection, where one undecodable frame would be one strike of eight.
    let (_endpoint, conn, mut stream) = cluster.rt.block_on(raw_rn_from(
        "127.0.0.2:0",
        cn0.addr,
        &node_key("big-frames"),
    ));
    let oversize = vec![0u8; kaon::net::RN_FRAME_LIMIT + 1];
    cluster.rt.block_on(async {
        let _ = tokio::time::timeout(DEADLINE, async {
            stream
                .write_all(&(oversize.len() as u32).to_le_bytes())
                .await?;
            stream.write_all(&oversize).await
        })
        .await;
    });
    assert_eq!(
        closed_code(&cluster.rt, &conn),
        2,
        "closed for an oversize frame"
    );
    let later = head(&honest) + 2;
    wait_until("the honest RN still following", || head(&honest) >= later);

    honest.shutdown().unwrap();
    cluster.shutdown();
}

#[test]
fn a_hello_arriving_when_every_check_slot_is_busy_is_refused_not_queued() {
    let rt = runtime();
    // No check slot at all: every stranger's hello finds the pool busy.
    let (tx, _rx) = link("busy_inbox", 64);
    let mut config = RnNetConfig::new(localhost());
    config.max_hello_checks = 0;
    let busy = RnNetwork::bind(rt.handle(), config, node_key("busy"), tx).unwrap();
    let (_endpoint, conn, _stream) =
        rt.block_on(raw_rn(busy.local_addr().unwrap(), &node_key("caller")));
    assert_eq!(closed_code(&rt, &conn), 5, "refused as busy");
    assert_eq!(busy.stats().rejected_handshakes.load(Relaxed), 1);
    assert_eq!(busy.peer_count(), 0);

    // With a slot, the same hello is checked (off the async workers) and admitted.
    let (tx, _rx) = link("open_inbox", 64);
    let open = RnNetwork::bind(
        rt.handle(),
        RnNetConfig::new(localhost()),
        node_key("open"),
        tx,
    )
    .unwrap();
    let (_endpoint2, _conn2, _stream2) =
        rt.block_on(raw_rn(open.local_addr().unwrap(), &node_key("caller")));
    wait_until("the caller admitted", || open.peer_count() == 1);
    busy.close();
    open.close();
}

/// Blocks `1..=n` as CN 0 serves them, fetched through a puppet RN.
fn cn_blocks(cluster: &Cluster, n: u64) -> Vec<Block> {
    let puppet = puppet(&cluster.rt, "fetcher");
    let cn0 = cluster.peers()[0];
    puppet.connect_cn(
        cn0.addr,
        kaon::crypto::bls::PublicKey::try_from(&cn0.key).unwrap(),
    );
    wait_until("the fetcher connected to CN 0", || {
        puppet.sources().len() == 1
    });
    let source = cn_source(&puppet);
    let mut blocks: Vec<Block> = Vec::new();
    while (blocks.len() as u64) < n {
        let request = BlockRangeRequest {
            from: Height(blocks.len() as u64 + 1),
            max_blocks: (n - blocks.len() as u64) as u32,
            max_bytes: 1 << 20,
            wait_ms: 0,
        };
        let answer = cluster
            .rt
            .block_on(puppet.request_blocks(source.id, &request))
            .unwrap();
        assert!(
            !answer.blocks.is_empty(),
            "CN 0 holds block {}",
            request.from
        );
        blocks.extend(answer.blocks);
    }
    puppet.close();
    blocks
}

/// `blocks` in a block log and index of their own under `dir`, served by a new puppet RN.
fn serve(cluster: &Cluster, dir: &Path, blocks: &[Block]) -> (RnNetwork, BlockLog) {
    let options = kaon::storage::blocklog::BlockLogOptions {
        preallocate_bytes: 0,
        ..Default::default()
    };
    let (mut log, _) = BlockLog::open(dir.join("blocks.log"), options).unwrap();
    let store = Arc::new(Store::open(dir.join("db")).unwrap());
    let frames: Vec<Vec<u8>> = blocks.iter().map(encode_frame).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    for (b, offset) in blocks.iter().zip(log.append_batch(&refs).unwrap()) {
        store
            .index_block(&BlockIndex {
                height: b.header().height.0,
                hash: b.hash().0 .0,
                log_offset: offset.0,
                txs: &[],
            })
            .unwrap();
    }
    let server = puppet(&cluster.rt, "server");
    server.serve_blocks(BlockServer::new(ChainReader::new(log.reader(), store)).unwrap());
    (server, log)
}

/// A range fetched in one request whose 20th block carries a quorum's certificate but does not
/// re-execute: the 19 before it are stored (the first 16 in one write as the range is applied,
/// the other 3 when the failure stops it), the 20th is refused as `execution`, and nothing
/// from it on is stored.
#[test]
fn a_range_is_stored_up_to_the_block_that_fails_re_execution() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    wait_until("the CNs at height 24", || cluster.height() >= 24);
    let mut blocks = cn_blocks(&cluster, 24);
    let bad = 19; // height 20
    let parent_mix = blocks[bad - 1].header().mix;
    blocks[bad].sealed.header.segments[0].state_root = alloy_primitives::B256::repeat_byte(0x5a);
    seal(
        &mut blocks[bad],
        &CnSet::from_bytes(&cluster_keys(&cluster)).unwrap(),
        &cluster.keys,
        parent_mix,
        &[0, 1, 2],
    );
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let (server, _log) = serve(&cluster, &served, &blocks);

    let victim = RnNode::start(cluster.rn_config(
        dir.path(),
        "victim",
        vec![],
        vec![server.local_addr().unwrap()],
    ))
    .unwrap();
    wait_until("the block that does not re-execute rejected", || {
        !victim.rejected().is_empty()
    });
    let rejected = victim.rejected();
    assert_eq!(rejected[0].kind, "execution", "{rejected:?}");
    assert_eq!(rejected[0].height, Height(20), "{rejected:?}");
    assert_eq!(head(&victim), 19);
    for block in &blocks[..bad] {
        let stored = victim.block_by_height(block.header().height).unwrap();
        assert_eq!(stored.map(|b| b.hash()), Some(block.hash()));
    }
    assert!(victim.block_by_height(Height(20)).unwrap().is_none());

    server.close();
    victim.shutdown().unwrap();
    cluster.shutdown();
}
