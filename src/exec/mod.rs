//! Segment execution. Segments of different servicechains touch disjoint state, so a block's
//! segments execute in parallel on rayon; within a segment, transactions run in the proposer's
//! order. A transaction that cannot execute (wrong chain, bad nonce, unaffordable, unsupported)
//! stays in its segment with an invalid receipt and changes nothing.
//!
//! [`TransferExecutor`] is the value-transfer executor that the consensus pipeline runs until
//! the EVM executor lands behind the same [`Executor`] trait: accounts with nonces and
//! balances, intrinsic gas of 21 000 charged at the effective gas price, and a state commitment
//! updated in time proportional to what a segment changed.

use crate::crypto::hash::{merkle_root, sha256_concat};
use crate::crypto::tx::{RecoveredTx, SignedTransaction, TxKind};
use crate::types::{ChainId, Segment, SegmentCommitment};
use alloy_primitives::{Address, B256, U256};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Gas of a plain value transfer.
pub const TRANSFER_GAS: u64 = 21_000;

/// One account of one chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
}

/// Outcome of one transaction, as recorded in its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    Success {
        gas_used: u64,
    },
    /// Marked invalid and kept in the segment; no state change.
    Invalid(InvalidReason),
}

/// Why a transaction was marked invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum InvalidReason {
    Undecodable = 1,
    BadSignature = 2,
    WrongChain = 3,
    BadNonce = 4,
    InsufficientFunds = 5,
    IntrinsicGas = 6,
    Unsupported = 7,
}

/// The state writes of one segment, applied only when its block commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentDiff {
    pub chain_id: ChainId,
    pub accounts: BTreeMap<Address, Account>,
    pub state_root: B256,
}

/// Result of executing one segment.
#[derive(Debug, Clone)]
pub struct SegmentExecution {
    pub commitment: SegmentCommitment,
    pub outcomes: Vec<TxOutcome>,
    pub diff: SegmentDiff,
    /// Senders of valid transactions with their next nonce, for the mempool.
    pub nonces: Vec<(Address, u64)>,
}

/// Read access to committed state, as executors need it.
pub trait StateRead: Sync {
    fn account(&self, chain: ChainId, address: &Address) -> Account;
    fn state_root(&self, chain: ChainId) -> B256;
}

/// Executes segments against committed state without changing it.
pub trait Executor: Send + Sync {
    fn execute_segment(
        &self,
        state: &dyn StateRead,
        segment: &Segment,
        senders: &[Option<RecoveredTx>],
    ) -> SegmentExecution;

    /// Executes every segment of a block in parallel.
    fn execute_block(
        &self,
        state: &dyn StateRead,
        segments: &[(Segment, Vec<Option<RecoveredTx>>)],
    ) -> Vec<SegmentExecution> {
        segments
            .par_iter()
            .map(|(segment, txs)| self.execute_segment(state, segment, txs))
            .collect()
    }
}

/// Value transfers only (no contract code).
#[derive(Debug, Default, Clone, Copy)]
pub struct TransferExecutor;

impl TransferExecutor {
    fn apply(
        &self,
        chain: ChainId,
        tx: &SignedTransaction,
        sender: Address,
        accounts: &mut AccountCache<'_>,
    ) -> TxOutcome {
        use InvalidReason::*;
        if tx.chain_id() != Some(chain) {
            return TxOutcome::Invalid(WrongChain);
        }
        let (TxKind::Call(to), true) = (tx.tx().kind(), tx.input().is_empty()) else {
            return TxOutcome::Invalid(Unsupported);
        };
        if tx.gas_limit() < TRANSFER_GAS {
            return TxOutcome::Invalid(IntrinsicGas);
        }
        let from = accounts.get(sender);
        if from.nonce != tx.nonce() {
            return TxOutcome::Invalid(BadNonce);
        }
        let fee = U256::from(tx.tx().effective_gas_price(Some(0))) * U256::from(TRANSFER_GAS);
        let Some(total) = tx.value().checked_add(fee).filter(|t| *t <= from.balance) else {
            return TxOutcome::Invalid(InsufficientFunds);
        };
        accounts.set(
            sender,
            Account {
                nonce: from.nonce + 1,
                balance: from.balance - total,
            },
        );
        let to_account = accounts.get(to);
        accounts.set(
            to,
            Account {
                balance: to_account.balance.saturating_add(tx.value()),
                ..to_account
            },
        );
        TxOutcome::Success {
            gas_used: TRANSFER_GAS,
        }
    }
}

/// Accounts read from state and overwritten by a segment.
struct AccountCache<'a> {
    chain: ChainId,
    state: &'a dyn StateRead,
    written: BTreeMap<Address, Account>,
}

impl AccountCache<'_> {
    fn get(&self, address: Address) -> Account {
        self.written
            .get(&address)
            .copied()
            .unwrap_or_else(|| self.state.account(self.chain, &address))
    }

    fn set(&mut self, address: Address, account: Account) {
        self.written.insert(address, account);
    }
}

impl Executor for TransferExecutor {
    fn execute_segment(
        &self,
        state: &dyn StateRead,
        segment: &Segment,
        senders: &[Option<RecoveredTx>],
    ) -> SegmentExecution {
        let chain = segment.chain_id;
        let mut accounts = AccountCache {
            chain,
            state,
            written: BTreeMap::new(),
        };
        let outcomes: Vec<TxOutcome> = senders
            .iter()
            .map(|tx| match tx {
                Some(tx) => self.apply(chain, tx.tx(), tx.sender(), &mut accounts),
                None => TxOutcome::Invalid(InvalidReason::BadSignature),
            })
            .collect();
        let state_root = next_state_root(state.state_root(chain), &accounts.written);
        let nonces = accounts
            .written
            .iter()
            .map(|(a, acc)| (*a, acc.nonce))
            .collect();
        SegmentExecution {
            commitment: SegmentCommitment {
                chain_id: chain,
                tx_count: segment.txs.len() as u32,
                tx_root: segment.tx_root(),
                receipts_root: receipts_root(&outcomes),
                state_root,
            },
            outcomes,
            diff: SegmentDiff {
                chain_id: chain,
                accounts: accounts.written,
                state_root,
            },
            nonces,
        }
    }
}

/// Commitment after a segment: `sha256(previous ‖ changed accounts in address order)`. Costs
/// O(changes), is identical on every node, and chains every earlier state. (The EVM executor
/// replaces it with an authenticated trie so single accounts can be proven.)
pub fn next_state_root(previous: B256, written: &BTreeMap<Address, Account>) -> B256 {
    if written.is_empty() {
        return previous;
    }
    let mut bytes = Vec::with_capacity(written.len() * (20 + 8 + 32));
    for (address, account) in written {
        bytes.extend_from_slice(address.as_slice());
        bytes.extend_from_slice(&account.nonce.to_be_bytes());
        bytes.extend_from_slice(&account.balance.to_be_bytes::<32>());
    }
    sha256_concat(&[previous.as_slice(), &bytes])
}

/// Merkle root over the receipts (status byte, reason, gas used).
pub fn receipts_root(outcomes: &[TxOutcome]) -> B256 {
    let leaves: Vec<B256> = outcomes
        .iter()
        .map(|o| match o {
            TxOutcome::Success { gas_used } => sha256_concat(&[&[1u8], &gas_used.to_be_bytes()]),
            TxOutcome::Invalid(reason) => sha256_concat(&[&[0u8, *reason as u8]]),
        })
        .collect();
    merkle_root(&leaves)
}

/// Committed account state of every chain, in memory (persisted by the node's store).
#[derive(Debug, Default)]
pub struct MemoryState {
    accounts: HashMap<(ChainId, Address), Account>,
    roots: HashMap<ChainId, B256>,
}

impl MemoryState {
    /// Funds `address` on `chain` (genesis allocations).
    pub fn fund(&mut self, chain: ChainId, address: Address, balance: U256) {
        self.accounts
            .insert((chain, address), Account { nonce: 0, balance });
    }

    /// Applies a committed segment's writes.
    pub fn apply(&mut self, diff: &SegmentDiff) {
        for (address, account) in &diff.accounts {
            self.accounts.insert((diff.chain_id, *address), *account);
        }
        self.roots.insert(diff.chain_id, diff.state_root);
    }
}

impl StateRead for MemoryState {
    fn account(&self, chain: ChainId, address: &Address) -> Account {
        self.accounts
            .get(&(chain, *address))
            .copied()
            .unwrap_or_default()
    }

    fn state_root(&self, chain: ChainId) -> B256 {
        self.roots.get(&chain).copied().unwrap_or_default()
    }
}
