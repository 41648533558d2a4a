//! The state machine's interface with its driver: parameters, the committed tip, the
//! application it calls, and the inputs it takes and outputs it asks for. Kept apart from the
//! machine so drivers (the node's consensus stage, the simulation) read only this.

use super::proposal::BlockBody;
use crate::types::{
    Block, BlockHash, ChainId, CnIndex, ConsensusMessage, Height, PreparedCertificate, Round,
    SegmentCommitment, VoteKind,
};
use alloy_primitives::B256;

/// Consensus parameters; identical on every CN of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub region: ChainId,
    pub committee_size: usize,
    /// Wait between the previous block and the next proposal (the block interval).
    pub block_interval_ms: u64,
    /// Round timeout at round 0; grows by half each round up to `max_timeout_ms`.
    pub base_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// Where votes go. Not a consensus rule: every node counts whatever votes reach it and
    /// acts on any verified certificate, so nodes routing differently still agree.
    pub votes: VoteRouting,
}

/// Where a member sends its prepare and commit votes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VoteRouting {
    /// To the round's leader (its proposer), which aggregates each quorum into a
    /// [`crate::types::QuorumCertificate`] and broadcasts it: O(n) messages per phase.
    #[default]
    Leader,
    /// To every CN: O(n²) messages per phase, one message delay less per phase.
    AllToAll,
}

impl Params {
    /// Timeout of round `r`: the block interval plus the base timeout grown by half per round,
    /// capped at `max_timeout_ms`. It grows until it exceeds any post-GST message delay.
    ///
    /// Half, not double: rounds wasted on dead or silent proposers cost the sum of their
    /// timeouts. Proposers now take turns (`selection`), so `d` of them waste at most `d` rounds
    /// of a cycle (`2d` across a cycle boundary, more before GST); when each round's proposer
    /// was drawn afresh, one dead CN of four wasted six rounds running at 1 in 4 096 heights,
    /// 19.5 s with doubling and a 300 ms base. Growing by half makes six rounds 6.8 s, while a
    /// timeout still passes any fixed delay within a few rounds more than doubling needs
    /// (`docs/consensus.md`, "Timeouts").
    pub fn timeout(&self, r: Round) -> u64 {
        /// 1.5^64 times any base is past every cap a region can configure.
        const MAX_GROWTH_STEPS: u32 = 64;
        let mut grown = self.base_timeout_ms.min(self.max_timeout_ms);
        for _ in 0..r.0.min(MAX_GROWTH_STEPS) {
            if grown >= self.max_timeout_ms {
                break;
            }
            grown = grown
                .saturating_add(grown.div_ceil(2))
                .min(self.max_timeout_ms);
        }
        self.block_interval_ms.saturating_add(grown)
    }
}

/// The committed head the next height builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub height: Height,
    pub hash: BlockHash,
    /// `mix(height)`: seeds selection at `height + 1`.
    pub mix: B256,
    pub timestamp_ms: u64,
}

impl Tip {
    /// The tip a block leaves behind once committed.
    pub fn of(block: &Block) -> Self {
        let h = block.header();
        Self {
            height: h.height,
            hash: block.hash(),
            mix: h.mix,
            timestamp_ms: h.timestamp_ms,
        }
    }
}

/// How far ahead of a validator's own clock a proposal's timestamp may be. Honest clocks are
/// assumed within this of each other; a proposer stamping further ahead is refused, so it
/// cannot push the chain's time (and every later block's) out of reach.
pub const MAX_CLOCK_DRIFT_MS: u64 = 5_000;

/// The timestamp a proposer gives a block at wall-clock `now_ms` on top of `parent`: its
/// clock, or parent + 1 ms when its clock is not ahead (saturating, so no parent timestamp can
/// make the next block impossible).
pub fn proposal_timestamp(now_ms: u64, parent: &Tip) -> u64 {
    now_ms.max(parent.timestamp_ms.saturating_add(1))
}

/// Both sides of a mismatch: what this node computed (`got`) and what the block claimed
/// (`expected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GotExpected<T> {
    pub got: T,
    pub expected: T,
}

impl<T: std::fmt::Debug> std::fmt::Display for GotExpected<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "got {:?}, expected {:?}", self.got, self.expected)
    }
}

/// Why the application refuses a block (a proposal, or a decided block before it is applied).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InvalidBlock {
    /// Execution reads the applied state, so a block is validated only on the tip it extends.
    #[error("block {height} extends another block than the applied tip: {parent}")]
    NotOnTip {
        height: Height,
        parent: GotExpected<BlockHash>,
    },
    #[error("header announces a CN set other than the approved change: {keys} keys")]
    UnexpectedCnSet { keys: GotExpected<usize> },
    #[error("segment 0 must be the regionchain's")]
    NoRegionSegment,
    #[error("the regionchain has exactly one segment, segment 0")]
    RegionSegmentRepeated,
    #[error("servicechain segments must be in ascending chain order, one per chain")]
    SegmentsOutOfOrder,
    #[error("segment of unregistered servicechain {0}")]
    UnregisteredChain(ChainId),
    #[error("a block that moves a servicechain carries at most {most} segments, this one {got}")]
    TooManySegmentsBesideAMove { got: usize, most: usize },
    #[error("cannot execute the block: {0}")]
    Execution(String),
    #[error("segment {segment}: re-execution disagrees with the header: {commitment}")]
    Diverged {
        segment: usize,
        commitment: Box<GotExpected<SegmentCommitment>>,
    },
}

/// What the node's application (mempool + execution) does for consensus.
///
/// Both calls happen only while the application has applied exactly `parent` (the machine
/// waits for [`Input::Applied`] after each commit before it builds or validates again).
pub trait Application {
    /// Contents of a new block at `height` on top of `parent`, stamped `timestamp_ms`.
    fn build(&mut self, height: Height, parent: &Tip, timestamp_ms: u64) -> BlockBody;
    /// Whether a proposed block's segments are valid on top of `parent` (re-execution).
    fn validate(&mut self, block: &Block, parent: &Tip) -> Result<(), InvalidBlock>;
}

/// What the machine reacts to.
#[derive(Debug, Clone)]
pub enum Input {
    /// Begin working on the height after the tip.
    Start,
    /// The application has applied the block the machine last output as
    /// [`Output::Committed`] (at `height`): work on the next height may begin. Until then the
    /// machine builds, validates and votes on nothing, so no block is checked against state
    /// that is not its parent's.
    Applied { height: Height },
    /// The block interval elapsed: the proposer of `(height, round)` may propose.
    ProposalDue { height: Height, round: Round },
    /// The round timer of `(height, round)` fired.
    Timeout { height: Height, round: Round },
    /// A message from another CN (authenticity is checked inside, not assumed).
    Message(ConsensusMessage),
}

/// Something the machine wants done, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Make durable before performing any later output.
    Persist(WalEntry),
    Broadcast(ConsensusMessage),
    /// To one CN (numbered in the current set).
    Send {
        to: CnIndex,
        message: ConsensusMessage,
    },
    ScheduleProposal {
        height: Height,
        round: Round,
        after_ms: u64,
    },
    ScheduleTimeout {
        height: Height,
        round: Round,
        after_ms: u64,
    },
    /// A sealed block is final. The driver applies it, then answers [`Input::Applied`] (or
    /// halts the node if applying fails: its state would diverge from the header).
    Committed(Box<Block>),
    /// A CN misbehaved provably.
    Misbehavior(Misbehavior),
    /// Messages show the chain is ahead of this node: fetch decided blocks from `from` on.
    SyncNeeded {
        from: Height,
    },
    /// A peer is still working on an already decided height: send it that decided block.
    PeerBehind {
        peer: CnIndex,
        height: Height,
    },
}

/// A durable record of what this node said, replayed by [`Machine::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEntry {
    Voted {
        height: Height,
        round: Round,
        kind: VoteKind,
        hash: BlockHash,
    },
    Prepared {
        height: Height,
        certificate: PreparedCertificate,
        block: Box<Block>,
    },
    /// This node asked for `round` (its round change): a restarted node resumes there rather
    /// than in a round the others have left, where it would wait alone.
    RoundChanged { height: Height, round: Round },
}

/// Provable misbehaviour seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehavior {
    ConflictingProposals {
        height: Height,
        round: Round,
        proposer: CnIndex,
    },
    DoubleVote {
        height: Height,
        round: Round,
        kind: VoteKind,
        voter: CnIndex,
    },
}

/// Counters of refused input, by reason (for metrics and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    pub stale: u64,
    pub invalid_proposal: u64,
    pub bad_vote: u64,
    pub bad_round_change: u64,
    pub bad_decided: u64,
    pub bad_certificate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(interval: u64, base: u64, max: u64) -> Params {
        Params {
            region: ChainId(1),
            committee_size: 4,
            block_interval_ms: interval,
            base_timeout_ms: base,
            max_timeout_ms: max,
            votes: VoteRouting::Leader,
        }
    }

    #[test]
    fn timeouts_grow_every_round_until_the_cap_and_stay_there() {
        let p = params(100, 300, 5_000);
        let timeouts: Vec<u64> = (0..40).map(|r| p.timeout(Round(r))).collect();
        assert_eq!(timeouts[0], 400);
        assert!(timeouts.windows(2).all(|w| w[0] < w[1] || w[1] == 5_100));
        assert_eq!(timeouts[39], 5_100, "capped at interval + max");
        assert_eq!(p.timeout(Round(u32::MAX)), 5_100);
        // A base of 1 ms still grows (rounding up), and a zero base stays zero.
        assert!(params(0, 1, 10).timeout(Round(3)) > 1);
        assert_eq!(params(0, 0, 10).timeout(Round(u32::MAX)), 0);
    }

    /// The chaos harness's stall bound is 10 s; six wasted rounds (a dead CN drawn six rounds
    /// running, 1 in 4 096 heights with n = 4, before proposers took turns; several dead or
    /// silent members, or rounds before GST, now) cost 19.5 s when timeouts doubled.
    #[test]
    fn six_wasted_rounds_at_chaos_parameters_stay_under_the_stall_bound() {
        let p = params(100, 300, 30_000);
        let six: u64 = (0..6).map(|r| p.timeout(Round(r))).sum();
        assert!(six < 10_000, "six rounds take {six} ms");
    }
}
