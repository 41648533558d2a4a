//! Proof of Participation on the regionchain: PoR shares verified in segment 0, difficulty
//! retargeting, and the RN reward reserve with its lock-up.
//!
//! A share is the system transaction [`ShareSubmission`] `(h, miner, counter)`: the nonce
//! `x = miner ‖ counter` names who is paid, so it needs no signature and cannot be stolen.
//! The container at height `H` accepts it iff `H − SHARE_EXPIRY ≤ h < H` (the seed `mix(h)` is
//! committed and not expired), it was not accepted before, and `sha256(B(C(h), x) ‖ x)` is
//! below the epoch's target (`src/por`). Every `EPOCH_LEN` containers the reserve pays
//! `REWARD_PER_EPOCH` (or what is left) in proportion to the epoch's shares; each payment is
//! locked for `LOCKUP_EPOCHS` epochs, then withdrawable; the difficulty moves one bit toward
//! `target_shares_per_epoch`. All epoch work is O(miners of the epoch).
//!
//! Only registered RNs earn ([`super::posc`]): a share names a reward address that a
//! `RegisterRn` transaction committed before, so every paid address can be probed and, after
//! `penalty_limit` failed probes, slashed.

use super::posc::{Penalty, PoscParams, PoscState, RnRegistration};
use super::withdrawal::{Credits, Withdrawal, WithdrawalError, MAX_WITHDRAWALS_PER_CONTAINER};
use crate::crypto::hash::sha256_concat;
use crate::por::{target_for_bits, verify_share, PorError};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::ChainId;
use crate::types::Height;
use alloy_primitives::{address, Address, Bytes, B256, U256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use thiserror::Error;

/// Containers a share's seed height stays acceptable for.
pub const SHARE_EXPIRY: u64 = 32;
/// Containers per reward epoch.
pub const EPOCH_LEN: u64 = 16;
/// Epochs a payment stays locked.
pub const LOCKUP_EPOCHS: u64 = 4;
/// Most shares one container accepts (bounds segment-0 verification work).
pub const MAX_SHARES_PER_CONTAINER: usize = 256;
/// Difficulty bounds, in leading zero bits of the target.
pub const MIN_BITS: u32 = 1;
pub const MAX_BITS: u32 = 64;
/// Paid per epoch while the reserve lasts: 100 coins of 18 decimals.
pub const REWARD_PER_EPOCH: U256 = U256::from_limbs([7_766_279_631_452_241_920, 5, 0, 0]);
/// Where the RN reward reserve answers `eth_call` on the regionchain's RPC.
pub const RESERVE_ADDRESS: Address = address!("0x0000000000000000000000000000000000004b52");

const POP_DOMAIN: &[u8] = b"KAON/pop/v1";

/// A PoR share as a system transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, RlpEncodable, RlpDecodable)]
pub struct ShareSubmission {
    /// The seed height `h` (seed `mix(h)`, segment over blocks before `h`).
    pub height: Height,
    pub miner: Address,
    pub counter: u64,
}

impl ShareSubmission {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::PorShare, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, SystemTxError> {
        system::decode(raw, SystemKind::PorShare)
    }
}

/// Why a share was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShareError {
    #[error("share for height {share} is not before container {container}")]
    FutureHeight { share: Height, container: Height },
    #[error("share for height {share} expired (container {container}, expiry {SHARE_EXPIRY})")]
    Expired { share: Height, container: Height },
    #[error("miner {0} is not a registered RN reward address")]
    Unregistered(Address),
    #[error("share already accepted")]
    Duplicate,
    #[error("container already holds {MAX_SHARES_PER_CONTAINER} shares")]
    ContainerFull,
    #[error("segment of height {0} unavailable: {1}")]
    NoSegment(Height, String),
    #[error(transparent)]
    Rule(#[from] PorError),
}

/// `C(h)` as the node reads it from its block log.
pub trait SegmentSource: Send + Sync + std::fmt::Debug {
    /// Notes a committed block (in height order, from height 1).
    fn record(&self, _block: &crate::types::Block) {}
    /// `C(height)`: the segment shares with seed height `height` are hashed over.
    fn segment(&self, height: Height) -> Result<Arc<Vec<u8>>, String>;
}

/// A source for nodes without a block log attached: every share is refused.
#[derive(Debug, Default)]
pub struct NoSegments;

impl SegmentSource for NoSegments {
    fn segment(&self, _height: Height) -> Result<Arc<Vec<u8>>, String> {
        Err("no block log attached".into())
    }
}

/// Settings fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PopParams {
    pub initial_bits: u32,
    pub target_shares_per_epoch: u64,
    pub reserve: U256,
    pub posc: PoscParams,
}

impl Default for PopParams {
    fn default() -> Self {
        Self {
            initial_bits: 24,
            target_shares_per_epoch: 64,
            reserve: REWARD_PER_EPOCH * U256::from(10_000u64),
            posc: PoscParams::default(),
        }
    }
}

/// One payment waiting out its lock-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Locked {
    pub unlock_height: Height,
    pub amount: U256,
}

/// What the reserve holds for one RN reward address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RnRewards {
    /// Shares accepted over the chain's life.
    pub shares: u64,
    /// Shares in the current epoch.
    pub epoch_shares: u64,
    pub locked: VecDeque<Locked>,
    /// Past lock-up, withdrawable.
    pub unlocked: U256,
    /// PoSC penalties since the last slashing.
    pub penalties: u32,
    /// Withdrawn to servicechain accounts so far.
    pub withdrawn: U256,
    /// Withdrawals so far (the next withdrawal's nonce).
    pub withdrawals: u64,
}

impl RnRewards {
    pub fn locked_total(&self) -> U256 {
        self.locked.iter().map(|l| l.amount).sum()
    }
}

/// The regionchain's PoP state.
#[derive(Debug, Clone)]
pub struct PopState {
    pub params: PopParams,
    /// Current difficulty in target bits.
    pub bits: u32,
    /// Left in the reserve.
    pub reserve: U256,
    pub rns: BTreeMap<Address, RnRewards>,
    /// Accepted shares by seed height, for duplicate detection within the expiry window.
    seen: BTreeMap<Height, HashSet<(Address, u64)>>,
    /// Registered RNs, probe selections and penalties.
    pub posc: PoscState,
    /// Withdrawn rewards waiting for the next segment of their servicechain.
    pub credits: Arc<Credits>,
    pub root: B256,
}

/// What one container's segment 0 changes in the PoP state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PopDelta {
    pub shares: Vec<ShareSubmission>,
    pub registrations: Vec<RnRegistration>,
    pub penalties: Vec<Penalty>,
    pub withdrawals: Vec<Withdrawal>,
    pub root: B256,
}

impl PopState {
    pub fn new(params: PopParams) -> Self {
        Self {
            bits: params.initial_bits.clamp(MIN_BITS, MAX_BITS),
            reserve: params.reserve,
            params,
            rns: BTreeMap::new(),
            seen: BTreeMap::new(),
            posc: PoscState::new(params.posc),
            credits: Arc::default(),
            root: B256::ZERO,
        }
    }

    pub fn target(&self) -> B256 {
        target_for_bits(self.bits)
    }

    /// Checks one share for the container at `container`, given the shares the same container
    /// accepted before it.
    pub fn check_share(
        &self,
        share: &ShareSubmission,
        container: Height,
        earlier: &[ShareSubmission],
        source: &dyn SegmentSource,
    ) -> Result<(), ShareError> {
        if share.height >= container {
            return Err(ShareError::FutureHeight {
                share: share.height,
                container,
            });
        }
        if container.0 - share.height.0 > SHARE_EXPIRY {
            return Err(ShareError::Expired {
                share: share.height,
                container,
            });
        }
        if earlier.len() >= MAX_SHARES_PER_CONTAINER {
            return Err(ShareError::ContainerFull);
        }
        if !self.posc.rns.contains_key(&share.miner) {
            return Err(ShareError::Unregistered(share.miner));
        }
        let key = (share.miner, share.counter);
        let seen = self
            .seen
            .get(&share.height)
            .is_some_and(|s| s.contains(&key))
            || earlier.contains(share);
        if seen {
            return Err(ShareError::Duplicate);
        }
        let segment = source
            .segment(share.height)
            .map_err(|e| ShareError::NoSegment(share.height, e))?;
        verify_share(&segment, share.miner, share.counter, &self.target())?;
        Ok(())
    }

    /// Checks a withdrawal for the next container, given the ones it accepted before;
    /// `registered` says whether the target servicechain exists.
    pub fn check_withdrawal(
        &self,
        w: &Withdrawal,
        region: ChainId,
        registered: bool,
        earlier: &[Withdrawal],
    ) -> Result<(), WithdrawalError> {
        if earlier.len() >= MAX_WITHDRAWALS_PER_CONTAINER {
            return Err(WithdrawalError::ContainerFull);
        }
        w.verify(region)?;
        let spec = &w.spec;
        if !registered || spec.chain == region {
            return Err(WithdrawalError::UnknownChain(spec.chain));
        }
        let account = self.rns.get(&spec.rn).cloned().unwrap_or_default();
        let (count, spent) = earlier
            .iter()
            .filter(|e| e.spec.rn == spec.rn)
            .fold((0u64, U256::ZERO), |(n, sum), e| {
                (n + 1, sum + e.spec.amount)
            });
        let expected = account.withdrawals + count;
        if spec.nonce != expected {
            return Err(WithdrawalError::BadNonce {
                got: spec.nonce,
                expected,
            });
        }
        let unlocked = account.unlocked.saturating_sub(spent);
        if spec.amount > unlocked {
            return Err(WithdrawalError::Insufficient {
                requested: spec.amount,
                unlocked,
            });
        }
        Ok(())
    }

    /// The root after accepting `delta`'s transactions at `container` (and paying the epoch
    /// if it ends).
    pub fn next_root(&self, container: Height, delta: &PopDelta) -> B256 {
        let mut root = self.root;
        if !delta.shares.is_empty() {
            root = sha256_concat(&[POP_DOMAIN, root.as_slice(), &canonical(&delta.shares)]);
        }
        if !delta.registrations.is_empty()
            || !delta.penalties.is_empty()
            || !delta.withdrawals.is_empty()
        {
            root = sha256_concat(&[
                POP_DOMAIN,
                root.as_slice(),
                &canonical(&delta.registrations),
                &canonical(&delta.penalties),
                &canonical(&delta.withdrawals),
            ]);
        }
        if is_epoch_end(container) {
            root = sha256_concat(&[POP_DOMAIN, root.as_slice(), &container.0.to_be_bytes()]);
        }
        root
    }

    /// Applies a committed container (its `mix` seeds the next probe selection): accepted
    /// shares, RN registrations and penalties (slashing beyond the limit), then the epoch's
    /// payout if it ends.
    ///
    /// `moved` are the container's servicechain segments: their queued credits were applied
    /// by those segments and leave the queue; this container's withdrawals queue new ones.
    pub fn apply(&mut self, container: Height, mix: B256, moved: &[ChainId], delta: &PopDelta) {
        if moved.iter().any(|c| self.credits.contains_key(c)) {
            let credits = Arc::make_mut(&mut self.credits);
            for chain in moved {
                credits.remove(chain);
            }
        }
        // Withdrawals first: they were checked against the unlocked rewards before this
        // container, which a slashing below may then take back.
        for w in &delta.withdrawals {
            let spec = &w.spec;
            let account = self.rns.entry(spec.rn).or_default();
            // Checked against `unlocked` before it was accepted.
            account.unlocked = account.unlocked.saturating_sub(spec.amount);
            account.withdrawn += spec.amount;
            account.withdrawals += 1;
            Arc::make_mut(&mut self.credits)
                .entry(spec.chain)
                .or_default()
                .push((spec.to, spec.amount));
        }
        let penalized = self
            .posc
            .apply(container, mix, &delta.registrations, &delta.penalties);
        for rn in penalized {
            self.penalize(rn);
        }
        for share in &delta.shares {
            self.seen
                .entry(share.height)
                .or_default()
                .insert((share.miner, share.counter));
            let rn = self.rns.entry(share.miner).or_default();
            rn.shares += 1;
            rn.epoch_shares += 1;
        }
        let oldest = Height(container.0.saturating_sub(SHARE_EXPIRY));
        self.seen = self.seen.split_off(&oldest);
        if is_epoch_end(container) {
            self.close_epoch(container);
        }
        self.root = delta.root;
    }

    fn close_epoch(&mut self, container: Height) {
        let total: u64 = self.rns.values().map(|r| r.epoch_shares).sum();
        let pot = REWARD_PER_EPOCH.min(self.reserve);
        let unlock_height = Height(container.0 + LOCKUP_EPOCHS * EPOCH_LEN);
        let mut paid = U256::ZERO;
        for rn in self.rns.values_mut() {
            while rn
                .locked
                .front()
                .is_some_and(|l| l.unlock_height <= container)
            {
                let matured = rn.locked.pop_front().map_or(U256::ZERO, |l| l.amount);
                rn.unlocked += matured;
            }
            if total > 0 && rn.epoch_shares > 0 {
                let amount = pot * U256::from(rn.epoch_shares) / U256::from(total);
                paid += amount;
                rn.locked.push_back(Locked {
                    unlock_height,
                    amount,
                });
            }
            rn.epoch_shares = 0;
        }
        self.reserve -= paid;
        self.bits = retarget(self.bits, total, self.params.target_shares_per_epoch);
    }

    /// Counts one penalty; beyond the limit, slashes.
    fn penalize(&mut self, rn: Address) {
        let account = self.rns.entry(rn).or_default();
        account.penalties += 1;
        let penalties = account.penalties;
        if penalties > self.params.posc.penalty_limit {
            let amount = self.slash(&rn);
            tracing::info!(%rn, penalties, %amount, "RN slashed: rewards returned to the reserve");
        } else {
            tracing::info!(%rn, penalties, "RN penalized for a failed probe");
        }
    }

    /// Slashes an RN's accumulated rewards back into the reserve and resets its penalties.
    pub fn slash(&mut self, rn: &Address) -> U256 {
        let Some(account) = self.rns.get_mut(rn) else {
            return U256::ZERO;
        };
        let amount = account.locked_total() + account.unlocked;
        account.locked.clear();
        account.unlocked = U256::ZERO;
        account.penalties = 0;
        self.reserve += amount;
        amount
    }
}

/// Whether the container at `height` closes a reward epoch.
pub fn is_epoch_end(height: Height) -> bool {
    height.0 > 0 && height.0.is_multiple_of(EPOCH_LEN)
}

/// One bit harder when an epoch brought more than twice the target, one easier under half.
pub fn retarget(bits: u32, shares: u64, target: u64) -> u32 {
    if shares > target.saturating_mul(2) {
        (bits + 1).min(MAX_BITS)
    } else if shares.saturating_mul(2) < target {
        bits.saturating_sub(1).max(MIN_BITS)
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_reward_is_one_hundred_coins() {
        assert_eq!(
            REWARD_PER_EPOCH,
            U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64))
        );
    }

    #[test]
    fn retargeting_moves_one_bit_toward_the_target() {
        assert_eq!(retarget(20, 200, 64), 21);
        assert_eq!(retarget(20, 10, 64), 19);
        assert_eq!(retarget(20, 64, 64), 20);
        assert_eq!(
            retarget(20, 0, 1),
            19,
            "an empty epoch eases even a target of one"
        );
        assert_eq!(retarget(MIN_BITS, 0, 64), MIN_BITS);
        assert_eq!(retarget(MAX_BITS, 1000, 64), MAX_BITS);
    }
}
