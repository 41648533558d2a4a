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

/// Most development accounts `kaon devnet --accounts` funds (each one is in every genesis).
pub const MAX_DEV_ACCOUNTS: usize = 1_000;

/// The first `count` accounts of [`DEV_MNEMONIC`] (`m/44'/60'/0'/0/i`).
pub fn developer_accounts(count: usize) -> Vec<DevAccount> {
    // Invariant: derivation fails with probability ~2^-127 per step, and the first accounts
    // of this fixed mnemonic are checked by the tests.
    accounts_of(DEV_MNEMONIC, count).expect("derivable dev keys")
}

/// The first `count` accounts of `mnemonic` along Ethereum's BIP-44 path (`m/44'/60'/0'/0/i`),
/// as wallets derive them. The phrase is taken as given (UTF-8, BIP-39's seed function); its
/// words are not checked against a word list.
pub fn accounts_of(mnemonic: &str, count: usize) -> anyhow::Result<Vec<DevAccount>> {
    anyhow::ensure!(
        count <= MAX_DEV_ACCOUNTS,
        "{count} development accounts: at most {MAX_DEV_ACCOUNTS}"
    );
    let count = u32::try_from(count)?;
    let seed = mnemonic_seed(mnemonic);
    (0..count)
        .map(|i| {
            let secret = derive_secret(&seed, &ethereum_path(i))
                .map_err(|e| anyhow::anyhow!("development account {i}: {e}"))?;
            let address =
                address_of(&secret).map_err(|e| anyhow::anyhow!("development account {i}: {e}"))?;
            Ok(DevAccount { secret, address })
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

    #[test]
    fn another_mnemonic_gives_other_accounts_and_the_count_is_bounded() {
        let phrase = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let accounts = accounts_of(phrase, 1).unwrap();
        // What wallets derive at m/44'/60'/0'/0/0 from this BIP-39 test vector's phrase.
        assert_eq!(
            accounts[0].address.to_checksum(None),
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
        );
        assert_eq!(accounts_of(DEV_MNEMONIC, 3).unwrap(), developer_accounts(3));
        assert!(accounts_of(DEV_MNEMONIC, MAX_DEV_ACCOUNTS + 1).is_err());
    }
}
