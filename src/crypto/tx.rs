//! Ethereum signed transactions: decoding, encoding, signing and secp256k1 sender recovery.
//!
//! This is the first stage that looks inside a transaction. Raw bytes arrive from ingress
//! (`eth_sendRawTransaction`, QUIC forwarding from RNs), are decoded here with explicit limits,
//! and have their senders recovered in rayon batches before the mempool of the servicechain
//! named by the chain id ever sees them:
//!
//! ```text
//! ingress (raw bytes) ─► tx sigverify: decode + recover_batch (this module) ─► mempool
//! ```
//!
//! Every node verifies every transaction and ecrecover is the most expensive step per
//! transaction (~48 µs per core), so it is what bounds a node's transactions per second; the
//! batch functions spread it over all cores (`docs/transactions.md`).
//!
//! Accepted formats (EIP-2718 envelopes exactly as wallets send them): legacy transactions with
//! EIP-155 replay protection, EIP-2930 (type `0x01`) and EIP-1559 (type `0x02`). Decoding is
//! strict RLP: a byte string decodes to at most one transaction and re-encodes to the very same
//! bytes, so the transaction hash is a function of the transaction.
//!
//! Kaon's chain ids name servicechains, so a signature must not be replayable from one to
//! another: legacy transactions without a chain id (pre-EIP-155) are rejected unless
//! [`DecodeRules::allow_unprotected_legacy`] says otherwise. Signatures with a high `s`
//! (EIP-2) are rejected as malleable.
//!
//! This module is the only one in the crate that uses `secp256k1`
//! (see the `recover` submodule).

mod envelope;
pub mod hd;
mod recover;
mod signed;
mod transaction;

pub use envelope::{check_signature, DecodeRules, Signature, SignedTransaction};
pub use recover::{
    address_of, decode_recover_batch, recover_all, recover_batch, recover_digest, sign_digest,
    RecoveredTx, RECOVER_MIN_BATCH,
};
pub use signed::{AccountSigned, Signable};
pub use transaction::{
    AccessList, AccessListItem, Eip1559Tx, Eip2930Tx, LegacyTx, Transaction, TxKind, TxType,
};

/// Largest raw transaction accepted: 128 KiB, geth's `txMaxSize`, so that anything a geth
/// node relays is accepted here and a peer cannot make us hash megabytes per transaction.
pub const MAX_TX_BYTES: usize = 128 * 1024;

/// Why a transaction was rejected. Every malformed input ends here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("empty transaction")]
    Empty,
    #[error("transaction is {len} bytes, the limit is {max}")]
    Oversize { len: usize, max: usize },
    #[error("unsupported transaction type 0x{0:02x}")]
    UnsupportedType(u8),
    #[error("first byte 0x{0:02x} starts an RLP string, not a transaction envelope")]
    NotAnEnvelope(u8),
    #[error("malformed RLP in {field}: {source}")]
    Rlp {
        field: &'static str,
        #[source]
        source: alloy_rlp::Error,
    },
    #[error("{0} bytes after the end of the transaction")]
    TrailingBytes(usize),
    #[error("transaction list has {0} bytes after its last field")]
    ExtraFields(usize),
    #[error("legacy v = {0} is neither 27/28 nor an EIP-155 value (>= 35)")]
    InvalidV(u64),
    #[error("y parity must be 0 or 1, got {0}")]
    InvalidYParity(u64),
    #[error("legacy transaction without a chain id (pre-EIP-155): replay protection required")]
    MissingChainId,
    #[error("chain id {0} is too large for a legacy EIP-155 v")]
    ChainIdTooLarge(u64),
    #[error("signature r or s is zero or not below the curve order")]
    SignatureOutOfRange,
    #[error("signature s is in the upper half of the curve order (malleable, EIP-2)")]
    HighS,
    #[error("signature does not recover to a public key")]
    InvalidSignature,
    #[error("secret key is zero or not below the curve order")]
    InvalidSecretKey,
}
