//! A servicechain's whole state as one value: what a region sends when a chain moves to
//! another region (`docs/regions.md`, "Migration").
//!
//! The state commitment is a hash chain over diffs ([`super::commitment`]) and proves no single
//! account, so a snapshot is bound by its own root: [`ChainSnapshot::root`] is the commitment
//! of the snapshot written as one diff onto an empty chain — every account, every non-zero
//! storage slot, in key order — which the source region computes when it freezes the chain and
//! the target recomputes from the bytes it is sent. Contract code is bound by the accounts'
//! code hashes.
//!
//! A state larger than one system transaction travels in chunks ([`ChainSnapshot::chunks`]):
//! consecutive runs of accounts, then of slots, of at most [`MAX_CHUNK_BYTES`] each, every
//! contract's code in the chunk of its account. Each chunk is a snapshot of its own with its
//! own root, and what the source records is [`chunked_root`] over those roots in order, so
//! the target checks every chunk on arrival, not only once the last one is in.

use super::commitment::next_state_root;
use super::state::{Account, SegmentDiff, EMPTY_CODE_HASH};
use crate::crypto::hash::{keccak256, sha256_concat};
use crate::types::ChainId;
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use std::collections::{BTreeMap, HashSet};

/// Bytes of state a move carries, as counted by [`SnapshotSize`]: about 180 000 accounts.
/// The freezing block reads it whole on every node, and the target holds its chunks until the
/// last one is in.
pub const MAX_SNAPSHOT_BYTES: usize = 16 << 20;
/// Most entries (accounts and slots) a snapshot within [`MAX_SNAPSHOT_BYTES`] can hold.
pub const MAX_SNAPSHOT_ENTRIES: usize = MAX_SNAPSHOT_BYTES / SnapshotSize::SLOT;
/// Bytes one chunk holds: it travels inside one system transaction (256 KiB), the first one
/// with the sealed header that proves the move.
pub const MAX_CHUNK_BYTES: usize = 128 << 10;
/// Most chunks a move's state is cut into (a chunk is cut when the next entry would not fit,
/// so each holds more than 100 KiB: the largest contract code is 24 KiB).
pub const MAX_CHUNKS: usize = 256;
const CHUNKED_ROOT_DOMAIN: &[u8] = b"KAON/moved-state/v1";

/// One account of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct SnapshotAccount {
    pub address: Address,
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

/// One non-zero storage slot of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct SnapshotSlot {
    pub address: Address,
    pub slot: U256,
    pub value: U256,
}

/// A servicechain's state at one height: accounts and slots in key order, and the code of
/// every contract among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct ChainSnapshot {
    pub accounts: Vec<SnapshotAccount>,
    pub storage: Vec<SnapshotSlot>,
    pub code: Vec<Bytes>,
}

/// Why a snapshot cannot be taken or does not hold together.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("the chain's state exceeds {MAX_SNAPSHOT_BYTES} bytes, the most a move carries yet")]
    TooLarge,
    #[error("a contract's code of {0} bytes does not fit a {MAX_CHUNK_BYTES}-byte chunk")]
    CodeTooLarge(usize),
    #[error("accounts or storage slots are not in strictly ascending key order")]
    NotInOrder,
    #[error("contract {0} has no code in the snapshot")]
    MissingCode(Address),
    #[error("the snapshot carries code no account uses")]
    StrayCode,
}

/// Running byte count of a snapshot being built, checked against [`MAX_SNAPSHOT_BYTES`]
/// after every entry: a chain too large to move is refused the same way on every node.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotSize(usize);

/// [`ChainSnapshot::root`] of each chunk, in order, as one root: what a move records.
pub fn chunked_root(chunk_roots: &[B256]) -> B256 {
    let parts: Vec<&[u8]> = std::iter::once(CHUNKED_ROOT_DOMAIN)
        .chain(chunk_roots.iter().map(|r| r.as_slice()))
        .collect();
    sha256_concat(&parts)
}

/// Cuts a snapshot into chunks as its entries come, in order ([`ChainSnapshot::chunks`]).
#[derive(Default)]
struct Cutter {
    done: Vec<ChainSnapshot>,
    chunk: ChainSnapshot,
    /// Bytes in `chunk`, as [`SnapshotSize`] counts them.
    used: usize,
    /// Code hashes whose code `chunk` carries.
    codes: HashSet<B256>,
}

impl Cutter {
    /// Starts a new chunk if `bytes` more do not fit the current one (never an empty one).
    fn make_room(&mut self, bytes: usize) {
        if self.used > 0 && self.used.saturating_add(bytes) > MAX_CHUNK_BYTES {
            self.done.push(std::mem::take(&mut self.chunk));
            self.codes.clear();
            self.used = 0;
        }
    }

    fn account(
        &mut self,
        account: &SnapshotAccount,
        code: Option<&Bytes>,
    ) -> Result<(), SnapshotError> {
        let code_len = code.map_or(0, |c| c.len());
        if SnapshotSize::ACCOUNT + code_len > MAX_CHUNK_BYTES {
            return Err(SnapshotError::CodeTooLarge(code_len));
        }
        let carried = |cutter: &Self| code.is_some() && cutter.codes.contains(&account.code_hash);
        let first_needs = SnapshotSize::ACCOUNT + if carried(self) { 0 } else { code_len };
        self.make_room(first_needs);
        self.chunk.accounts.push(*account);
        self.used += SnapshotSize::ACCOUNT;
        if let Some(code) = code.filter(|_| !carried(self)) {
            self.chunk.code.push(code.clone());
            self.codes.insert(account.code_hash);
            self.used += code.len();
        }
        Ok(())
    }

    fn slot(&mut self, slot: &SnapshotSlot) {
        self.make_room(SnapshotSize::SLOT);
        self.chunk.storage.push(*slot);
        self.used += SnapshotSize::SLOT;
    }

    fn finish(mut self) -> Result<Vec<ChainSnapshot>, SnapshotError> {
        self.done.push(self.chunk);
        match self.done.len() > MAX_CHUNKS {
            true => Err(SnapshotError::TooLarge),
            false => Ok(self.done),
        }
    }
}

impl SnapshotSize {
    /// Account: address, nonce, balance, code hash.
    pub const ACCOUNT: usize = 20 + 8 + 32 + 32;
    /// Slot: address, slot, value.
    pub const SLOT: usize = 20 + 32 + 32;

    pub fn account(&mut self) -> Result<(), SnapshotError> {
        self.add(Self::ACCOUNT)
    }

    pub fn slot(&mut self) -> Result<(), SnapshotError> {
        self.add(Self::SLOT)
    }

    pub fn code(&mut self, code: &[u8]) -> Result<(), SnapshotError> {
        self.add(code.len())
    }

    fn add(&mut self, bytes: usize) -> Result<(), SnapshotError> {
        self.0 = self.0.saturating_add(bytes);
        match self.0 > MAX_SNAPSHOT_BYTES {
            true => Err(SnapshotError::TooLarge),
            false => Ok(()),
        }
    }
}

impl ChainSnapshot {
    /// A snapshot of `accounts` and `storage` (key order, as the maps hold them), with the code
    /// `code_of` finds for each contract; [`SnapshotError::TooLarge`] past the limit.
    pub fn build<E: From<SnapshotError>>(
        accounts: &BTreeMap<Address, Account>,
        storage: &BTreeMap<(Address, U256), U256>,
        mut code_of: impl FnMut(&B256) -> Result<Option<Bytes>, E>,
    ) -> Result<Self, E> {
        let mut size = SnapshotSize::default();
        let mut snapshot = Self::default();
        let mut codes = BTreeMap::new();
        for (address, a) in accounts {
            size.account()?;
            snapshot.accounts.push(SnapshotAccount {
                address: *address,
                nonce: a.nonce,
                balance: a.balance,
                code_hash: a.code_hash,
            });
            if a.has_code() && !codes.contains_key(&a.code_hash) {
                let code = code_of(&a.code_hash)?.ok_or(SnapshotError::MissingCode(*address))?;
                size.code(&code)?;
                codes.insert(a.code_hash, code);
            }
        }
        for ((address, slot), value) in storage.iter().filter(|(_, v)| !v.is_zero()) {
            size.slot()?;
            snapshot.storage.push(SnapshotSlot {
                address: *address,
                slot: *slot,
                value: *value,
            });
        }
        snapshot.code = codes.into_values().collect();
        Ok(snapshot)
    }

    /// The snapshot cut into chunks of at most [`MAX_CHUNK_BYTES`] (one, possibly empty, for
    /// a small state): accounts in order, each contract's code in the chunk of its account,
    /// then slots in order. The same state always gives the same chunks.
    pub fn chunks(&self) -> Result<Vec<ChainSnapshot>, SnapshotError> {
        let codes: BTreeMap<B256, &Bytes> = self.code.iter().map(|c| (keccak256(c), c)).collect();
        let mut cutter = Cutter::default();
        for account in &self.accounts {
            cutter.account(account, codes.get(&account.code_hash).copied())?;
        }
        for slot in &self.storage {
            cutter.slot(slot);
        }
        cutter.finish()
    }

    /// The state `chunks` were cut from ([`Self::chunks`]), each contract's code once.
    pub fn merge(chunks: impl IntoIterator<Item = ChainSnapshot>) -> Self {
        let mut whole = Self::default();
        let mut codes = BTreeMap::new();
        for chunk in chunks {
            whole.accounts.extend(chunk.accounts);
            whole.storage.extend(chunk.storage);
            codes.extend(chunk.code.into_iter().map(|c| (keccak256(&c), c)));
        }
        whole.code = codes.into_values().collect();
        whole
    }

    /// The snapshot's root: its state written as one diff onto an empty chain.
    pub fn root(&self) -> B256 {
        let (accounts, storage) = self.maps();
        next_state_root(B256::ZERO, &accounts, &storage)
    }

    /// Checks the snapshot holds together — keys strictly ascending, no zero slot, the code
    /// of every contract present and nothing else — so equal roots mean equal states.
    pub fn check(&self) -> Result<(), SnapshotError> {
        let accounts_ordered = self
            .accounts
            .windows(2)
            .all(|w| w[0].address < w[1].address);
        let slots_ordered = self
            .storage
            .windows(2)
            .all(|w| (w[0].address, w[0].slot) < (w[1].address, w[1].slot));
        if !accounts_ordered || !slots_ordered || self.storage.iter().any(|s| s.value.is_zero()) {
            return Err(SnapshotError::NotInOrder);
        }
        let codes: BTreeMap<B256, &Bytes> = self.code.iter().map(|c| (keccak256(c), c)).collect();
        if let Some(a) = self
            .accounts
            .iter()
            .find(|a| a.code_hash != EMPTY_CODE_HASH && !codes.contains_key(&a.code_hash))
        {
            return Err(SnapshotError::MissingCode(a.address));
        }
        let used = |hash: &B256| {
            *hash != EMPTY_CODE_HASH && self.accounts.iter().any(|a| a.code_hash == *hash)
        };
        if codes.len() != self.code.len() || !codes.keys().all(used) {
            return Err(SnapshotError::StrayCode);
        }
        Ok(())
    }

    /// The diff that writes this state onto `chain`, chained onto the commitment `previous`
    /// (the chain's commitment where it was frozen, so its hash chain goes on across the move).
    pub fn diff(&self, chain: ChainId, previous: B256) -> SegmentDiff {
        let (accounts, storage) = self.maps();
        SegmentDiff {
            chain_id: chain,
            state_root: next_state_root(previous, &accounts, &storage),
            accounts,
            storage,
            code: self
                .code
                .iter()
                .map(|c| (keccak256(c), c.clone()))
                .collect(),
            prior: None,
        }
    }

    #[allow(clippy::type_complexity)]
    fn maps(
        &self,
    ) -> (
        BTreeMap<Address, Option<Account>>,
        BTreeMap<(Address, U256), U256>,
    ) {
        let accounts = self
            .accounts
            .iter()
            .map(|a| {
                let account = Account {
                    nonce: a.nonce,
                    balance: a.balance,
                    code_hash: a.code_hash,
                };
                (a.address, Some(account))
            })
            .collect();
        let storage = self
            .storage
            .iter()
            .map(|s| ((s.address, s.slot), s.value))
            .collect();
        (accounts, storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (BTreeMap<Address, Account>, BTreeMap<(Address, U256), U256>) {
        let code = Bytes::from_static(&[0x60, 0x00]);
        let contract = Account {
            nonce: 1,
            balance: U256::from(7),
            code_hash: keccak256(&code),
        };
        let accounts = BTreeMap::from([
            (Address::repeat_byte(2), contract),
            (
                Address::repeat_byte(1),
                Account::with_balance(U256::from(5)),
            ),
        ]);
        let storage = BTreeMap::from([
            ((Address::repeat_byte(2), U256::from(1)), U256::from(9)),
            ((Address::repeat_byte(2), U256::from(2)), U256::ZERO),
        ]);
        (accounts, storage)
    }

    fn snapshot() -> ChainSnapshot {
        let (accounts, storage) = state();
        ChainSnapshot::build::<SnapshotError>(&accounts, &storage, |_| {
            Ok(Some(Bytes::from_static(&[0x60, 0x00])))
        })
        .unwrap()
    }

    #[test]
    fn a_snapshot_is_ordered_drops_zero_slots_and_its_root_binds_every_value() {
        let s = snapshot();
        assert_eq!(s.accounts[0].address, Address::repeat_byte(1));
        assert_eq!(s.storage.len(), 1);
        assert_eq!(s.code.len(), 1);
        s.check().unwrap();
        let mut richer = s.clone();
        richer.accounts[0].balance += U256::from(1);
        assert_ne!(richer.root(), s.root());
        let mut slot = s.clone();
        slot.storage[0].value = U256::from(10);
        assert_ne!(slot.root(), s.root());
        // Written onto a chain, it continues that chain's commitment.
        let previous = B256::repeat_byte(3);
        assert_ne!(s.diff(ChainId(5), previous).state_root, s.root());
        assert_eq!(s.diff(ChainId(5), B256::ZERO).state_root, s.root());
    }

    #[test]
    fn a_snapshot_that_does_not_hold_together_is_named() {
        let s = snapshot();
        let mut swapped = s.clone();
        swapped.accounts.swap(0, 1);
        assert_eq!(swapped.check(), Err(SnapshotError::NotInOrder));
        let mut no_code = s.clone();
        no_code.code.clear();
        assert_eq!(
            no_code.check(),
            Err(SnapshotError::MissingCode(Address::repeat_byte(2)))
        );
        let mut stray = s.clone();
        stray.code.push(Bytes::from_static(&[1]));
        assert_eq!(stray.check(), Err(SnapshotError::StrayCode));
        let mut zero = s;
        zero.storage[0].value = U256::ZERO;
        assert_eq!(zero.check(), Err(SnapshotError::NotInOrder));
    }

    /// A state of `accounts` accounts (every fifth a contract, two codes shared among them)
    /// and `slots` slots.
    fn large(accounts: u64, slots: u64) -> ChainSnapshot {
        let codes = [
            Bytes::from(vec![0x60; 3_000]),
            Bytes::from(vec![0x5b; 20_000]),
        ];
        let address = |i: u64| {
            let mut a = [0u8; 20];
            a[..8].copy_from_slice(&i.to_be_bytes());
            Address::from(a)
        };
        let accounts: BTreeMap<Address, Account> = (0..accounts)
            .map(|i| {
                let mut account = Account::with_balance(U256::from(i + 1));
                if i % 5 == 0 {
                    account.code_hash = keccak256(&codes[(i / 5 % 2) as usize]);
                }
                (address(i), account)
            })
            .collect();
        let storage = (0..slots)
            .map(|i| ((address(0), U256::from(i)), U256::from(i + 1)))
            .collect();
        ChainSnapshot::build::<SnapshotError>(&accounts, &storage, |hash| {
            Ok(codes.iter().find(|c| keccak256(c) == *hash).cloned())
        })
        .unwrap()
    }

    #[test]
    fn a_large_state_is_cut_into_chunks_that_each_hold_together_and_merge_back() {
        let whole = large(3_000, 4_000);
        let chunks = whole.chunks().unwrap();
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        for chunk in &chunks {
            chunk.check().unwrap();
            let mut size = 0;
            size += chunk.accounts.len() * SnapshotSize::ACCOUNT;
            size += chunk.storage.len() * SnapshotSize::SLOT;
            size += chunk.code.iter().map(|c| c.len()).sum::<usize>();
            assert!(size <= MAX_CHUNK_BYTES, "{size}");
        }
        assert_eq!(ChainSnapshot::merge(chunks.clone()), whole);
        assert_eq!(whole.chunks().unwrap(), chunks);
        // The recorded root binds every chunk and their order.
        let roots: Vec<B256> = chunks.iter().map(ChainSnapshot::root).collect();
        let mut swapped = roots.clone();
        swapped.swap(0, 1);
        assert_ne!(chunked_root(&swapped), chunked_root(&roots));
        assert_ne!(chunked_root(&roots[1..]), chunked_root(&roots));
        // A small state is one chunk.
        assert_eq!(snapshot().chunks().unwrap(), vec![snapshot()]);
        assert_eq!(ChainSnapshot::default().chunks().unwrap().len(), 1);
    }

    #[test]
    fn a_code_too_large_for_a_chunk_is_named() {
        let code = Bytes::from(vec![0; MAX_CHUNK_BYTES]);
        let contract = SnapshotAccount {
            address: Address::repeat_byte(1),
            nonce: 1,
            balance: U256::ZERO,
            code_hash: keccak256(&code),
        };
        let snapshot = ChainSnapshot {
            accounts: vec![contract],
            storage: Vec::new(),
            code: vec![code],
        };
        assert_eq!(
            snapshot.chunks(),
            Err(SnapshotError::CodeTooLarge(MAX_CHUNK_BYTES))
        );
    }

    #[test]
    fn a_state_past_the_limit_is_refused() {
        let accounts: BTreeMap<Address, Account> = (0..=MAX_SNAPSHOT_BYTES / 92)
            .map(|i| {
                let mut a = [0u8; 20];
                a[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (Address::from(a), Account::with_balance(U256::from(1)))
            })
            .collect();
        let built =
            ChainSnapshot::build::<SnapshotError>(&accounts, &BTreeMap::new(), |_| Ok(None));
        assert_eq!(built, Err(SnapshotError::TooLarge));
    }
}
