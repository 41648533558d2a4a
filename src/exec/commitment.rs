//! Per-servicechain state commitment: a hash chain over canonical segment diffs,
//!
//! ```text
//! root(after segment) = sha256("KAON/state/v1" ‖ root(before) ‖ accounts ‖ storage)
//! ```
//!
//! with every written account (address, then deletion flag or nonce, balance, code hash) and
//! storage slot (address, slot, value) in ascending key order, each part counted. It costs time
//! proportional to what the segment changed, never to the size of the state, and it binds the
//! whole history of the chain's state: two nodes with the same root applied the same writes in
//! the same order from the same genesis. It gives no inclusion proofs for single accounts
//! (`docs/execution.md`).

use super::state::Account;
use crate::crypto::hash::sha256_concat;
use alloy_primitives::{Address, B256, U256};
use std::collections::BTreeMap;

/// Domain tag of the state commitment, so a root can never be read as another kind of hash.
const STATE_DOMAIN: &[u8] = b"KAON/state/v1";

/// Bytes of one account entry: address, flag, nonce, balance, code hash.
const ACCOUNT_ENTRY: usize = 20 + 1 + 8 + 32 + 32;
/// Bytes of one storage entry: address, slot, value.
const STORAGE_ENTRY: usize = 20 + 32 + 32;

/// The commitment after applying `accounts` and `storage` on top of `previous`; `previous`
/// itself when nothing changed.
pub fn next_state_root(
    previous: B256,
    accounts: &BTreeMap<Address, Option<Account>>,
    storage: &BTreeMap<(Address, U256), U256>,
) -> B256 {
    if accounts.is_empty() && storage.is_empty() {
        return previous;
    }
    let mut bytes =
        Vec::with_capacity(8 + accounts.len() * ACCOUNT_ENTRY + storage.len() * STORAGE_ENTRY);
    bytes.extend_from_slice(&(accounts.len() as u32).to_be_bytes());
    for (address, account) in accounts {
        bytes.extend_from_slice(address.as_slice());
        match account {
            None => bytes.push(0),
            Some(a) => {
                bytes.push(1);
                bytes.extend_from_slice(&a.nonce.to_be_bytes());
                bytes.extend_from_slice(&a.balance.to_be_bytes::<32>());
                bytes.extend_from_slice(a.code_hash.as_slice());
            }
        }
    }
    bytes.extend_from_slice(&(storage.len() as u32).to_be_bytes());
    for ((address, slot), value) in storage {
        bytes.extend_from_slice(address.as_slice());
        bytes.extend_from_slice(&slot.to_be_bytes::<32>());
        bytes.extend_from_slice(&value.to_be_bytes::<32>());
    }
    sha256_concat(&[STATE_DOMAIN, previous.as_slice(), &bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(address: u8, account: Option<Account>) -> BTreeMap<Address, Option<Account>> {
        BTreeMap::from([(Address::repeat_byte(address), account)])
    }

    #[test]
    fn no_change_keeps_the_root_and_every_field_is_bound() {
        let prev = B256::repeat_byte(9);
        let none = BTreeMap::new();
        assert_eq!(next_state_root(prev, &none, &BTreeMap::new()), prev);
        let base = Account::with_balance(U256::from(5));
        let roots = [
            next_state_root(prev, &one(1, Some(base)), &BTreeMap::new()),
            next_state_root(prev, &one(2, Some(base)), &BTreeMap::new()),
            next_state_root(prev, &one(1, None), &BTreeMap::new()),
            next_state_root(
                prev,
                &one(1, Some(Account { nonce: 1, ..base })),
                &BTreeMap::new(),
            ),
            next_state_root(
                prev,
                &one(
                    1,
                    Some(Account {
                        code_hash: B256::ZERO,
                        ..base
                    }),
                ),
                &BTreeMap::new(),
            ),
            next_state_root(B256::ZERO, &one(1, Some(base)), &BTreeMap::new()),
            next_state_root(
                prev,
                &BTreeMap::new(),
                &BTreeMap::from([((Address::repeat_byte(1), U256::from(1)), U256::from(2))]),
            ),
        ];
        for (i, a) in roots.iter().enumerate() {
            for b in &roots[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
