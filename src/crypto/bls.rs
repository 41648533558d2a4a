//! BLS12-381 signatures (the `min_pk` variant: 48-byte public keys, 96-byte signatures), the
//! only module that touches `blst`.
//!
//! Consensus votes, commit certificates and random reveals are all BLS
//! signatures under the Ethereum proof-of-possession ciphersuite. The hot paths are:
//!
//! - **certificate verification**: the signers' public keys are added up (cheap G1 additions)
//!   and the aggregate signature is checked once, costing about one single verification
//!   whatever the committee size;
//! - **batch verification** of many `(public key, message, signature)` triples over different
//!   messages, with random 64-bit scalars, so a syncing RN checks many blocks' certificates for
//!   about half the pairings; on failure, bisection names the bad items.
//!
//! Aggregating public keys is only sound when every key's holder knows its secret key: a key
//! registered as `pk_x - pk_honest` would make the sum of a set answer to `pk_x` alone (the
//! rogue-key attack). Every key that enters a CN set therefore carries a proof of possession
//! ([`SecretKey::prove_possession`], [`PublicKey::verify_possession`]): a signature over the
//! key itself under the ciphersuite's separate `POP_` tag, so no ordinary signature can pass for
//! one and no proof for an ordinary signature.
//!
//! Points are group-checked once, when bytes become a [`PublicKey`] or [`Signature`], and never
//! again when aggregating or verifying (the check costs ~59 µs per signature).

use alloy_primitives::hex;
use alloy_rlp::{RlpDecodableWrapper, RlpEncodableWrapper};
use blst::min_pk;
use blst::BLST_ERROR;
use rand::RngCore;
use std::fmt;
use thiserror::Error;

/// Domain separation tag of Ethereum's proof-of-possession ciphersuite.
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Domain separation tag of proofs of possession (the ciphersuite's `PopProve`): distinct from
/// [`DST`], so a proof is never a signature over some message and vice versa.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Bytes of a compressed public key.
pub const PUBLIC_KEY_LEN: usize = 48;
/// Bytes of a compressed signature.
pub const SIGNATURE_LEN: usize = 96;
/// Bits of the random scalars of batch verification: forging a batch succeeds with
/// probability 2^-64 per attempt.
const BATCH_SCALAR_BITS: usize = 64;

/// Why a BLS operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BlsError {
    #[error("key seed must be at least 32 bytes, got {0}")]
    SeedTooShort(usize),
    #[error("invalid secret key")]
    InvalidSecretKey,
    #[error("invalid public key: {0:?}")]
    InvalidPublicKey(BLST_ERROR),
    #[error("invalid signature: {0:?}")]
    InvalidSignature(BLST_ERROR),
    #[error("nothing to aggregate")]
    EmptyAggregate,
    #[error("signature does not verify")]
    VerifyFailed,
}

/// A compressed public key as it appears in headers and on the wire (not yet validated).
#[derive(Clone, Copy, PartialEq, Eq, Hash, RlpEncodableWrapper, RlpDecodableWrapper)]
pub struct PublicKeyBytes(pub [u8; PUBLIC_KEY_LEN]);

/// A compressed signature as it appears in headers and on the wire (not yet validated).
#[derive(Clone, Copy, PartialEq, Eq, Hash, RlpEncodableWrapper, RlpDecodableWrapper)]
pub struct SignatureBytes(pub [u8; SIGNATURE_LEN]);

impl Default for SignatureBytes {
    fn default() -> Self {
        Self([0; SIGNATURE_LEN])
    }
}

impl fmt::Debug for PublicKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}…", hex::encode(&self.0[..8]))
    }
}

/// A secret signing key. Its bytes are never printed.
#[derive(Clone)]
pub struct SecretKey(min_pk::SecretKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Derives a key from at least 32 bytes of input keying material (EIP-2333 `KeyGen`).
    pub fn from_seed(ikm: &[u8]) -> Result<Self, BlsError> {
        if ikm.len() < 32 {
            return Err(BlsError::SeedTooShort(ikm.len()));
        }
        min_pk::SecretKey::key_gen(ikm, &[])
            .map(Self)
            .map_err(|_| BlsError::InvalidSecretKey)
    }

    /// A key from its 32-byte big-endian scalar; zero and values ≥ the group order are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, BlsError> {
        min_pk::SecretKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| BlsError::InvalidSecretKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.sk_to_pk())
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg, DST, &[]))
    }

    /// Proof that the holder of this key's public key knows the secret key: the public key's
    /// compressed bytes signed under [`POP_DST`].
    pub fn prove_possession(&self) -> Signature {
        let pk = self.public_key().to_bytes();
        Signature(self.0.sign(&pk.0, POP_DST, &[]))
    }
}

/// A public key that passed decompression, the subgroup check and the not-infinity check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(min_pk::PublicKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

impl PublicKey {
    /// Decompresses and validates a public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlsError> {
        min_pk::PublicKey::key_validate(bytes)
            .map(Self)
            .map_err(BlsError::InvalidPublicKey)
    }

    pub fn to_bytes(&self) -> PublicKeyBytes {
        PublicKeyBytes(self.0.compress())
    }

    /// Whether `proof` is this key's proof of possession ([`SecretKey::prove_possession`]).
    pub fn verify_possession(&self, proof: &Signature) -> bool {
        let pk = self.to_bytes();
        // Both points were validated when they were decoded.
        proof.0.verify(false, &pk.0, POP_DST, &[], &self.0, false) == BLST_ERROR::BLST_SUCCESS
    }
}

impl TryFrom<&PublicKeyBytes> for PublicKey {
    type Error = BlsError;
    fn try_from(bytes: &PublicKeyBytes) -> Result<Self, BlsError> {
        Self::from_bytes(&bytes.0)
    }
}

/// A signature that passed decompression and the subgroup check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(min_pk::Signature);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

impl Signature {
    /// Decompresses and subgroup-checks a signature. The point at infinity is accepted here
    /// (it is a valid aggregate of nothing) and fails every verification against real keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlsError> {
        min_pk::Signature::sig_validate(bytes, false)
            .map(Self)
            .map_err(BlsError::InvalidSignature)
    }

    pub fn to_bytes(&self) -> SignatureBytes {
        SignatureBytes(self.0.compress())
    }

    /// Verifies one signature over `msg` by `pk`.
    pub fn verify(&self, pk: &PublicKey, msg: &[u8]) -> bool {
        count_checks(1);
        // Both points were validated when they were decoded.
        self.0.verify(false, msg, DST, &[], &pk.0, false) == BLST_ERROR::BLST_SUCCESS
    }
}

impl TryFrom<&SignatureBytes> for Signature {
    type Error = BlsError;
    fn try_from(bytes: &SignatureBytes) -> Result<Self, BlsError> {
        Self::from_bytes(&bytes.0)
    }
}

/// Aggregates signatures (already group-checked on decode) into one.
pub fn aggregate_signatures<'a>(
    sigs: impl IntoIterator<Item = &'a Signature>,
) -> Result<Signature, BlsError> {
    let mut iter = sigs.into_iter();
    let first = iter.next().ok_or(BlsError::EmptyAggregate)?;
    let mut agg = min_pk::AggregateSignature::from_signature(&first.0);
    for sig in iter {
        agg.add_signature(&sig.0, false)
            .map_err(BlsError::InvalidSignature)?;
    }
    Ok(Signature(agg.to_signature()))
}

/// Adds public keys (already validated on decode) into the key that verifies their aggregate
/// signature over one message.
pub fn aggregate_public_keys<'a>(
    pks: impl IntoIterator<Item = &'a PublicKey>,
) -> Result<PublicKey, BlsError> {
    let mut iter = pks.into_iter();
    let first = iter.next().ok_or(BlsError::EmptyAggregate)?;
    let mut agg = min_pk::AggregatePublicKey::from_public_key(&first.0);
    for pk in iter {
        agg.add_public_key(&pk.0, false)
            .map_err(BlsError::InvalidPublicKey)?;
    }
    Ok(PublicKey(agg.to_public_key()))
}

/// Verifies an aggregate signature by all of `pks` over one message (the certificate case).
/// An empty key set never verifies.
pub fn fast_aggregate_verify(pks: &[PublicKey], msg: &[u8], sig: &Signature) -> bool {
    aggregate_public_keys(pks).is_ok_and(|pk| sig.verify(&pk, msg))
}

/// One `(public key, message, signature)` claim of a batch; the key may itself be the sum of
/// a certificate's signers.
#[derive(Debug, Clone)]
pub struct SignedMessage {
    pub public_key: PublicKey,
    pub message: Vec<u8>,
    pub signature: Signature,
}

impl SignedMessage {
    pub fn verify(&self) -> bool {
        self.signature.verify(&self.public_key, &self.message)
    }
}

/// Which claims of a batch failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{} of the batch's signatures do not verify: {bad:?}", bad.len())]
pub struct BatchFailure {
    /// Indices of the failing claims, ascending.
    pub bad: Vec<usize>,
}

/// Verifies all claims at once with random 64-bit scalars (≈ half the pairings of one-by-one
/// verification); when the batch fails, bisects to name every bad claim.
pub fn batch_verify(items: &[SignedMessage]) -> Result<(), BatchFailure> {
    let mut bad = Vec::new();
    bisect(items, 0, &mut bad);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(BatchFailure { bad })
    }
}

/// Whether every claim verifies, in one randomized multi-pairing check and no bisection: the
/// cost stays bounded when the batch may be hostile and only "all good" is of use.
pub fn batch_holds(items: &[SignedMessage]) -> bool {
    match items {
        [] => true,
        [one] => one.verify(),
        _ => verify_batch_once(items),
    }
}

fn bisect(items: &[SignedMessage], offset: usize, bad: &mut Vec<usize>) {
    match items {
        [] => {}
        [one] => {
            if !one.verify() {
                bad.push(offset);
            }
        }
        _ if verify_batch_once(items) => {}
        _ => {
            let mid = items.len() / 2;
            bisect(&items[..mid], offset, bad);
            bisect(&items[mid..], offset + mid, bad);
        }
    }
}

thread_local! {
    static CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_checks(claims: usize) {
    CHECKS.with(|c| c.set(c.get().wrapping_add(claims as u64)));
}

/// Signature claims this thread has checked so far (one per claim of a batch): what the
/// consensus cost measurements count per node, independent of the machine's speed.
pub fn checks_on_this_thread() -> u64 {
    CHECKS.with(std::cell::Cell::get)
}

/// One randomized multi-pairing check over all `items` (at least two).
fn verify_batch_once(items: &[SignedMessage]) -> bool {
    count_checks(items.len());
    let mut rng = rand::thread_rng();
    let scalars: Vec<blst::blst_scalar> = items
        .iter()
        .map(|_| {
            let mut b = [0u8; 32];
            // Little-endian scalar; a zero scalar would drop its claim from the check.
            let r = rng.next_u64().max(1);
            b[..8].copy_from_slice(&r.to_le_bytes());
            blst::blst_scalar { b }
        })
        .collect();
    let msgs: Vec<&[u8]> = items.iter().map(|i| i.message.as_slice()).collect();
    let pks: Vec<&min_pk::PublicKey> = items.iter().map(|i| &i.public_key.0).collect();
    let sigs: Vec<&min_pk::Signature> = items.iter().map(|i| &i.signature.0).collect();
    min_pk::Signature::verify_multiple_aggregate_signatures(
        &msgs,
        DST,
        &pks,
        false,
        &sigs,
        false,
        &scalars,
        BATCH_SCALAR_BITS,
    ) == BLST_ERROR::BLST_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed(&[i; 32]).expect("32-byte seed")
    }

    #[test]
    fn sign_verify_and_reject_wrong_message() {
        let sk = key(1);
        let sig = sk.sign(b"hello");
        assert!(sig.verify(&sk.public_key(), b"hello"));
        assert!(!sig.verify(&sk.public_key(), b"hellp"));
        assert!(!sig.verify(&key(2).public_key(), b"hello"));
    }

    #[test]
    fn proof_of_possession_is_bound_to_its_key_and_tag() {
        let (a, b) = (key(4), key(5));
        let proof = a.prove_possession();
        assert!(a.public_key().verify_possession(&proof));
        assert!(!b.public_key().verify_possession(&proof));
        // An ordinary signature over the key's bytes is not a proof: the tags differ.
        let plain = a.sign(&a.public_key().to_bytes().0);
        assert!(!a.public_key().verify_possession(&plain));
        assert!(!proof.verify(&a.public_key(), &a.public_key().to_bytes().0));
    }

    #[test]
    fn short_seed_is_refused() {
        assert_eq!(
            SecretKey::from_seed(&[0; 31]).unwrap_err(),
            BlsError::SeedTooShort(31)
        );
    }

    #[test]
    fn bytes_round_trip() {
        let sk = key(3);
        let pk = sk.public_key();
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes().0).unwrap(), pk);
        let sig = sk.sign(b"m");
        assert_eq!(Signature::from_bytes(&sig.to_bytes().0).unwrap(), sig);
        assert_eq!(
            SecretKey::from_bytes(&sk.to_bytes()).unwrap().public_key(),
            pk
        );
    }

    #[test]
    fn batch_names_exactly_the_bad_claims() {
        let keys: Vec<SecretKey> = (0..9).map(key).collect();
        let msgs: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 32]).collect();
        let mut items: Vec<SignedMessage> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| SignedMessage {
                public_key: k.public_key(),
                message: m.clone(),
                signature: k.sign(m),
            })
            .collect();
        assert_eq!(batch_verify(&items), Ok(()));
        // Swap two signatures: both claims become false.
        let s2 = items[2].signature;
        items[2].signature = items[7].signature;
        items[7].signature = s2;
        assert_eq!(batch_verify(&items), Err(BatchFailure { bad: vec![2, 7] }));
    }
}
