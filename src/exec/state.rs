//! Servicechain state as execution sees it: accounts, storage slots and contract code of each
//! chain, read through [`StateRead`] (RocksDB on a node, [`MemoryState`] in unit tests and
//! benchmarks), and the [`SegmentDiff`] a segment leaves behind once its block commits.
//!
//! Every read names its chain: chains share nothing, so a segment of one chain can neither read
//! nor write another chain's state.

use super::commitment::next_state_root;
use crate::types::ChainId;
use alloy_primitives::map::HashMap;
use alloy_primitives::{Address, Bytes, B256, U256};
use std::collections::BTreeMap;

/// Keccak-256 of empty code: the code hash of every account without code.
pub const EMPTY_CODE_HASH: B256 = revm::primitives::KECCAK_EMPTY;

/// One account of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    /// Keccak-256 of the account's code ([`EMPTY_CODE_HASH`] for none).
    pub code_hash: B256,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: EMPTY_CODE_HASH,
        }
    }
}

impl Account {
    /// An account without code holding `balance`.
    pub fn with_balance(balance: U256) -> Self {
        Self {
            balance,
            ..Self::default()
        }
    }

    pub fn has_code(&self) -> bool {
        self.code_hash != EMPTY_CODE_HASH
    }
}

/// Why state could not be read. Execution stops on it: a node that cannot read its state must
/// not vote on blocks or commit them.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database failed (I/O, corruption reported by RocksDB).
    #[error("state backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value does not decode: the database is corrupt.
    #[error("state of chain {chain}: malformed {what}: {detail}")]
    Corrupt {
        chain: ChainId,
        what: &'static str,
        detail: String,
    },
    /// A chain's state cannot be taken as one snapshot (too large to move yet).
    #[error(transparent)]
    Snapshot(#[from] super::snapshot::SnapshotError),
    /// The EVM refused its environment (a bug in how Kaon drives it, never transaction input).
    #[error("EVM environment: {0}")]
    Environment(String),
}

impl revm::database_interface::DBErrorMarker for StateError {}

/// Read access to committed state, as executors need it.
pub trait StateRead: Sync {
    /// The account at `address`; `None` if it does not exist.
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError>;
    /// The value of storage `slot` of `address` (zero when never written).
    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError>;
    /// Contract code by its Keccak-256 hash.
    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError>;
    /// The chain's state commitment after its last applied segment.
    fn state_root(&self, chain: ChainId) -> Result<B256, StateError>;

    /// The next nonce of `address` (0 for an account that does not exist).
    fn nonce(&self, chain: ChainId, address: &Address) -> Result<u64, StateError> {
        Ok(self.account(chain, address)?.map_or(0, |a| a.nonce))
    }
}

/// The state writes of one segment, applied only when its block commits. Maps are ordered so
/// that the commitment over them is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentDiff {
    pub chain_id: ChainId,
    /// New account values; `None` deletes the account (self-destructed, or touched while empty:
    /// EIP-161).
    pub accounts: BTreeMap<Address, Option<Account>>,
    /// New storage values; zero clears the slot.
    pub storage: BTreeMap<(Address, U256), U256>,
    /// Code of contracts created by the segment, by hash (bound by the accounts' code hashes).
    pub code: BTreeMap<B256, Bytes>,
    /// The chain's state commitment after the segment.
    pub state_root: B256,
    /// What the writes replace, captured while executing (so persisting the block's history
    /// reads nothing back); `None` for diffs built otherwise (genesis allocations), whose
    /// previous values the store reads.
    pub prior: Option<Prior>,
}

/// The values a segment's writes replace: each written account and slot as the chain's state
/// held it before the segment (a slot the segment never read, such as a new contract's, may be
/// left out), and the commitment before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prior {
    pub accounts: alloy_primitives::map::AddressMap<Option<Account>>,
    pub storage: HashMap<(Address, U256), U256>,
    pub state_root: B256,
}

impl SegmentDiff {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.storage.is_empty()
    }

    /// The values this diff's writes replace in `state` (what execution captures as it goes).
    pub fn prior_in(&self, state: &dyn StateRead) -> Result<Prior, StateError> {
        let chain = self.chain_id;
        Ok(Prior {
            accounts: self
                .accounts
                .keys()
                .map(|a| Ok((*a, state.account(chain, a)?)))
                .collect::<Result<_, StateError>>()?,
            storage: self
                .storage
                .keys()
                .map(|(a, slot)| Ok(((*a, *slot), state.storage(chain, a, slot)?)))
                .collect::<Result<_, StateError>>()?,
            state_root: state.state_root(chain)?,
        })
    }
}

/// The diff that funds `allocations` on `chain`, chained onto the chain's commitment
/// `previous` (zero for a chain that has no state yet).
pub fn genesis_diff(
    chain: ChainId,
    allocations: &[(Address, U256)],
    previous: B256,
) -> SegmentDiff {
    let accounts: BTreeMap<Address, Option<Account>> = allocations
        .iter()
        .map(|(address, balance)| (*address, Some(Account::with_balance(*balance))))
        .collect();
    let storage = BTreeMap::new();
    SegmentDiff {
        chain_id: chain,
        state_root: next_state_root(previous, &accounts, &storage),
        accounts,
        storage,
        code: BTreeMap::new(),
        prior: None,
    }
}

/// A region's genesis allocations as one diff per chain, in chain order.
pub fn genesis_diffs(allocations: &[(ChainId, Address, U256)]) -> Vec<SegmentDiff> {
    let mut by_chain: BTreeMap<ChainId, Vec<(Address, U256)>> = BTreeMap::new();
    for (chain, address, balance) in allocations {
        by_chain
            .entry(*chain)
            .or_default()
            .push((*address, *balance));
    }
    by_chain
        .into_iter()
        .map(|(chain, allocs)| genesis_diff(chain, &allocs, B256::ZERO))
        .collect()
}

/// Committed state of every chain, in memory: the [`StateRead`] of unit tests and benchmarks
/// (a node keeps its state in RocksDB, `storage::state`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryState {
    accounts: HashMap<(ChainId, Address), Account>,
    storage: HashMap<(ChainId, Address, U256), U256>,
    code: HashMap<(ChainId, B256), Bytes>,
    roots: HashMap<ChainId, B256>,
}

impl MemoryState {
    /// Funds `address` on `chain` without touching the chain's commitment (test setup).
    pub fn fund(&mut self, chain: ChainId, address: Address, balance: U256) {
        self.accounts
            .insert((chain, address), Account::with_balance(balance));
    }

    /// Applies a committed segment's writes.
    pub fn apply(&mut self, diff: &SegmentDiff) {
        let chain = diff.chain_id;
        for (address, account) in &diff.accounts {
            match account {
                Some(account) => self.accounts.insert((chain, *address), *account),
                None => self.accounts.remove(&(chain, *address)),
            };
        }
        for ((address, slot), value) in &diff.storage {
            match value.is_zero() {
                true => self.storage.remove(&(chain, *address, *slot)),
                false => self.storage.insert((chain, *address, *slot), *value),
            };
        }
        for (hash, code) in &diff.code {
            self.code.insert((chain, *hash), code.clone());
        }
        self.roots.insert(chain, diff.state_root);
    }
}

impl StateRead for MemoryState {
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError> {
        Ok(self.accounts.get(&(chain, *address)).copied())
    }

    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError> {
        Ok(self
            .storage
            .get(&(chain, *address, *slot))
            .copied()
            .unwrap_or_default())
    }

    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        Ok(self.code.get(&(chain, *code_hash)).cloned())
    }

    fn state_root(&self, chain: ChainId) -> Result<B256, StateError> {
        Ok(self.roots.get(&chain).copied().unwrap_or_default())
    }
}
