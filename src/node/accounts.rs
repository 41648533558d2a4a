//! Development accounts: the keys `kaon devnet` funds and prints, derived from a published
//! mnemonic along Ethereum's BIP-44 path, so any wallet or script can import them.
//!
//! The mnemonic is the one Hardhat and Anvil use, so a DApp developer's existing scripts,
//! wallet imports and test fixtures address the same accounts. These keys are public: they
//! must never hold value on a real network.

use super::loadgen::DevAccount;
use crate::crypto::tx::address_of;
use crate::crypto::tx::hd::{derive_secret, ethereum_path, mnemonic_seed};

/// The development mnemonic (public, for local networks only).
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// How many development accounts `kaon devnet` funds and prints.
pub const DEV_ACCOUNTS: usize = 10;

/// The first `count` accounts of [`DEV_MNEMONIC`] (`m/44'/60'/0'/0/i`).
pub fn developer_accounts(count: usize) -> Vec<DevAccount> {
    let seed = mnemonic_seed(DEV_MNEMONIC);
    (0..count as u32)
        .map(|i| {
            // Invariant: derivation fails with probability ~2^-127 per step, and the first
            // accounts of this fixed mnemonic are checked by the tests.
            let secret = derive_secret(&seed, &ethereum_path(i)).expect("derivable dev key");
            let address = address_of(&secret).expect("valid dev key");
            DevAccount { secret, address }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;

    #[test]
    fn the_first_accounts_match_what_wallets_derive_from_the_mnemonic() {
        let accounts = developer_accounts(2);
        assert_eq!(
            accounts[0].address.to_checksum(None),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            hex::encode(accounts[0].secret),
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
        );
        assert_eq!(
            accounts[1].address.to_checksum(None),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }
}
