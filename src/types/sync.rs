//! Block sync between nodes: a ranger node (or any lagging node) asks a peer for committed
//! containers by height range, and the peer answers from its block log.
//!
//! A request names the first height wanted and how much the asker is willing to take; the
//! server clamps every bound to its own limits ([`MAX_RANGE_BLOCKS`], [`MAX_RANGE_BYTES`],
//! [`MAX_WAIT_MS`]), so a request can never make a server read or hold more than that. A
//! request for a height the server does not have yet may wait (long poll) up to `wait_ms` for
//! it to be committed: that is how a node following the head learns of each new block without
//! the server keeping any per-follower state.

use super::codec::{Kind, WireMessage};
use super::primitives::Height;
use super::Block;
use alloy_rlp::{RlpDecodable, RlpEncodable};

/// Most blocks in one response: enough to amortise a round trip and a batch signature check,
/// small enough that one response is audited in well under a second.
pub const MAX_RANGE_BLOCKS: u32 = 256;

/// Most bytes of blocks in one response (a single block larger than this is still served on
/// its own, up to the block limit).
pub const MAX_RANGE_BYTES: u32 = 16 << 20;

/// Longest a request may wait for its first block to be committed.
pub const MAX_WAIT_MS: u32 = 5_000;

/// "Send me committed blocks from `from` on."
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BlockRangeRequest {
    /// First height wanted.
    pub from: Height,
    /// Most blocks the asker takes (clamped to [`MAX_RANGE_BLOCKS`]).
    pub max_blocks: u32,
    /// Most bytes of blocks the asker takes (clamped to [`MAX_RANGE_BYTES`]).
    pub max_bytes: u32,
    /// How long the server may wait for `from` to be committed (clamped to [`MAX_WAIT_MS`]).
    pub wait_ms: u32,
}

impl WireMessage for BlockRangeRequest {
    const KIND: Kind = Kind::BlockRequest;
    const MAX_PAYLOAD: usize = 64;
}

/// Consecutive committed blocks from the requested height, and the server's head.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BlockRangeResponse {
    /// The highest height the server has committed and indexed.
    pub head: Height,
    /// Blocks `from, from + 1, …` (empty when the server does not have `from`).
    pub blocks: Vec<Block>,
}

impl WireMessage for BlockRangeResponse {
    const KIND: Kind = Kind::BlockResponse;
    // One maximal block, or a full range of smaller ones, plus the list headers.
    const MAX_PAYLOAD: usize = super::block::MAX_BLOCK_BYTES + (1 << 20);
}

impl BlockRangeResponse {
    /// Whether the blocks are exactly `from, from + 1, …` and within what was asked.
    pub fn fits(&self, request: &BlockRangeRequest) -> bool {
        self.blocks.len() <= request.max_blocks.min(MAX_RANGE_BLOCKS) as usize
            && self
                .blocks
                .iter()
                .enumerate()
                .all(|(i, b)| b.header().height.0 == request.from.0 + i as u64)
    }
}
