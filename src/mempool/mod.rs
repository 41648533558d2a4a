//! The transaction pool of a CN: one pool per servicechain, fed by the sigverify stage with
//! transactions whose senders are already recovered, drained by the proposer into segments.
//!
//! Per sender, transactions wait in nonce order; across senders the proposer takes the best
//! paying ready transaction first. A sender's transactions from its account nonce on without
//! a gap are *pending* (ready); those beyond a gap are *queued* as geth queues them, and are
//! promoted when the gap fills. Limits bound memory by count and bytes (global, per account,
//! queued per account and queued globally); a transaction for a nonce already pooled replaces
//! it only if it pays at least [`REPLACEMENT_BUMP_PERCENT`] more; when the pool is full, a
//! better paying transaction evicts the worst paying one's highest nonce. Every refusal is a
//! [`MempoolError`] whose message starts with geth's wording, so clients recognise it.
//!
//! The same pool, with the same rules, is kept by a ranger node for the transactions its RPC
//! accepted (`docs/transactions.md`): the refusal a client sees there is the one a CN would give.

use crate::crypto::tx::RecoveredTx;
use crate::types::ChainId;
use alloy_primitives::{Address, B256};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use thiserror::Error;

/// A replacement must raise the fee cap by this much (geth's default), so replacements cannot
/// be used to spam the network for free.
pub const REPLACEMENT_BUMP_PERCENT: u128 = 10;

/// The lowest fee cap that may replace one of `fee`: at least 10 % and at least 1 more; `None`
/// when that does not fit in a `u128` (nothing can replace it).
fn replacement_floor(fee: u128) -> Option<u128> {
    let bump = fee / 100 * REPLACEMENT_BUMP_PERCENT + fee % 100 * REPLACEMENT_BUMP_PERCENT / 100;
    fee.checked_add(bump.max(1))
}

/// Transactions across every servicechain: a few full segments of every chain.
pub const DEFAULT_MAX_TXS: usize = 200_000;
/// Raw bytes across every servicechain, so large transactions cannot exhaust memory.
pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
/// Transactions of one sender on one chain, pending and queued.
pub const DEFAULT_MAX_PER_ACCOUNT: usize = 4_096;
/// How far beyond its pending run a sender's nonce may be queued. geth queues 64; a client
/// that signs 1 000 transfers and sends them at once (ethers: ten batches of 100 in flight,
/// arriving in any order) needs the whole burst queued, so the window is 1 024.
pub const DEFAULT_MAX_QUEUED_PER_ACCOUNT: u64 = 1_024;
/// Queued (not yet executable) transactions across every sender: they cost their sender
/// nothing until the gap fills, so they get a global bound of their own.
pub const DEFAULT_MAX_QUEUED: usize = 16_384;

/// Hashes of included transactions the pool remembers, so a copy that arrives again (a
/// client's resend, a peer's late or hostile re-gossip) is dropped before its signature is
/// recovered: 65 536 hashes, at most about 7 MiB with the set's and the queue's slack.
pub const INCLUDED_MEMORY: usize = 1 << 16;

/// The most recently included transaction hashes, oldest evicted first.
#[derive(Debug, Default)]
struct IncludedHashes {
    order: VecDeque<B256>,
    set: HashSet<B256>,
}

impl IncludedHashes {
    fn insert(&mut self, hash: B256) {
        if self.set.contains(&hash) {
            return;
        }
        if self.order.len() >= INCLUDED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(hash);
        self.order.push_back(hash);
    }

    fn contains(&self, hash: &B256) -> bool {
        self.set.contains(hash)
    }
}

/// Pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Transactions across every servicechain.
    pub max_txs: usize,
    /// Raw transaction bytes across every servicechain.
    pub max_bytes: usize,
    /// Transactions of one sender on one chain.
    pub max_per_account: usize,
    /// A nonce at or beyond the end of the sender's pending run plus this is "nonce too high".
    pub max_queued_per_account: u64,
    /// Queued transactions across every sender and chain.
    pub max_queued: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_txs: DEFAULT_MAX_TXS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_per_account: DEFAULT_MAX_PER_ACCOUNT,
            max_queued_per_account: DEFAULT_MAX_QUEUED_PER_ACCOUNT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// Why a transaction was not pooled.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MempoolError {
    #[error("chain id {0} is not a servicechain of this region")]
    UnknownChain(ChainId),
    #[error("transaction has no chain id")]
    MissingChainId,
    #[error("nonce too low: next nonce {expected}, tx nonce {got}")]
    NonceTooLow { expected: u64, got: u64 },
    /// `expected` is the end of the sender's pending run (its next gap-free nonce).
    #[error(
        "nonce too high: next nonce {expected}, tx nonce {got}, at most {limit} queued beyond it"
    )]
    NonceTooHigh { expected: u64, got: u64, limit: u64 },
    #[error("replacement transaction underpriced: needs a fee cap of at least {needed}")]
    ReplacementUnderpriced { needed: u128 },
    #[error("already known")]
    AlreadyKnown,
    #[error("account limit exceeded: sender has {0} pooled transactions")]
    AccountFull(usize),
    #[error("txpool is full")]
    PoolFull,
}

/// A pooled transaction.
#[derive(Debug, Clone)]
pub struct PooledTx {
    pub tx: RecoveredTx,
    /// Fee cap per gas, the ordering key.
    pub fee: u128,
}

/// The next nonce after the gap-free run of `queue` that starts at `from`.
fn run_end(queue: Option<&BTreeMap<u64, PooledTx>>, from: u64) -> u64 {
    let mut next = from;
    if let Some(queue) = queue {
        for nonce in queue.range(from..).map(|(n, _)| *n) {
            if nonce != next {
                break;
            }
            match next.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
    }
    next
}

impl PooledTx {
    pub fn hash(&self) -> B256 {
        self.tx.tx().hash()
    }

    pub fn nonce(&self) -> u64 {
        self.tx.tx().nonce()
    }
}

#[derive(Debug, Default)]
struct ChainPool {
    senders: HashMap<Address, BTreeMap<u64, PooledTx>>,
    /// Next nonce per sender as of the last committed block (learned on insert and commit).
    account_nonce: HashMap<Address, u64>,
}

/// The pools of every servicechain known to this node.
#[derive(Debug)]
pub struct Mempool {
    config: MempoolConfig,
    chains: HashMap<ChainId, ChainPool>,
    /// Where each pooled transaction sits, for validators looking up proposals' senders.
    by_hash: HashMap<B256, (ChainId, Address, u64)>,
    len: usize,
    /// Raw bytes of every pooled transaction.
    bytes: usize,
    /// Pooled transactions beyond their sender's pending run.
    queued: usize,
    /// Transactions recently included with a valid receipt (bounded).
    included: IncludedHashes,
    /// Transactions of chains that moved to another region, kept for whoever hands them on
    /// ([`Self::take_departed`]); `None`: dropped (a CN's pool).
    departed: Option<Vec<RecoveredTx>>,
}

/// Transactions of moved chains a pool keeps until they are handed on.
pub const MAX_DEPARTED: usize = 16_384;
/// Their bytes.
pub const MAX_DEPARTED_BYTES: usize = 16 << 20;

impl Mempool {
    /// A pool accepting transactions for `chains`.
    pub fn new(config: MempoolConfig, chains: impl IntoIterator<Item = ChainId>) -> Self {
        let chains = chains
            .into_iter()
            .map(|c| (c, ChainPool::default()))
            .collect();
        Self {
            config,
            chains,
            by_hash: HashMap::new(),
            len: 0,
            bytes: 0,
            queued: 0,
            included: IncludedHashes::default(),
            departed: None,
        }
    }

    /// Keeps the transactions of chains that move away (an RN's pool where a hand-off runs:
    /// what it acknowledged goes to the chain's new region), up to [`MAX_DEPARTED`] and
    /// [`MAX_DEPARTED_BYTES`].
    pub fn keep_departed(&mut self) {
        self.departed.get_or_insert_with(Vec::new);
    }

    /// The kept transactions of chains that moved away, oldest first.
    pub fn take_departed(&mut self) -> Vec<RecoveredTx> {
        self.departed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records that the transaction `hash` was included with a valid receipt: its nonce is
    /// spent, so no copy of it can ever be pooled again.
    pub fn included(&mut self, hash: B256) {
        self.included.insert(hash);
    }

    /// Settles a committed segment's transactions, `(hash, valid)` in block order: one marked
    /// invalid leaves the pool (it would only be proposed and marked again) and may come back
    /// once it can execute; a valid one (successful, reverted or halted) spent its nonce and is
    /// remembered, so a copy arriving later is dropped before recovery.
    pub fn settle_included(&mut self, outcomes: &[(B256, bool)]) {
        for (hash, valid) in outcomes {
            match valid {
                true => self.included(*hash),
                false => self.remove_by_hash(hash),
            }
        }
    }

    /// Whether a transaction with this hash is pooled or was recently included: recovering
    /// its sender again can only end in "already known" or "nonce too low".
    pub fn knows(&self, hash: &B256) -> bool {
        self.by_hash.contains_key(hash) || self.included.contains(hash)
    }

    /// Drops the pooled transaction with this hash, if any (one that was marked invalid in a
    /// committed block). The sender's later nonces wait for a replacement.
    pub fn remove_by_hash(&mut self, hash: &B256) {
        if let Some((chain, sender, nonce)) = self.by_hash.get(hash).copied() {
            self.remove(chain, sender, nonce);
        }
    }

    /// Starts accepting transactions for `chain` (a servicechain registered at runtime).
    pub fn add_chain(&mut self, chain: ChainId) {
        self.chains.entry(chain).or_default();
    }

    /// Stops accepting transactions for `chain` (moved to another region) and drops those
    /// pooled for it.
    pub fn remove_chain(&mut self, chain: ChainId) {
        let mut leaving: Vec<RecoveredTx> = self
            .by_hash
            .iter()
            .filter(|(_, (c, _, _))| *c == chain)
            .filter_map(|(hash, _)| self.get(hash).cloned())
            .collect();
        leaving.sort_by_key(|tx| (tx.sender(), tx.tx().nonce()));
        for tx in &leaving {
            self.remove_by_hash(&tx.tx().hash());
        }
        self.chains.remove(&chain);
        self.hand_on(chain, leaving);
    }

    /// Keeps `leaving`, transactions of `chain` which moved away, for whoever hands them on
    /// (up to [`MAX_DEPARTED`] and [`MAX_DEPARTED_BYTES`] in all); drops them where nothing
    /// does.
    pub fn hand_on(&mut self, chain: ChainId, leaving: Vec<RecoveredTx>) {
        if let Some(departed) = &mut self.departed {
            let size = |txs: &[RecoveredTx]| txs.iter().map(|t| t.tx().raw().len()).sum::<usize>();
            let mut bytes = size(departed);
            let (offered, mut kept) = (leaving.len(), 0);
            for tx in leaving {
                let len = tx.tx().raw().len();
                if departed.len() >= MAX_DEPARTED || bytes + len > MAX_DEPARTED_BYTES {
                    break;
                }
                bytes += len;
                kept += 1;
                departed.push(tx);
            }
            if offered > kept {
                tracing::warn!(%chain, offered, kept, "more transactions of a moved chain than a pool keeps to hand on");
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw bytes of every pooled transaction.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pooled transactions waiting behind a nonce gap.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The sender's next nonce counting what is pooled without a gap from `account_nonce` (its
    /// committed next nonce) on: what a client should sign next (`pending`).
    pub fn pending_nonce(&self, chain: ChainId, sender: Address, account_nonce: u64) -> u64 {
        let Some(pool) = self.chains.get(&chain) else {
            return account_nonce;
        };
        let from = account_nonce.max(pool.account_nonce.get(&sender).copied().unwrap_or(0));
        run_end(pool.senders.get(&sender), from)
    }

    /// The raw bytes of every pooled transaction, each sender's in nonce order (what a
    /// journal of the pool must hold).
    pub fn raw_transactions(&self) -> Vec<alloy_primitives::Bytes> {
        self.chains
            .values()
            .flat_map(|pool| pool.senders.values())
            .flat_map(BTreeMap::values)
            .map(|pooled| pooled.tx.tx().raw().clone())
            .collect()
    }

    /// Every (chain, sender) with pooled transactions, for callers that re-check them against
    /// committed state.
    pub fn senders(&self) -> Vec<(ChainId, Address)> {
        self.chains
            .iter()
            .flat_map(|(c, pool)| pool.senders.keys().map(move |s| (*c, *s)))
            .collect()
    }

    /// Queued transactions of `sender` (beyond its pending run).
    fn queued_of(&self, chain: ChainId, sender: Address) -> usize {
        let Some(pool) = self.chains.get(&chain) else {
            return 0;
        };
        let queue = pool.senders.get(&sender);
        let next = pool.account_nonce.get(&sender).copied().unwrap_or(0);
        let end = run_end(queue, next);
        queue.map_or(0, |q| q.range(end..).count())
    }

    /// Runs `change` on `sender`'s transactions, keeping the global queued count right.
    fn touching<R>(
        &mut self,
        chain: ChainId,
        sender: Address,
        change: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let before = self.queued_of(chain, sender);
        let out = change(self);
        self.queued = self.queued - before + self.queued_of(chain, sender);
        out
    }

    /// Pools `tx`; `account_nonce` is the sender's next nonce in committed state. A refused
    /// transaction leaves the pool as it was, except that when the pool is full by bytes a
    /// better paying transaction may have evicted some before it was refused. Answers the
    /// transaction the new one replaced at its nonce, if any.
    pub fn insert(
        &mut self,
        tx: RecoveredTx,
        account_nonce: u64,
    ) -> Result<Option<RecoveredTx>, MempoolError> {
        // Known first, as clients expect ("already known"), whatever has committed since.
        if self.by_hash.contains_key(&tx.tx().hash()) {
            return Err(MempoolError::AlreadyKnown);
        }
        let chain = tx.tx().chain_id().ok_or(MempoolError::MissingChainId)?;
        let pool = self
            .chains
            .get(&chain)
            .ok_or(MempoolError::UnknownChain(chain))?;
        let (sender, nonce) = (tx.sender(), tx.tx().nonce());
        let expected = account_nonce.max(pool.account_nonce.get(&sender).copied().unwrap_or(0));
        if nonce < expected {
            return Err(MempoolError::NonceTooLow {
                expected,
                got: nonce,
            });
        }
        let fee = tx.tx().tx().max_fee_per_gas();
        let size = tx.tx().raw().len();
        let queue = pool.senders.get(&sender);
        if let Some(existing) = queue.and_then(|q| q.get(&nonce)) {
            if existing.hash() == tx.tx().hash() {
                return Err(MempoolError::AlreadyKnown);
            }
            let needed = replacement_floor(existing.fee);
            if needed.is_none_or(|needed| fee < needed) {
                return Err(MempoolError::ReplacementUnderpriced {
                    needed: needed.unwrap_or(u128::MAX),
                });
            }
            let grows = size.saturating_sub(existing.tx.tx().raw().len());
            if self.bytes.saturating_add(grows) > self.config.max_bytes {
                return Err(MempoolError::PoolFull);
            }
            return Ok(self.put(chain, sender, expected, PooledTx { tx, fee }));
        }
        let pending_end = run_end(queue, expected);
        let limit = self.config.max_queued_per_account;
        if pending_end
            .checked_add(limit)
            .is_some_and(|bound| nonce >= bound)
        {
            return Err(MempoolError::NonceTooHigh {
                expected: pending_end,
                got: nonce,
                limit,
            });
        }
        let pooled = queue.map_or(0, BTreeMap::len);
        if pooled >= self.config.max_per_account {
            return Err(MempoolError::AccountFull(pooled));
        }
        if nonce > pending_end && self.queued >= self.config.max_queued {
            return Err(MempoolError::PoolFull);
        }
        while self.len >= self.config.max_txs
            || self.bytes.saturating_add(size) > self.config.max_bytes
        {
            if !self.evict_cheaper_than(fee, chain, sender) {
                return Err(MempoolError::PoolFull);
            }
        }
        let replaced = self.put(chain, sender, expected, PooledTx { tx, fee });
        debug_assert!(replaced.is_none(), "the nonce was free");
        Ok(replaced)
    }

    /// Stores a checked transaction (new, or replacing the one at its nonce, which it answers).
    fn put(
        &mut self,
        chain: ChainId,
        sender: Address,
        account_nonce: u64,
        tx: PooledTx,
    ) -> Option<RecoveredTx> {
        self.touching(chain, sender, |this| {
            // Invariant: callers checked that the chain exists; chains are never removed.
            let pool = this.chains.get_mut(&chain).expect("known chain");
            pool.account_nonce.insert(sender, account_nonce);
            let (hash, nonce, size) = (tx.hash(), tx.nonce(), tx.tx.tx().raw().len());
            this.bytes += size;
            let replaced = match pool.senders.entry(sender).or_default().insert(nonce, tx) {
                Some(old) => {
                    this.bytes -= old.tx.tx().raw().len();
                    this.by_hash.remove(&old.hash());
                    Some(old.tx)
                }
                None => {
                    this.len += 1;
                    None
                }
            };
            this.by_hash.insert(hash, (chain, sender, nonce));
            replaced
        })
    }

    /// Drops the cheapest pooled transaction (a sender's highest nonce, so no gap opens) if it
    /// pays less than `fee`. The incoming sender's own queue on its chain is never the
    /// victim: evicting its lower nonce would strand the incoming one behind a gap.
    fn evict_cheaper_than(&mut self, fee: u128, chain: ChainId, sender: Address) -> bool {
        let victim = self
            .chains
            .iter()
            .flat_map(|(c, pool)| {
                pool.senders
                    .iter()
                    .filter(move |(s, _)| (*c, **s) != (chain, sender))
                    .filter_map(move |(s, q)| {
                        q.iter().next_back().map(|(n, t)| (t.fee, *c, *s, *n))
                    })
            })
            .min();
        match victim {
            Some((victim_fee, c, s, n)) if victim_fee < fee => {
                self.remove(c, s, n);
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, chain: ChainId, sender: Address, nonce: u64) {
        self.touching(chain, sender, |this| {
            if let Some(pool) = this.chains.get_mut(&chain) {
                if let Some(queue) = pool.senders.get_mut(&sender) {
                    if let Some(old) = queue.remove(&nonce) {
                        this.by_hash.remove(&old.hash());
                        this.len -= 1;
                        this.bytes -= old.tx.tx().raw().len();
                    }
                    if queue.is_empty() {
                        pool.senders.remove(&sender);
                        pool.account_nonce.remove(&sender);
                    }
                }
            }
        });
    }

    /// Up to `max` ready transactions of `chain` for a proposal: contiguous nonces from each
    /// sender's account nonce, best fee first across senders. The pool keeps them until
    /// [`Mempool::committed`] says they are in a block.
    pub fn ready(&self, chain: ChainId, max: usize) -> Vec<RecoveredTx> {
        let Some(pool) = self.chains.get(&chain) else {
            return Vec::new();
        };
        // Heads of each sender's contiguous run, best fee first.
        let mut heads: BinaryHeap<(u128, Address, u64)> = BinaryHeap::new();
        for (sender, queue) in &pool.senders {
            let next = pool.account_nonce.get(sender).copied().unwrap_or(0);
            if let Some(tx) = queue.get(&next) {
                heads.push((tx.fee, *sender, next));
            }
        }
        let mut out = Vec::with_capacity(max.min(self.len));
        while let Some((_, sender, nonce)) = heads.pop() {
            if out.len() >= max {
                break;
            }
            let queue = &pool.senders[&sender];
            out.push(queue[&nonce].tx.clone());
            let Some(after) = nonce.checked_add(1) else {
                continue;
            };
            if let Some(next) = queue.get(&after) {
                heads.push((next.fee, sender, after));
            }
        }
        out
    }

    /// A block committed: `sender` of `chain` now has next nonce `next_nonce`; pooled
    /// transactions below it are gone for good.
    pub fn committed(&mut self, chain: ChainId, sender: Address, next_nonce: u64) {
        self.touching(chain, sender, |this| {
            let Some(pool) = this.chains.get_mut(&chain) else {
                return;
            };
            // Only senders with pooled transactions are tracked: the map stays as small as
            // the pool.
            let Some(queue) = pool.senders.get_mut(&sender) else {
                return;
            };
            let keep = queue.split_off(&next_nonce);
            this.len -= queue.len();
            for gone in queue.values() {
                this.bytes -= gone.tx.tx().raw().len();
                this.by_hash.remove(&gone.hash());
            }
            *queue = keep;
            if queue.is_empty() {
                pool.senders.remove(&sender);
                pool.account_nonce.remove(&sender);
            } else {
                pool.account_nonce.insert(sender, next_nonce);
            }
        });
    }

    /// Committed state says `sender`'s next nonce is `next_nonce`: forgets what is below it,
    /// like [`Mempool::committed`], but never moves the pool's account nonce back (state read
    /// elsewhere may lag the commits the pool has seen).
    pub fn caught_up(&mut self, chain: ChainId, sender: Address, next_nonce: u64) {
        let known = self
            .chains
            .get(&chain)
            .and_then(|p| p.account_nonce.get(&sender).copied());
        if known.is_some_and(|known| known < next_nonce) {
            self.committed(chain, sender, next_nonce);
        }
    }

    /// A pooled transaction by its hash (its sender is already recovered).
    pub fn get(&self, hash: &B256) -> Option<&RecoveredTx> {
        let (chain, sender, nonce) = self.by_hash.get(hash)?;
        Some(&self.chains.get(chain)?.senders.get(sender)?.get(nonce)?.tx)
    }

    /// Whether some transaction could go into the next block: a sender's next nonce is pooled.
    pub fn has_ready(&self) -> bool {
        self.chains.values().any(|pool| {
            pool.senders.iter().any(|(sender, queue)| {
                let next = pool.account_nonce.get(sender).copied().unwrap_or(0);
                queue.contains_key(&next)
            })
        })
    }

    /// Servicechains with ready transactions.
    pub fn active_chains(&self) -> Vec<ChainId> {
        let mut chains: Vec<ChainId> = self
            .chains
            .iter()
            .filter(|(_, p)| !p.senders.is_empty())
            .map(|(c, _)| *c)
            .collect();
        chains.sort_unstable();
        chains
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The included-hash memory is bounded: the oldest hash goes when a new one comes past
    /// [`INCLUDED_MEMORY`], and a hash recorded twice takes one place.
    #[test]
    fn included_hashes_are_remembered_up_to_the_bound() {
        let mut pool = Mempool::new(MempoolConfig::default(), []);
        let hash = |i: u64| B256::left_padding_from(&i.to_be_bytes());
        for i in 0..INCLUDED_MEMORY as u64 {
            pool.included(hash(i));
        }
        pool.included(hash(5));
        assert!(pool.knows(&hash(0)) && pool.knows(&hash(5)));
        pool.included(hash(INCLUDED_MEMORY as u64));
        assert!(!pool.knows(&hash(0)), "the oldest is forgotten");
        assert!(pool.knows(&hash(1)) && pool.knows(&hash(INCLUDED_MEMORY as u64)));
        assert_eq!(pool.included.order.len(), INCLUDED_MEMORY);
        assert_eq!(pool.included.set.len(), INCLUDED_MEMORY);
    }

    /// A transaction marked invalid in a block is forgotten (it may execute once its sender
    /// is funded); one that ran, successfully or not, is remembered as spent.
    #[test]
    fn only_transactions_that_ran_are_remembered_as_included() {
        let mut pool = Mempool::new(MempoolConfig::default(), []);
        let (ran, invalid) = (B256::repeat_byte(1), B256::repeat_byte(2));
        pool.settle_included(&[(ran, true), (invalid, false)]);
        assert!(pool.knows(&ran));
        assert!(!pool.knows(&invalid));
    }
}
