//! The transaction pool of a CN: one pool per servicechain, fed by the sigverify stage with
//! transactions whose senders are already recovered, drained by the proposer into segments.
//!
//! Per sender, transactions wait in nonce order; across senders the proposer takes the best
//! paying ready transaction first. Limits bound memory (global and per account); a transaction
//! for a nonce already pooled replaces it only if it pays at least [`REPLACEMENT_BUMP_PERCENT`]
//! more; when the pool is full, a better paying transaction evicts the worst paying one's
//! highest nonce. Every refusal is a [`MempoolError`] with a reason a client can act on.

use crate::crypto::tx::RecoveredTx;
use crate::types::ChainId;
use alloy_primitives::{Address, B256};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
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

/// Pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Transactions across every servicechain.
    pub max_txs: usize,
    /// Transactions of one sender on one chain.
    pub max_per_account: usize,
    /// Nonces beyond the account's next nonce that are accepted (bounds gaps).
    pub max_nonce_gap: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_txs: 200_000,
            max_per_account: 1_024,
            max_nonce_gap: 1_024,
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
    #[error("nonce too low: account nonce is {expected}, transaction has {got}")]
    NonceTooLow { expected: u64, got: u64 },
    #[error("nonce too high: account nonce is {expected}, transaction has {got}")]
    NonceTooHigh { expected: u64, got: u64 },
    #[error("replacement transaction underpriced: needs a fee cap of at least {needed}")]
    ReplacementUnderpriced { needed: u128 },
    #[error("already known")]
    AlreadyKnown,
    #[error("sender has {0} pending transactions, the limit")]
    AccountFull(usize),
    #[error("transaction pool is full and this transaction pays too little to evict another")]
    PoolFull,
}

/// A pooled transaction.
#[derive(Debug, Clone)]
pub struct PooledTx {
    pub tx: RecoveredTx,
    /// Fee cap per gas, the ordering key.
    pub fee: u128,
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
}

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
        }
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

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pools `tx`; `account_nonce` is the sender's next nonce in committed state. A refused
    /// transaction leaves the pool exactly as it was.
    pub fn insert(&mut self, tx: RecoveredTx, account_nonce: u64) -> Result<(), MempoolError> {
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
        if nonce > expected.saturating_add(self.config.max_nonce_gap) {
            return Err(MempoolError::NonceTooHigh {
                expected,
                got: nonce,
            });
        }
        let fee = tx.tx().tx().max_fee_per_gas();
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
            self.put(chain, sender, expected, PooledTx { tx, fee });
            return Ok(());
        }
        let queued = queue.map_or(0, BTreeMap::len);
        if queued >= self.config.max_per_account {
            return Err(MempoolError::AccountFull(queued));
        }
        if self.len >= self.config.max_txs && !self.evict_cheaper_than(fee, chain, sender) {
            return Err(MempoolError::PoolFull);
        }
        self.put(chain, sender, expected, PooledTx { tx, fee });
        Ok(())
    }

    /// Stores a checked transaction (new, or replacing the one at its nonce).
    fn put(&mut self, chain: ChainId, sender: Address, account_nonce: u64, tx: PooledTx) {
        // Invariant: callers checked that the chain exists; chains are never removed.
        let pool = self.chains.get_mut(&chain).expect("known chain");
        pool.account_nonce.insert(sender, account_nonce);
        let (hash, nonce) = (tx.hash(), tx.nonce());
        match pool.senders.entry(sender).or_default().insert(nonce, tx) {
            Some(old) => {
                self.by_hash.remove(&old.hash());
            }
            None => self.len += 1,
        }
        self.by_hash.insert(hash, (chain, sender, nonce));
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
        if let Some(pool) = self.chains.get_mut(&chain) {
            if let Some(queue) = pool.senders.get_mut(&sender) {
                if let Some(old) = queue.remove(&nonce) {
                    self.by_hash.remove(&old.hash());
                    self.len -= 1;
                }
                if queue.is_empty() {
                    pool.senders.remove(&sender);
                    pool.account_nonce.remove(&sender);
                }
            }
        }
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
            if let Some(next) = queue.get(&(nonce + 1)) {
                heads.push((next.fee, sender, nonce + 1));
            }
        }
        out
    }

    /// A block committed: `sender` of `chain` now has next nonce `next_nonce`; pooled
    /// transactions below it are gone for good.
    pub fn committed(&mut self, chain: ChainId, sender: Address, next_nonce: u64) {
        let Some(pool) = self.chains.get_mut(&chain) else {
            return;
        };
        // Only senders with queued transactions are tracked: the map stays as small as the pool.
        let Some(queue) = pool.senders.get_mut(&sender) else {
            return;
        };
        let keep = queue.split_off(&next_nonce);
        self.len -= queue.len();
        for gone in queue.values() {
            self.by_hash.remove(&gone.hash());
        }
        *queue = keep;
        if queue.is_empty() {
            pool.senders.remove(&sender);
            pool.account_nonce.remove(&sender);
        } else {
            pool.account_nonce.insert(sender, next_nonce);
        }
    }

    /// A pooled transaction by its hash (its sender is already recovered).
    pub fn get(&self, hash: &B256) -> Option<&RecoveredTx> {
        let (chain, sender, nonce) = self.by_hash.get(hash)?;
        Some(&self.chains.get(chain)?.senders.get(sender)?.get(nonce)?.tx)
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
