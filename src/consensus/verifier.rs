//! Signature checks for consensus, with a cache of verified signatures.
//!
//! The same vote reaches a node directly, inside a justification and again with a decided
//! block; verifying it once is enough. The cache key is the whole claim — public key, message
//! and signature — never the signer alone (a cache keyed by signer lets one valid signature
//! vouch for any later message, a bug Istanbul BFT implementations have shipped).

use super::selection::CnSet;
use crate::crypto::bls::{Signature, SignatureBytes};
use crate::crypto::hash::sha256_concat;
use crate::types::CnIndex;
use alloy_primitives::B256;
use std::collections::HashSet;
use std::sync::Mutex;

/// Entries kept before the cache starts over: bounds memory at ~4 MiB of keys.
const MAX_CACHED: usize = 1 << 17;

/// Verifies BLS claims, remembering the ones that passed.
#[derive(Debug, Default)]
pub struct SigCache {
    verified: Mutex<HashSet<B256>>,
}

impl SigCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `sig` is CN `cn`'s signature over `msg`. Unknown signers and malformed
    /// signature bytes are `false`.
    pub fn verify(&self, set: &CnSet, cn: CnIndex, msg: &[u8], sig: &SignatureBytes) -> bool {
        let (Ok(pk), Ok(pk_bytes)) = (set.key(cn), set.key_bytes(cn)) else {
            return false;
        };
        let key = sha256_concat(&[&pk_bytes.0, &(msg.len() as u64).to_be_bytes(), msg, &sig.0]);
        if self.lock().contains(&key) {
            return true;
        }
        let ok = Signature::try_from(sig).is_ok_and(|s| s.verify(pk, msg));
        if ok {
            let mut cache = self.lock();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    /// Number of cached claims (for metrics and tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<B256>> {
        // A panic while holding this lock cannot leave the set inconsistent (single inserts
        // and clears), so a poisoned lock is still usable.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}
