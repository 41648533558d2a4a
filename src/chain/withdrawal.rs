//! Withdrawal of unlocked PoR rewards from the RN reward reserve to an account on a
//! servicechain.
//!
//! ```text
//!  RN operator ── Withdrawal{rn, amount, chain, to, nonce} signed by the reward key ─► segment 0 of H
//!  segment 0 of H: amount ≤ unlocked, nonce = withdrawals so far, chain registered
//!                  ─► unlocked −= amount; credit (to, amount) queued for `chain`
//!  the next container with a segment of `chain` (proposers add an empty one if needed)
//!                  ─► the credit is applied before that segment's transactions
//! ```
//!
//! The credit goes through the servicechain's own execution, so it is part of that segment's
//! state diff and commitment like any balance change; segment 0 never writes servicechain
//! state, and segments stay independent within a container.

use crate::crypto::tx::{AccountSigned, Signable};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::ChainId;
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use thiserror::Error;

/// Most withdrawals one container accepts.
pub const MAX_WITHDRAWALS_PER_CONTAINER: usize = 64;

const WITHDRAWAL_DOMAIN: &[u8] = b"KAON/withdrawal/v1";

pub use crate::exec::Credits;

/// What an RN withdraws, and where to.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct WithdrawalSpec {
    pub region: ChainId,
    /// The reward address withdrawing (its key signs).
    pub rn: Address,
    pub amount: U256,
    /// The servicechain credited.
    pub chain: ChainId,
    pub to: Address,
    /// The reward address's withdrawals so far (replay protection).
    pub nonce: u64,
}

impl Signable for WithdrawalSpec {
    /// The digest the reward key signs.
    fn digest(&self) -> B256 {
        keccak256([WITHDRAWAL_DOMAIN, &canonical(self)].concat())
    }
}

/// A withdrawal signed by the reward address's key.
pub type Withdrawal = AccountSigned<WithdrawalSpec>;

/// Why a withdrawal was refused (it is then marked invalid and changes nothing).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WithdrawalError {
    #[error(transparent)]
    Framing(#[from] SystemTxError),
    #[error("withdrawal is for region {got}, this is {expected}")]
    WrongRegion { got: ChainId, expected: ChainId },
    #[error("signature is not the reward address's")]
    NotRewardOwner,
    #[error("servicechain {0} is not registered")]
    UnknownChain(ChainId),
    #[error("amount must be positive")]
    Zero,
    #[error("{requested} exceeds the unlocked {unlocked}")]
    Insufficient { requested: U256, unlocked: U256 },
    #[error("nonce {got}, expected {expected}")]
    BadNonce { got: u64, expected: u64 },
    #[error("container already holds {MAX_WITHDRAWALS_PER_CONTAINER} withdrawals")]
    ContainerFull,
}

impl Withdrawal {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::Withdrawal, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, WithdrawalError> {
        Ok(system::decode(raw, SystemKind::Withdrawal)?)
    }

    /// Region, amount and the reward key's signature (what does not depend on balances).
    pub fn verify(&self, region: ChainId) -> Result<(), WithdrawalError> {
        let spec = &self.spec;
        if spec.region != region {
            return Err(WithdrawalError::WrongRegion {
                got: spec.region,
                expected: region,
            });
        }
        if spec.amount.is_zero() {
            return Err(WithdrawalError::Zero);
        }
        if self.is_signed_by(spec.rn) {
            Ok(())
        } else {
            Err(WithdrawalError::NotRewardOwner)
        }
    }
}
