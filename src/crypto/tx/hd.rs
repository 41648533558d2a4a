//! Hierarchical deterministic keys (BIP-39 seed, BIP-32 derivation, BIP-44 Ethereum path), so
//! development accounts come from a mnemonic any wallet can import.
//!
//! Only what a development network needs: the seed from a mnemonic phrase (PBKDF2-HMAC-SHA512,
//! 2048 rounds, salt `"mnemonic"`; the phrase's checksum is not validated — it is ours and
//! documented), and private child derivation along `m/44'/60'/0'/0/i`.

use super::TxError;
use hmac::{Hmac, Mac};
use secp256k1::{PublicKey, Scalar, SecretKey, SECP256K1};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

const HARDENED: u32 = 1 << 31;

/// The Ethereum BIP-44 path of account `index`: `m/44'/60'/0'/0/index`.
pub fn ethereum_path(index: u32) -> [u32; 5] {
    [44 | HARDENED, 60 | HARDENED, HARDENED, 0, index]
}

/// BIP-39 seed of `phrase` with an empty passphrase.
pub fn mnemonic_seed(phrase: &str) -> [u8; 64] {
    pbkdf2_hmac_sha512(phrase.as_bytes(), b"mnemonic", 2048)
}

/// The secret key at `path` below the master key of `seed` (BIP-32).
pub fn derive_secret(seed: &[u8], path: &[u32]) -> Result<[u8; 32], TxError> {
    let master = hmac_sha512(b"Bitcoin seed", &[seed]);
    let (mut key, mut chain) = split_key(&master)?;
    for &index in path {
        let index_bytes = index.to_be_bytes();
        let child = if index >= HARDENED {
            hmac_sha512(&chain, &[&[0u8], &key.secret_bytes(), &index_bytes])
        } else {
            let public = PublicKey::from_secret_key(SECP256K1, &key).serialize();
            hmac_sha512(&chain, &[&public, &index_bytes])
        };
        let tweak: [u8; 32] = child[..32]
            .try_into()
            .map_err(|_| TxError::InvalidSecretKey)?;
        let tweak = Scalar::from_be_bytes(tweak).map_err(|_| TxError::InvalidSecretKey)?;
        key = key
            .add_tweak(&tweak)
            .map_err(|_| TxError::InvalidSecretKey)?;
        chain.copy_from_slice(&child[32..]);
    }
    Ok(key.secret_bytes())
}

fn split_key(i: &[u8; 64]) -> Result<(SecretKey, [u8; 32]), TxError> {
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&i[..32]);
    let key = SecretKey::from_byte_array(secret).map_err(|_| TxError::InvalidSecretKey)?;
    let mut chain = [0u8; 32];
    chain.copy_from_slice(&i[32..]);
    Ok((key, chain))
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = HmacSha512::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2 with HMAC-SHA512 and one 64-byte output block (all BIP-39 needs).
fn pbkdf2_hmac_sha512(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 64] {
    let mut u = hmac_sha512(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac_sha512(password, &[&u]);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;

    #[test]
    fn bip39_seed_matches_the_reference_vector() {
        // BIP-39 reference vectors use the passphrase "TREZOR"; this is the widely published
        // empty-passphrase seed of the "abandon … about" phrase.
        let phrase = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                      abandon abandon about";
        assert_eq!(
            hex::encode(mnemonic_seed(phrase)),
            "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc19a5ac40b389cd3\
             70d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4"
        );
    }

    #[test]
    fn bip32_test_vector_1_chain() {
        // BIP-32 test vector 1: seed 000102…0f, m/0'/1/2'/2/1000000000.
        let seed: Vec<u8> = (0u8..16).collect();
        let path = [HARDENED, 1, 2 | HARDENED, 2, 1_000_000_000];
        assert_eq!(
            hex::encode(derive_secret(&seed, &path).unwrap()),
            "471b76e389e528d6de6d816857e012c5455051cad6660850e58372a6c3e6e7c8"
        );
        assert_eq!(
            hex::encode(derive_secret(&seed, &[]).unwrap()),
            "e8f32e723decf4051aefac8e2c93c9c5b214313817cdb01a1494b917c8436b35"
        );
    }
}
