//! Compact proposals. A CN receives every transaction by gossip before a proposal names it, so
//! the proposal need not carry it a second time: the proposer broadcasts its block's header and
//! its transactions' ids ([`CompactProposal`]), and each receiver fills it from its own pool
//! into the [`Proposal`] the consensus machine checks exactly as before. The header's
//! transaction roots bind every byte, so filling cannot change what is voted on: a wrong or
//! forged id yields a block whose roots do not match, refused like any bad proposal. What the
//! proposer did not take from its pool (a CN's system transactions) is carried whole, by
//! position ([`crate::types::CarriedTx`]): positions strictly ascending within the block, bytes
//! counted with the filled ones.
//!
//! A receiver missing some transactions (gossip still in ingress, or a transaction its pool
//! refused) looks again every [`FILL_RETRY`] for [`FILL_WAIT`], then asks the proposer for the
//! proposal in full ([`ProposalRequest`]), again every [`ASK_AGAIN`] while the round lasts; the
//! proposer keeps its last [`OWN_KEPT`] proposals and answers each peer at most
//! [`MAX_ANSWERS`] times for each. A proposer that never answers costs its round, as one that
//! sends nothing does.
//!
//! Bounds against a hostile peer: nothing is filled before the caller's admission check (the
//! link of the CN that signed it, that CN's valid signature, this node's current or next
//! height, and at the current height the round's proposer within the round window); ids are
//! distinct and fill at most [`MAX_BLOCK_BYTES`]; one proposal waits per peer and height, and
//! one for the next height waits unlooked-at until that height is current (and its proposer
//! known).

use crate::types::block::MAX_BLOCK_BYTES;
use crate::types::{
    Block, CarriedTx, CnIndex, CompactProposal, CompactSegment, Height, Proposal, ProposalRequest,
    Round, Segment,
};
use alloy_primitives::{Bytes, B256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a compact proposal waits for missing transactions before its proposer is asked for
/// it in full.
pub const FILL_WAIT: Duration = Duration::from_millis(20);
/// How often a waiting compact proposal is looked up again.
pub const FILL_RETRY: Duration = Duration::from_millis(2);
/// How long after asking for a proposal in full a node asks again (the answer may have been
/// dropped on a full queue or a broken link).
pub const ASK_AGAIN: Duration = Duration::from_millis(100);
/// This node's own proposals kept to answer [`ProposalRequest`]s.
pub const OWN_KEPT: usize = 8;
/// Times a peer is sent one kept proposal in full at most.
pub const MAX_ANSWERS: u8 = 3;
/// Transaction ids one compact proposal may name: a block's bytes in transactions of 64 bytes
/// (32 MiB of ids; a frame could carry four times as many).
pub const MAX_COMPACT_IDS: usize = MAX_BLOCK_BYTES / 64;

/// Why a compact proposal was dropped unfilled.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompactError {
    #[error("names {named} segments where its header commits to {committed}")]
    SegmentCount { named: usize, committed: usize },
    #[error("segment {0}: chain or transaction count differs from its header")]
    SegmentShape(usize),
    #[error(
        "not from its proposer's link with its valid signature, or for another height or round"
    )]
    Inadmissible,
    #[error("seen before, or a later round of its proposer waits")]
    Superseded,
    #[error("names more than {MAX_COMPACT_IDS} transactions")]
    TooMany,
    #[error("names a transaction twice")]
    RepeatedId,
    #[error("carries a transaction at position {0}: out of order or past the block's end")]
    CarriedPosition(u32),
    #[error("fills more than a block's {MAX_BLOCK_BYTES} bytes")]
    TooLarge,
}

/// The compact form of `p`, naming each transaction by `id`. What `pooled` (this node's pool,
/// one answer per id) does not hold is carried whole: a receiver would not hold it either, and
/// naming it would send the whole proposal again through the fall-back.
pub fn compact(
    p: &Proposal,
    id: impl Fn(&Bytes) -> B256,
    pooled: impl FnOnce(&[B256]) -> Vec<Option<Bytes>>,
) -> CompactProposal {
    let txs = || p.block.segments.iter().flat_map(|s| &s.txs);
    let ids: Vec<B256> = txs().map(id).collect();
    let held = pooled(&ids);
    let carried = (txs().zip(&held).enumerate())
        .filter(|(_, (_, held))| held.is_none())
        .map(|(position, (tx, _))| CarriedTx {
            // A block holds far fewer than 2^32 transactions.
            position: position as u32,
            tx: tx.clone(),
        })
        .collect();
    let mut ids = ids.into_iter();
    CompactProposal {
        round: p.round,
        proposer: p.proposer,
        signature: p.signature,
        sealed: p.block.sealed.clone(),
        segments: p
            .block
            .segments
            .iter()
            .map(|s| CompactSegment {
                chain_id: s.chain_id,
                tx_ids: ids.by_ref().take(s.txs.len()).collect(),
            })
            .collect(),
        justification: p.justification.clone(),
        carried,
    }
}

/// A compact proposal being filled from the pool: the transactions found so far.
#[derive(Debug)]
pub struct Filling {
    compact: CompactProposal,
    /// One per transaction of the block, in block order.
    txs: Vec<Option<Bytes>>,
    missing: usize,
    /// Bytes of the transactions found.
    bytes: usize,
    since: Instant,
    /// When the pool is looked at for it next, and the wait after that (doubling from
    /// [`FILL_RETRY`] up to [`ASK_AGAIN`]: a proposal whose transactions do not come costs
    /// fewer and fewer lookups).
    next_look: Instant,
    look_every: Duration,
    /// When its proposer was last asked for it in full.
    asked: Option<Instant>,
}

impl Filling {
    /// Starts filling `compact`, refusing one whose segments do not have the shape its header
    /// commits to (the ids then cannot be the block's).
    pub fn new(compact: CompactProposal, now: Instant) -> Result<Self, CompactError> {
        let committed = &compact.sealed.header.segments;
        if committed.len() != compact.segments.len() {
            return Err(CompactError::SegmentCount {
                named: compact.segments.len(),
                committed: committed.len(),
            });
        }
        for (i, (segment, c)) in compact.segments.iter().zip(committed).enumerate() {
            if segment.chain_id != c.chain_id || segment.tx_ids.len() != c.tx_count as usize {
                return Err(CompactError::SegmentShape(i));
            }
        }
        let count: usize = compact.segments.iter().map(|s| s.tx_ids.len()).sum();
        if count > MAX_COMPACT_IDS {
            return Err(CompactError::TooMany);
        }
        let mut seen = std::collections::HashSet::with_capacity(count);
        if !compact
            .segments
            .iter()
            .flat_map(|s| &s.tx_ids)
            .all(|id| seen.insert(id))
        {
            return Err(CompactError::RepeatedId);
        }
        let mut filling = Self {
            compact,
            txs: vec![None; count],
            missing: count,
            bytes: 0,
            since: now,
            next_look: now + FILL_RETRY,
            look_every: FILL_RETRY,
            asked: None,
        };
        filling.take_carried()?;
        Ok(filling)
    }

    /// Puts the carried transactions in their places: positions ascending and within the
    /// block, bytes within a block's.
    fn take_carried(&mut self) -> Result<(), CompactError> {
        let carried = std::mem::take(&mut self.compact.carried);
        let mut next = 0usize;
        for CarriedTx { position, tx } in carried {
            let slot = position as usize;
            if slot < next || slot >= self.txs.len() {
                return Err(CompactError::CarriedPosition(position));
            }
            next = slot + 1;
            self.bytes = self.bytes.saturating_add(tx.len());
            if self.bytes > MAX_BLOCK_BYTES {
                return Err(CompactError::TooLarge);
            }
            self.txs[slot] = Some(tx);
            self.missing -= 1;
        }
        Ok(())
    }

    /// Height and round of the proposal.
    pub fn key(&self) -> (Height, Round) {
        (self.compact.sealed.header.height, self.compact.round)
    }

    /// The compact proposal being filled.
    pub fn compact(&self) -> &CompactProposal {
        &self.compact
    }

    /// Looks up the transactions still missing in `pooled` (which answers one entry per id, in
    /// order); returns how many are still missing, or that they fill more than a block holds.
    pub fn fill(
        &mut self,
        pooled: impl FnOnce(&[B256]) -> Vec<Option<Bytes>>,
    ) -> Result<usize, CompactError> {
        if self.missing == 0 {
            return Ok(0);
        }
        let ids = self.compact.segments.iter().flat_map(|s| &s.tx_ids);
        let (slots, ids): (Vec<usize>, Vec<B256>) = ids
            .enumerate()
            .filter(|(i, _)| self.txs[*i].is_none())
            .map(|(i, id)| (i, *id))
            .unzip();
        for (slot, found) in slots.into_iter().zip(pooled(&ids)) {
            if let Some(tx) = found {
                self.bytes = self.bytes.saturating_add(tx.len());
                self.txs[slot] = Some(tx);
                self.missing -= 1;
            }
        }
        if self.bytes > MAX_BLOCK_BYTES {
            return Err(CompactError::TooLarge);
        }
        Ok(self.missing)
    }

    /// Transactions not found yet.
    pub fn missing(&self) -> usize {
        self.missing
    }

    /// Notes a look at the pool at `now`; the next comes twice as late, at most [`ASK_AGAIN`].
    /// The look is never later than the moment its proposer is to be asked (again).
    fn looked(&mut self, now: Instant) {
        self.look_every = (self.look_every * 2).min(ASK_AGAIN);
        let ask_at = self
            .asked
            .map_or(self.since + FILL_WAIT, |at| at + ASK_AGAIN);
        self.next_look = (now + self.look_every).min(ask_at.max(now + FILL_RETRY));
    }

    /// Whether its proposer should be asked for it in full now.
    fn ask_due(&self, now: Instant) -> bool {
        match self.asked {
            None => now.duration_since(self.since) >= FILL_WAIT,
            Some(at) => now.duration_since(at) >= ASK_AGAIN,
        }
    }

    /// The full proposal, once nothing is missing.
    pub fn into_proposal(self) -> Option<Box<Proposal>> {
        if self.missing > 0 {
            return None;
        }
        let mut txs = self.txs.into_iter().flatten();
        let segments = self
            .compact
            .segments
            .into_iter()
            .map(|s| Segment {
                chain_id: s.chain_id,
                txs: txs.by_ref().take(s.tx_ids.len()).collect(),
            })
            .collect();
        Some(Box::new(Proposal {
            round: self.compact.round,
            proposer: self.compact.proposer,
            signature: self.compact.signature,
            block: Block {
                sealed: self.compact.sealed,
                segments,
            },
            justification: self.compact.justification,
        }))
    }
}

/// Counters of compact proposals, for metrics.
#[derive(Debug, Default)]
pub struct CompactStats {
    /// Filled from the pool on arrival.
    pub filled: AtomicU64,
    /// Filled after waiting for gossip.
    pub filled_late: AtomicU64,
    /// Asked of their proposer in full.
    pub asked_full: AtomicU64,
    /// Transactions those lacked when asked for.
    pub missing_when_asked: AtomicU64,
    /// This node's proposals sent in full on request.
    pub served_full: AtomicU64,
    /// Dropped: malformed, unsigned, not from their proposer, or for another height.
    pub dropped: AtomicU64,
}

impl CompactStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Compact proposals received, by outcome (the metric's `outcome` label).
    pub fn outcomes(&self) -> [(&'static str, u64); 4] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("filled", load(&self.filled)),
            ("filled_late", load(&self.filled_late)),
            ("asked_full", load(&self.asked_full)),
            ("dropped", load(&self.dropped)),
        ]
    }
}

/// What the consensus stage should do after a compact-proposal event.
#[derive(Debug)]
pub enum Action {
    /// Hand this proposal to the machine.
    Deliver(Box<Proposal>),
    /// Send this request to the peer.
    Ask(CnIndex, ProposalRequest),
}

/// A CN's compact-proposal state: its own recent proposals and the compact ones it is filling.
#[derive(Debug)]
pub struct CompactProposals {
    /// Whether this node broadcasts its proposals compact (it fills others' either way).
    pub enabled: bool,
    own: BTreeMap<(Height, Round), Arc<Proposal>>,
    /// At most one per peer and height (this node's current and next).
    waiting: HashMap<(CnIndex, Height), Filling>,
    /// Times each (height, round, peer) was sent a kept proposal in full.
    answered: BTreeMap<(Height, Round, CnIndex), u8>,
    /// Headers of the compact proposals admitted, by (height, round, peer): a copy sent again
    /// is not filled again, while a second, different header (equivocation) is, once, so the
    /// machine sees both (forgotten once the height or round has passed).
    seen: BTreeMap<(Height, Round, CnIndex), Vec<crate::types::BlockHash>>,
    pub stats: Arc<CompactStats>,
}

/// Where this node stands, for [`CompactProposals::retry`].
pub struct Position<F: Fn(CnIndex, Round) -> bool> {
    pub height: Height,
    pub round: Round,
    /// Whether a CN proposes a round at `height` that this node still takes proposals for.
    pub proposes: F,
}

impl CompactProposals {
    /// Counting into `stats`.
    pub fn new(enabled: bool, stats: Arc<CompactStats>) -> Self {
        Self {
            enabled,
            own: BTreeMap::new(),
            waiting: HashMap::new(),
            answered: BTreeMap::new(),
            seen: BTreeMap::new(),
            stats,
        }
    }

    /// Keeps this node's proposal to answer requests for it in full.
    pub fn keep_own(&mut self, p: Arc<Proposal>) {
        self.own.insert((p.block.header().height, p.round), p);
        while self.own.len() > OWN_KEPT {
            self.own.pop_first();
        }
        if let Some(&(oldest, _)) = self.own.keys().next() {
            self.answered = self.answered.split_off(&(oldest, Round(0), CnIndex(0)));
        }
    }

    /// This node's proposal `req` names, if kept and not sent to `peer` in full
    /// [`MAX_ANSWERS`] times already.
    pub fn answer(&mut self, peer: CnIndex, req: ProposalRequest) -> Option<Arc<Proposal>> {
        let p = self.own.get(&(req.height, req.round))?;
        let sent = self
            .answered
            .entry((req.height, req.round, peer))
            .or_insert(0);
        if *sent >= MAX_ANSWERS {
            return None;
        }
        *sent += 1;
        CompactStats::count(&self.stats.served_full);
        Some(Arc::clone(p))
    }

    /// Takes a compact proposal from `peer` once `admissible` (the caller's check of sender,
    /// height, round and signature) holds: delivers it filled, or keeps it waiting (one per
    /// peer and height; a later round replaces an earlier one).
    pub fn receive(
        &mut self,
        peer: CnIndex,
        compact: CompactProposal,
        now: Instant,
        pooled: impl FnOnce(&[B256]) -> Vec<Option<Bytes>>,
        admissible: impl FnOnce(&CompactProposal) -> bool,
    ) -> Option<Action> {
        let (height, round) = (compact.sealed.header.height, compact.round);
        let hash = compact.sealed.hash();
        let seen = self.seen.get(&(height, round, peer));
        let repeated = seen.is_some_and(|hashes| hashes.contains(&hash) || hashes.len() >= 2);
        let superseded = self
            .waiting
            .get(&(peer, height))
            .is_some_and(|w| w.key().1 >= round);
        if repeated || superseded {
            return self.drop_one(peer, &CompactError::Superseded);
        }
        if !admissible(&compact) {
            return self.drop_one(peer, &CompactError::Inadmissible);
        }
        self.seen
            .entry((height, round, peer))
            .or_default()
            .push(hash);
        let mut filling = match Filling::new(compact, now) {
            Ok(filling) => filling,
            Err(e) => return self.drop_one(peer, &e),
        };
        match filling.fill(pooled) {
            Err(e) => return self.drop_one(peer, &e),
            Ok(0) => {
                CompactStats::count(&self.stats.filled);
                return filling.into_proposal().map(Action::Deliver);
            }
            Ok(_) => {}
        }
        self.waiting.insert((peer, height), filling);
        None
    }

    /// Forgets what concerns heights and rounds before `height`, `round` (called as the
    /// node moves on): proposals still waiting at passed heights are dropped.
    pub fn advance(&mut self, height: Height, round: Round) {
        self.seen
            .retain(|(h, r, _), _| *h > height || (*h == height && *r >= round));
        let before = self.waiting.len();
        self.waiting.retain(|(_, h), _| *h >= height);
        let passed = before - self.waiting.len();
        if passed > 0 {
            (self.stats.dropped).fetch_add(passed as u64, Ordering::Relaxed);
        }
    }

    fn drop_one(&self, peer: CnIndex, why: &CompactError) -> Option<Action> {
        tracing::debug!(%peer, error = %why, "compact proposal dropped");
        CompactStats::count(&self.stats.dropped);
        None
    }

    /// A full proposal arrived from `peer`: the compact one waiting for it is done.
    pub fn received_full(&mut self, peer: CnIndex, height: Height, round: Round) {
        if self
            .waiting
            .get(&(peer, height))
            .is_some_and(|w| w.key() == (height, round))
        {
            self.waiting.remove(&(peer, height));
        }
    }

    /// Whether a compact proposal of `height` waits (the stage then looks again within
    /// [`FILL_RETRY`]; those of the next height wait for their height).
    pub fn is_waiting_at(&self, height: Height) -> bool {
        self.waiting.keys().any(|(_, h)| *h == height)
    }

    /// Looks up what the waiting proposals of the current height still miss, each when its
    /// next look is due (see [`Filling`]): those now complete are delivered; those of a passed height or
    /// round, or not from the round's proposer, are dropped; those waiting longer than
    /// [`FILL_WAIT`] are asked of their proposer in full, again every [`ASK_AGAIN`]. Those of
    /// the next height wait untouched.
    pub fn retry<F: Fn(CnIndex, Round) -> bool>(
        &mut self,
        at: &Position<F>,
        now: Instant,
        mut pooled: impl FnMut(&[B256]) -> Vec<Option<Bytes>>,
    ) -> Vec<Action> {
        let stats = Arc::clone(&self.stats);
        self.waiting.retain(|_, w| {
            let (height, round) = w.key();
            let current = height == at.height;
            let keep = height > at.height
                || (current && round >= at.round && (at.proposes)(w.compact.proposer, round));
            if !keep {
                CompactStats::count(&stats.dropped);
            }
            keep
        });
        let mut actions = Vec::new();
        let due: Vec<(CnIndex, Height)> = self
            .waiting
            .iter()
            .filter(|((_, h), w)| *h == at.height && now >= w.next_look)
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some(w) = self.waiting.get_mut(&key) else {
                continue;
            };
            w.looked(now);
            match w.fill(&mut pooled) {
                Ok(0) => {
                    if let Some(p) = self.waiting.remove(&key).and_then(Filling::into_proposal) {
                        CompactStats::count(&self.stats.filled_late);
                        actions.push(Action::Deliver(p));
                    }
                }
                Ok(missing) if w.ask_due(now) => {
                    w.asked = Some(now);
                    CompactStats::count(&self.stats.asked_full);
                    (self.stats.missing_when_asked).fetch_add(missing as u64, Ordering::Relaxed);
                    let (height, round) = w.key();
                    actions.push(Action::Ask(key.0, ProposalRequest { height, round }));
                }
                Ok(_) => {}
                Err(e) => {
                    self.waiting.remove(&key);
                    self.drop_one(key.0, &e);
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::keccak256;

    fn proposal(height: u64, round: u32, segments: &[&[&[u8]]]) -> Proposal {
        let mut block = crate::net::sync::tests::block(height, Default::default(), 0);
        block.segments = segments
            .iter()
            .enumerate()
            .map(|(i, txs)| Segment {
                chain_id: crate::types::ChainId(1001 + i as u64),
                txs: txs.iter().map(|t| Bytes::copy_from_slice(t)).collect(),
            })
            .collect();
        block.sealed.header.segments = block
            .segments
            .iter()
            .map(|s| crate::types::SegmentCommitment {
                chain_id: s.chain_id,
                tx_count: s.txs.len() as u32,
                tx_root: s.tx_root(),
                receipts_root: B256::ZERO,
                state_root: B256::ZERO,
            })
            .collect();
        Proposal {
            round: Round(round),
            proposer: CnIndex(1),
            signature: Default::default(),
            block,
            justification: Vec::new(),
        }
    }

    /// A pool holding `txs`, answering by Keccak id.
    fn pool_of(txs: &[&[u8]]) -> impl Fn(&[B256]) -> Vec<Option<Bytes>> {
        let by_id: HashMap<B256, Bytes> = txs
            .iter()
            .map(|t| (keccak256(t), Bytes::copy_from_slice(t)))
            .collect();
        move |ids| ids.iter().map(|id| by_id.get(id).cloned()).collect()
    }

    /// A pool holding `txs` that counts its lookups in `looked`.
    fn counting_pool<'a>(
        txs: &[&[u8]],
        looked: &'a std::cell::Cell<u32>,
    ) -> impl Fn(&[B256]) -> Vec<Option<Bytes>> + 'a {
        let pool = pool_of(txs);
        move |ids| {
            looked.set(looked.get() + 1);
            pool(ids)
        }
    }

    /// The compact form of `p` from a proposer whose pool holds every transaction.
    fn compact_of(p: &Proposal) -> CompactProposal {
        compact(
            p,
            |tx| keccak256(tx),
            |ids| vec![Some(Bytes::new()); ids.len()],
        )
    }

    #[test]
    fn a_compact_proposal_filled_from_the_pool_is_the_proposal_it_names() {
        let p = proposal(5, 2, &[&[b"a", b"bb"], &[], &[b"ccc"]]);
        let c = compact_of(&p);
        let mut filling = Filling::new(c, Instant::now()).unwrap();
        assert_eq!(filling.fill(pool_of(&[b"ccc", b"bb", b"a", b"zz"])), Ok(0));
        assert_eq!(*filling.into_proposal().unwrap(), p);
    }

    #[test]
    fn what_the_pool_lacks_is_looked_up_again_and_only_that() {
        let p = proposal(5, 0, &[&[b"a", b"bb", b"ccc"]]);
        let mut filling = Filling::new(compact_of(&p), Instant::now()).unwrap();
        assert_eq!(filling.fill(pool_of(&[b"a"])), Ok(2));
        let mut asked = Vec::new();
        assert_eq!(
            filling.fill(|ids| {
                asked = ids.to_vec();
                pool_of(&[b"bb", b"ccc"])(ids)
            }),
            Ok(0)
        );
        assert_eq!(asked, vec![keccak256(b"bb"), keccak256(b"ccc")]);
        assert_eq!(*filling.into_proposal().unwrap(), p);
    }

    #[test]
    fn ids_that_do_not_match_the_header_shape_are_refused() {
        let p = proposal(5, 0, &[&[b"a", b"bb"]]);
        let mut short = compact_of(&p);
        short.segments[0].tx_ids.pop();
        assert_eq!(
            Filling::new(short, Instant::now()).unwrap_err(),
            CompactError::SegmentShape(0)
        );
        let mut moved = compact_of(&p);
        moved.segments[0].chain_id = crate::types::ChainId(7);
        assert!(Filling::new(moved, Instant::now()).is_err());
        let mut extra = compact_of(&p);
        extra.segments.push(extra.segments[0].clone());
        assert_eq!(
            Filling::new(extra, Instant::now()).unwrap_err(),
            CompactError::SegmentCount {
                named: 2,
                committed: 1
            }
        );
    }

    #[test]
    fn a_forged_id_fills_a_block_the_header_roots_refuse() {
        let p = proposal(5, 0, &[&[b"a", b"bb"]]);
        let mut forged = compact_of(&p);
        forged.segments[0].tx_ids[1] = keccak256(b"other");
        let mut filling = Filling::new(forged, Instant::now()).unwrap();
        assert_eq!(filling.fill(pool_of(&[b"a", b"other"])), Ok(0));
        let filled = filling.into_proposal().unwrap();
        assert_eq!(
            crate::consensus::proposal::check_body(&filled.block),
            Err(crate::consensus::proposal::ProposalError::Body(
                "transaction root"
            ))
        );
    }

    #[test]
    fn what_the_proposer_did_not_take_from_its_pool_is_carried_and_fills_with_no_lookup() {
        let p = proposal(5, 0, &[&[b"s"], &[b"a", b"bb", b"ccc"]]);
        // The proposer's pool holds the servicechain transactions, not the system one `s`
        // nor `bb` (which came to it some other way).
        let c = compact(&p, |tx| keccak256(tx), pool_of(&[b"a", b"ccc"]));
        let carried: Vec<(u32, &[u8])> = (c.carried.iter())
            .map(|t| (t.position, t.tx.as_ref()))
            .collect();
        assert_eq!(carried, [(0, &b"s"[..]), (2, &b"bb"[..])]);
        assert_eq!(
            c.segments[1].tx_ids.len(),
            3,
            "every transaction is still named"
        );
        let mut filling = Filling::new(c.clone(), Instant::now()).unwrap();
        assert_eq!(filling.missing(), 2);
        assert_eq!(filling.fill(pool_of(&[b"a", b"ccc"])), Ok(0));
        assert_eq!(*filling.into_proposal().unwrap(), p);
        // A receiver holding nothing still has the carried ones.
        let mut filling = Filling::new(c.clone(), Instant::now()).unwrap();
        assert_eq!(filling.fill(pool_of(&[])), Ok(2));
        // One whose pool holds a carried one too is asked only for the others, and each
        // transaction counts once.
        let mut filling = Filling::new(c, Instant::now()).unwrap();
        let mut asked = Vec::new();
        let pool = pool_of(&[b"s", b"a", b"bb", b"ccc"]);
        let left = filling.fill(|ids| {
            asked = ids.to_vec();
            pool(ids)
        });
        assert_eq!(left, Ok(0));
        assert_eq!(asked, [keccak256(b"a"), keccak256(b"ccc")]);
        assert_eq!(*filling.into_proposal().unwrap(), p);
    }

    #[test]
    fn carried_transactions_out_of_order_past_the_block_or_too_large_are_refused() {
        let p = proposal(5, 0, &[&[b"a", b"bb", b"ccc"]]);
        let c = compact(&p, |tx| keccak256(tx), pool_of(&[]));
        assert_eq!(c.carried.len(), 3);
        let refused = |edit: &dyn Fn(&mut CompactProposal)| {
            let mut c = c.clone();
            edit(&mut c);
            Filling::new(c, Instant::now()).unwrap_err()
        };
        assert_eq!(
            refused(&|c| c.carried.swap(0, 1)),
            CompactError::CarriedPosition(0)
        );
        assert_eq!(
            refused(&|c| c.carried[1].position = 0),
            CompactError::CarriedPosition(0)
        );
        assert_eq!(
            refused(&|c| c.carried[2].position = 3),
            CompactError::CarriedPosition(3)
        );
        let huge = Bytes::from(vec![0u8; MAX_BLOCK_BYTES / 2 + 1]);
        assert_eq!(
            refused(&|c| {
                c.carried[0].tx = huge.clone();
                c.carried[1].tx = huge.clone();
            }),
            CompactError::TooLarge
        );
    }

    #[test]
    fn repeated_ids_and_fills_beyond_a_block_are_refused() {
        let p = proposal(5, 0, &[&[b"a", b"bb"]]);
        let mut twice = compact_of(&p);
        twice.segments[0].tx_ids[1] = twice.segments[0].tx_ids[0];
        assert_eq!(
            Filling::new(twice, Instant::now()).unwrap_err(),
            CompactError::RepeatedId
        );
        let mut filling = Filling::new(compact_of(&p), Instant::now()).unwrap();
        let huge = Bytes::from(vec![0u8; MAX_BLOCK_BYTES / 2 + 1]);
        let answer = |ids: &[B256]| ids.iter().map(|_| Some(huge.clone())).collect();
        assert_eq!(filling.fill(answer), Err(CompactError::TooLarge));
    }

    /// Node at `height`, round 0, where CN 1 proposes every round.
    fn at(height: u64) -> Position<impl Fn(CnIndex, Round) -> bool> {
        Position {
            height: Height(height),
            round: Round(0),
            proposes: |cn: CnIndex, _: Round| cn == CnIndex(1),
        }
    }

    #[test]
    fn a_waiting_proposal_is_delivered_once_gossip_lands_or_asked_for_after_the_wait() {
        let t0 = Instant::now();
        let mut state = CompactProposals::new(true, Arc::default());
        let p = proposal(7, 0, &[&[b"a", b"bb"]]);
        let empty = pool_of(&[]);
        let peer = CnIndex(1);
        assert!(state
            .receive(peer, compact_of(&p), t0, &empty, |_| true)
            .is_none());
        assert!(state.is_waiting_at(Height(7)));
        assert!(state.retry(&at(7), t0 + FILL_RETRY, &empty).is_empty());
        let ask = |actions: Vec<Action>| {
            matches!(
                actions.as_slice(),
                [Action::Ask(
                    CnIndex(1),
                    ProposalRequest {
                        height: Height(7),
                        round: Round(0)
                    }
                )]
            )
        };
        assert!(ask(state.retry(&at(7), t0 + FILL_WAIT, &empty)));
        let soon = t0 + FILL_WAIT + FILL_RETRY;
        assert!(
            state.retry(&at(7), soon, &empty).is_empty(),
            "asked just now"
        );
        assert!(ask(state.retry(&at(7), t0 + FILL_WAIT + ASK_AGAIN, &empty)));
        let full = pool_of(&[b"a", b"bb"]);
        let later = t0 + 2 * (FILL_WAIT + ASK_AGAIN);
        match state.retry(&at(7), later, &full).as_slice() {
            [Action::Deliver(filled)] => assert_eq!(**filled, p),
            other => panic!("expected the filled proposal, got {other:?}"),
        }
        assert!(!state.is_waiting_at(Height(7)));
        assert_eq!(state.stats.asked_full.load(Ordering::Relaxed), 2);
        assert_eq!(state.stats.filled_late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn nothing_inadmissible_is_filled_and_the_pool_is_not_looked_at_more_often_than_the_retry() {
        let t0 = Instant::now();
        let mut state = CompactProposals::new(true, Arc::default());
        let p = proposal(7, 0, &[&[b"a"]]);
        let looked = std::cell::Cell::new(0);
        let counting = &counting_pool(&[b"a"], &looked);
        let refused = state.receive(CnIndex(1), compact_of(&p), t0, counting, |_| false);
        assert!(refused.is_none());
        assert_eq!(looked.get(), 0, "an inadmissible proposal is not filled");
        let empty = pool_of(&[]);
        state.receive(CnIndex(1), compact_of(&p), t0, &empty, |_| true);
        let missing = &counting_pool(&[], &looked);
        let mut lookups = |now| state.retry(&at(7), now, missing).len();
        lookups(t0);
        lookups(t0 + FILL_RETRY / 2);
        assert_eq!(looked.get(), 0, "looked at again before the retry interval");
    }

    #[test]
    fn a_copy_sent_again_is_not_filled_again_until_the_height_is_forgotten() {
        let t0 = Instant::now();
        let mut state = CompactProposals::new(true, Arc::default());
        let p = proposal(7, 0, &[&[b"a"]]);
        let looked = std::cell::Cell::new(0);
        let counting = &counting_pool(&[b"a"], &looked);
        for _ in 0..3 {
            state.receive(CnIndex(1), compact_of(&p), t0, counting, |_| true);
        }
        assert_eq!(looked.get(), 1, "filled once, copies dropped unfilled");
        assert_eq!(state.stats.filled.load(Ordering::Relaxed), 1);
        assert_eq!(state.stats.dropped.load(Ordering::Relaxed), 2);
        // A different header for the same round (equivocation) is filled once, so the machine
        // sees both; copies of it are not.
        let mut twin = compact_of(&p);
        twin.sealed.header.timestamp_ms += 1;
        let first = state.receive(CnIndex(1), twin.clone(), t0, counting, |_| true);
        assert!(first.is_some(), "the second header is delivered");
        let again = state.receive(CnIndex(1), twin, t0, counting, |_| true);
        assert!(again.is_none(), "a copy of it is not");
        assert_eq!(looked.get(), 2);
        assert_eq!(state.stats.filled.load(Ordering::Relaxed), 2);
        let empty = pool_of(&[]);
        let waits = compact_of(&proposal(7, 1, &[&[b"b"]]));
        state.receive(CnIndex(2), waits, t0, &empty, |_| true);
        assert!(state.is_waiting_at(Height(7)));
        state.advance(Height(7), Round(1));
        assert!(
            state.seen.keys().all(|(_, r, _)| *r >= Round(1)),
            "a passed round is forgotten"
        );
        state.advance(Height(8), Round(0));
        assert!(state.seen.is_empty(), "a passed height is forgotten");
        assert!(
            state.waiting.is_empty(),
            "and what still waited there is dropped"
        );
    }

    #[test]
    fn lookups_back_off_but_never_past_the_moment_to_ask() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut state = CompactProposals::new(true, Arc::default());
        state.receive(
            CnIndex(1),
            compact_of(&proposal(7, 0, &[&[b"a"]])),
            t0,
            pool_of(&[]),
            |_| true,
        );
        let looks = std::cell::Cell::new(Vec::new());
        let mut look_at = |after: Duration| {
            let record = |ids: &[B256]| {
                let mut v = looks.take();
                v.push(after.as_millis());
                looks.set(v);
                pool_of(&[])(ids)
            };
            state.retry(&at(7), t0 + after, record)
        };
        for t in 1..=30 {
            look_at(ms(t));
        }
        // 2 ms, then 4 and 8 ms more; then at 20 ms, when the wait ends and the proposer is
        // asked; then the 2 ms floor after it (the next comes 64 ms later).
        assert_eq!(looks.take(), vec![2, 6, 14, 20, 22]);
    }

    #[test]
    fn a_proposal_naming_more_ids_than_a_block_could_hold_is_refused() {
        let mut p = proposal(5, 0, &[&[b"a"]]);
        let count = MAX_COMPACT_IDS + 1;
        p.block.sealed.header.segments[0].tx_count = count as u32;
        let mut c = compact_of(&p);
        c.segments[0].tx_ids = vec![B256::ZERO; count];
        assert_eq!(
            Filling::new(c, Instant::now()).unwrap_err(),
            CompactError::TooMany
        );
    }

    #[test]
    fn waiting_proposals_of_passed_heights_rounds_or_other_proposers_are_dropped() {
        let t0 = Instant::now();
        let mut state = CompactProposals::new(true, Arc::default());
        let empty = pool_of(&[]);
        let at_round = |h, r| compact_of(&proposal(h, r, &[&[b"x"]]));
        let peer = CnIndex(1);
        state.receive(peer, at_round(7, 1), t0, &empty, |_| true);
        state.receive(peer, at_round(7, 0), t0, &empty, |_| true);
        assert_eq!(
            state.waiting[&(peer, Height(7))].key(),
            (Height(7), Round(1))
        );
        state.receive(peer, at_round(8, 0), t0, &empty, |_| true);
        assert_eq!(
            state.waiting.len(),
            2,
            "the next height waits beside the current one"
        );
        state.received_full(peer, Height(7), Round(0));
        assert_eq!(
            state.waiting.len(),
            2,
            "a full copy of another round changes nothing"
        );
        let later = Position {
            height: Height(7),
            round: Round(2),
            proposes: |_: CnIndex, _: Round| true,
        };
        assert!(state.retry(&later, t0, &empty).is_empty());
        assert_eq!(state.waiting.len(), 1, "round 1 has passed");
        let someone_else = Position {
            height: Height(8),
            round: Round(0),
            proposes: |cn: CnIndex, _: Round| cn == CnIndex(2),
        };
        assert!(state.retry(&someone_else, t0, &empty).is_empty());
        assert!(state.waiting.is_empty(), "not the round's proposer");
        assert_eq!(state.stats.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn own_proposals_are_answered_a_few_times_per_peer_and_only_the_last_few_are_kept() {
        let mut state = CompactProposals::new(true, Arc::default());
        for height in 1..=OWN_KEPT as u64 + 2 {
            state.keep_own(Arc::new(proposal(height, 0, &[&[b"a"]])));
        }
        let req = |h| ProposalRequest {
            height: Height(h),
            round: Round(0),
        };
        assert!(state.answer(CnIndex(3), req(1)).is_none(), "no longer kept");
        let last = OWN_KEPT as u64 + 2;
        for _ in 0..MAX_ANSWERS {
            assert!(state.answer(CnIndex(3), req(last)).is_some());
        }
        assert!(
            state.answer(CnIndex(3), req(last)).is_none(),
            "answered enough"
        );
        assert!(state.answer(CnIndex(0), req(last)).is_some());
        assert_eq!(
            state.stats.served_full.load(Ordering::Relaxed),
            u64::from(MAX_ANSWERS) + 1
        );
    }
}
