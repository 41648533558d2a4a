//! CN-set governance: the regionchain system transaction that replaces the CN set.
//!
//! A [`CnSetChange`] names the complete new set, a proof of possession for every key (so no
//! key can be a rogue combination of others inside an aggregate), and the height from which it
//! is in force; it carries the aggregate BLS approval of strictly more than two thirds of the
//! *current* CN set. Executed in segment 0, it becomes pending; the block just before the
//! effective height lists the new keys in its header (`next_cn_set`), and from the effective
//! height on, selection, votes and certificates use the new set. CNs that join catch up from
//! the others (sync) and start voting at the effective height.

use super::selection::{quorum, CnSet};
use crate::crypto::bls::{self, PublicKey, PublicKeyBytes, SecretKey, Signature, SignatureBytes};
use crate::crypto::hash::sha256_concat;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{ChainId, CnIndex, Height, SignerBitmap};
use alloy_primitives::Bytes;
use alloy_rlp::{RlpDecodable, RlpEncodable};
use thiserror::Error;

pub use crate::types::system::SYSTEM_TX_PREFIX;
/// Heights between the block that carries a change and the change taking effect (at least the
/// announcing block must sit in between).
pub const MIN_CHANGE_DELAY: u64 = 2;
/// Largest CN set a change may install: bounds header size and per-height ranking work.
pub const MAX_CN_SET: usize = 1024;

const APPROVAL_DOMAIN: &[u8] = b"KAON/cn-set-change/v1";

/// A proposed replacement of the CN set, approved by the current set.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct CnSetChange {
    pub region: ChainId,
    pub effective: Height,
    pub new_set: Vec<PublicKeyBytes>,
    /// One proof of possession per new key, in the same order.
    pub pops: Vec<SignatureBytes>,
    /// Approvers among the current set (bit i = CN i).
    pub approvers: SignerBitmap,
    pub approval: SignatureBytes,
}

/// Why a change was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GovernanceError {
    #[error("not a system transaction")]
    NotSystem,
    #[error("malformed change: {0}")]
    Malformed(String),
    #[error("change is for region {got}, this is {expected}")]
    WrongRegion { got: ChainId, expected: ChainId },
    #[error("effective height {effective} is less than {MIN_CHANGE_DELAY} after height {height}")]
    TooSoon { effective: Height, height: Height },
    #[error("new set must have 1..={MAX_CN_SET} keys with one proof of possession each")]
    BadSet,
    #[error("proof of possession {0} does not verify")]
    BadPop(usize),
    #[error("{got} approvals, more than two thirds of the {of} current CNs need {needed}")]
    NoQuorum {
        got: usize,
        needed: usize,
        of: usize,
    },
    #[error("approval signature does not verify")]
    BadApproval,
    #[error("a change is already pending")]
    AlreadyPending,
}

/// The message approvers sign.
pub fn approval_message(region: ChainId, effective: Height, new_set: &[PublicKeyBytes]) -> Vec<u8> {
    let keys: Vec<&[u8]> = new_set.iter().map(|k| k.0.as_slice()).collect();
    let digest = sha256_concat(&keys);
    [
        APPROVAL_DOMAIN,
        &region.to_be_bytes(),
        &effective.to_be_bytes(),
        digest.as_slice(),
    ]
    .concat()
}

/// `key`'s proof of possession, as a change carries it.
pub fn proof_of_possession(key: &SecretKey) -> SignatureBytes {
    key.prove_possession().to_bytes()
}

/// Builds a change approved by `approvers` (index in the current set, key).
pub fn approve(
    region: ChainId,
    current: &CnSet,
    effective: Height,
    new_set: Vec<PublicKeyBytes>,
    pops: Vec<SignatureBytes>,
    approvers: &[(CnIndex, &SecretKey)],
) -> Result<CnSetChange, GovernanceError> {
    let msg = approval_message(region, effective, &new_set);
    let (approvers, approval) = sign_approval(current, approvers, &msg)?;
    Ok(CnSetChange {
        region,
        effective,
        new_set,
        pops,
        approvers,
        approval,
    })
}

/// Checks that `approvers` are strictly more than two thirds of `current` and that `approval`
/// is their aggregate signature over `msg` (shared by every change the CN set approves).
pub fn check_approval(
    current: &CnSet,
    approvers: &SignerBitmap,
    approval: &SignatureBytes,
    msg: &[u8],
) -> Result<(), GovernanceError> {
    if !approvers.fits(current.len()) {
        return Err(GovernanceError::Malformed(
            "approver bitmap does not fit the current set".into(),
        ));
    }
    let (got, needed) = (approvers.count(), quorum(current.len()));
    if got < needed {
        return Err(GovernanceError::NoQuorum {
            got,
            needed,
            of: current.len(),
        });
    }
    let keys: Vec<&PublicKey> = approvers.signers().map(|i| &current.keys()[i]).collect();
    let approval_ok = bls::aggregate_public_keys(keys)
        .is_ok_and(|pk| Signature::try_from(approval).is_ok_and(|s| s.verify(&pk, msg)));
    if !approval_ok {
        return Err(GovernanceError::BadApproval);
    }
    Ok(())
}

/// The aggregate approval of `approvers` (index in the current set, key) over `msg`.
pub fn sign_approval(
    current: &CnSet,
    approvers: &[(CnIndex, &SecretKey)],
    msg: &[u8],
) -> Result<(SignerBitmap, SignatureBytes), GovernanceError> {
    let signed: Vec<(CnIndex, Signature)> = approvers
        .iter()
        .map(|(cn, key)| (*cn, key.sign(msg)))
        .collect();
    combine_approvals(current, &signed)
}

/// The aggregate of approvals signed one by one (index in the current set, its signature),
/// e.g. by CN operators each on their own machine. Each is checked on its own first, so a bad
/// one is named rather than spoiling the aggregate; an index given twice or outside the set is
/// refused.
pub fn combine_approvals(
    current: &CnSet,
    approvals: &[(CnIndex, Signature)],
) -> Result<(SignerBitmap, SignatureBytes), GovernanceError> {
    let mut bitmap = SignerBitmap::with_members(current.len());
    for (cn, _) in approvals {
        let i = cn.0 as usize;
        if i >= current.len() || bitmap.get(i) {
            return Err(GovernanceError::Malformed(format!(
                "approval of CN {cn} given twice or outside the set of {}",
                current.len()
            )));
        }
        bitmap.set(i);
    }
    let sigs: Vec<Signature> = approvals.iter().map(|(_, s)| *s).collect();
    let approval =
        bls::aggregate_signatures(&sigs).map_err(|e| GovernanceError::Malformed(e.to_string()))?;
    Ok((bitmap, approval.to_bytes()))
}

impl CnSetChange {
    /// The system transaction's bytes ([`crate::types::system`] framing).
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::CnSetChange, self)
    }

    /// Parses a system transaction.
    pub fn from_system_tx(raw: &[u8]) -> Result<Self, GovernanceError> {
        system::decode(raw, SystemKind::CnSetChange).map_err(|e| match e {
            SystemTxError::NotSystem => GovernanceError::NotSystem,
            other => GovernanceError::Malformed(other.to_string()),
        })
    }

    /// Checks the change against the set in force at `height`, where it is being executed.
    pub fn verify(
        &self,
        region: ChainId,
        current: &CnSet,
        height: Height,
    ) -> Result<CnSet, GovernanceError> {
        if self.region != region {
            return Err(GovernanceError::WrongRegion {
                got: self.region,
                expected: region,
            });
        }
        if self.effective.0 < height.0.saturating_add(MIN_CHANGE_DELAY) {
            return Err(GovernanceError::TooSoon {
                effective: self.effective,
                height,
            });
        }
        if self.new_set.is_empty()
            || self.new_set.len() > MAX_CN_SET
            || self.pops.len() != self.new_set.len()
        {
            return Err(GovernanceError::BadSet);
        }
        // `CnSet` refuses duplicate keys, so each key of the new set has one index.
        let new_set = CnSet::from_bytes(&self.new_set)
            .map_err(|e| GovernanceError::Malformed(e.to_string()))?;
        for (i, (key, pop)) in new_set.keys().iter().zip(&self.pops).enumerate() {
            if !Signature::try_from(pop).is_ok_and(|s| key.verify_possession(&s)) {
                return Err(GovernanceError::BadPop(i));
            }
        }
        let msg = approval_message(self.region, self.effective, &self.new_set);
        check_approval(current, &self.approvers, &self.approval, &msg)?;
        Ok(new_set)
    }
}
