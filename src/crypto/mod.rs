//! Cryptography: every external crypto library is owned by exactly one module here.
//!
//! - [`bls`]: BLS12-381 (min_pk) signatures for votes, certificates and reveals.
//! - [`tx`]: Ethereum signed transactions and secp256k1 sender recovery.
//! - [`hash`]: SHA-256 (SHA-NI through `sha2`'s asm backend) and Keccak-256.

pub mod bls;
pub mod hash;
pub mod tx;
