//! secp256k1 (libsecp256k1 through the `secp256k1` crate): sender recovery, one by one and in
//! rayon batches, and signing for tests and the load generator. The only place in the crate
//! that touches `secp256k1`.

use alloy_primitives::{keccak256, Address, B256, U256};
use rayon::prelude::*;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SecretKey, SECP256K1};

use super::envelope::{check_signature, DecodeRules, Signature, SignedTransaction};
use super::transaction::Transaction;
use super::TxError;

/// Fewest transactions one rayon task recovers. A recovery costs ~48 µs, so 32 of them
/// (~1.5 ms) dwarf rayon's per-task overhead, yet a batch of a few hundred still spreads
/// over every core.
pub const RECOVER_MIN_BATCH: usize = 32;

/// A transaction whose sender has been recovered from its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTx {
    tx: SignedTransaction,
    sender: Address,
}

impl RecoveredTx {
    /// Recovers the sender of `tx`.
    pub fn recover(tx: SignedTransaction) -> Result<Self, TxError> {
        let sender = tx.recover_sender()?;
        Ok(Self { tx, sender })
    }

    /// Pairs a transaction with a sender recovered earlier (e.g. before it was stored), without
    /// paying for recovery again. The caller vouches that `sender` signed `tx`.
    pub fn from_trusted_parts(tx: SignedTransaction, sender: Address) -> Self {
        Self { tx, sender }
    }

    pub const fn tx(&self) -> &SignedTransaction {
        &self.tx
    }

    pub const fn sender(&self) -> Address {
        self.sender
    }

    pub fn into_parts(self) -> (SignedTransaction, Address) {
        (self.tx, self.sender)
    }
}

impl SignedTransaction {
    /// The address whose key signed this transaction (ecrecover, ~48 µs).
    pub fn recover_sender(&self) -> Result<Address, TxError> {
        recover_address(self.signing_hash(), self.signature())
    }
}

impl Transaction {
    /// Signs with `secret` (RFC 6979 deterministic nonce, low `s`) and encodes the envelope.
    pub fn sign(&self, secret: &[u8; 32]) -> Result<SignedTransaction, TxError> {
        SignedTransaction::new(self.clone(), sign_digest(secret, self.signing_hash())?)
    }
}

/// Signs a 32-byte digest with `secret` (RFC 6979 deterministic nonce, low `s`), as Ethereum
/// signatures are made: transactions, and Kaon's owner-signed system transactions.
pub fn sign_digest(secret: &[u8; 32], digest: B256) -> Result<Signature, TxError> {
    let key = SecretKey::from_byte_array(*secret).map_err(|_| TxError::InvalidSecretKey)?;
    let (recovery_id, compact) = SECP256K1
        .sign_ecdsa_recoverable(Message::from_digest(digest.0), &key)
        .serialize_compact();
    let y_parity = match i32::from(recovery_id) {
        0 => false,
        1 => true,
        // 2 and 3 mean r overflowed the group order (probability ~2^-127); Ethereum
        // signatures cannot express that.
        _ => return Err(TxError::InvalidSignature),
    };
    Ok(Signature::new(
        U256::from_be_slice(&compact[..32]),
        U256::from_be_slice(&compact[32..]),
        y_parity,
    ))
}

/// The address whose key made `signature` over `digest` (ecrecover).
pub fn recover_digest(digest: B256, signature: &Signature) -> Result<Address, TxError> {
    check_signature(signature)?;
    recover_address(digest, signature)
}

/// The Ethereum address of a secret key (keccak-256 of the public key, last 20 bytes).
pub fn address_of(secret: &[u8; 32]) -> Result<Address, TxError> {
    let key = SecretKey::from_byte_array(*secret).map_err(|_| TxError::InvalidSecretKey)?;
    Ok(public_key_address(&PublicKey::from_secret_key_global(&key)))
}

/// Recovers every sender on the calling thread; the reference [`recover_batch`] is measured
/// against.
pub fn recover_all(txs: &[SignedTransaction]) -> Vec<Result<Address, TxError>> {
    txs.iter().map(SignedTransaction::recover_sender).collect()
}

/// Recovers every sender on the current rayon pool (call inside `pool.install` to pick one),
/// at least [`RECOVER_MIN_BATCH`] per task. Results are in input order.
pub fn recover_batch(txs: &[SignedTransaction]) -> Vec<Result<Address, TxError>> {
    txs.par_iter()
        .with_min_len(RECOVER_MIN_BATCH)
        .map(SignedTransaction::recover_sender)
        .collect()
}

/// The sigverify stage's whole job for one batch from ingress: decode each raw envelope under
/// `rules` and recover its sender, in parallel. Results are in input order.
pub fn decode_recover_batch<B: AsRef<[u8]> + Sync>(
    raws: &[B],
    rules: &DecodeRules,
) -> Vec<Result<RecoveredTx, TxError>> {
    raws.par_iter()
        .with_min_len(RECOVER_MIN_BATCH)
        .map(|raw| RecoveredTx::recover(SignedTransaction::decode_with(raw.as_ref(), rules)?))
        .collect()
}

fn recover_address(hash: B256, signature: &Signature) -> Result<Address, TxError> {
    let recovery_id =
        RecoveryId::try_from(i32::from(signature.v())).map_err(|_| TxError::InvalidSignature)?;
    // `r ‖ s` as 64 big-endian bytes: libsecp256k1's compact form.
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&signature.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&signature.s().to_be_bytes::<32>());
    let signature = RecoverableSignature::from_compact(&compact, recovery_id)
        .map_err(|_| TxError::InvalidSignature)?;
    let public_key = SECP256K1
        .recover_ecdsa(Message::from_digest(hash.0), &signature)
        .map_err(|_| TxError::InvalidSignature)?;
    Ok(public_key_address(&public_key))
}

fn public_key_address(public_key: &PublicKey) -> Address {
    // Uncompressed form is 0x04 ‖ x ‖ y; the address hashes x ‖ y.
    let hash = keccak256(&public_key.serialize_uncompressed()[1..]);
    Address::from_slice(&hash[12..])
}
