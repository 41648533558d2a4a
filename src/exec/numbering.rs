//! A servicechain's own block numbers.
//!
//! A chain that never moved numbers its blocks by its region's heights. A chain adopted from
//! another region keeps counting where it left off: the adopting block here is its number
//! `F`, the freezing block's height at the source (where the chain had its last block `F - 1`),
//! and each later block of this region is one more. A region a chain moved away from holds its
//! blocks below `F` only. `NUMBER` and `BLOCKHASH` in the EVM and every block number the
//! JSON-RPC shows or reads for the chain are these numbers (`docs/regions.md`, "Block
//! numbers").

use crate::types::{ChainId, Height};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Which of its region's blocks are one chain's, and the chain's numbers of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainNumbers {
    /// The chain's number of this region's block `from`.
    pub first: u64,
    /// The chain's first block in this region: the adopting block (0 for a chain that began
    /// here).
    pub from: Height,
    /// The freezing block of the chain's move away: its blocks here are those below it
    /// (`None` while this region serves it).
    pub until: Option<Height>,
}

impl ChainNumbers {
    /// A chain that began in this region and moved away at `until`.
    pub fn moved_away(until: Height) -> Self {
        Self {
            first: 0,
            from: Height(0),
            until: Some(until),
        }
    }

    /// A chain adopted by this region's block `at`, frozen at `first` where it was.
    pub fn adopted(first: u64, at: Height) -> Self {
        Self {
            first,
            from: at,
            until: None,
        }
    }

    /// Whether this region's block `height` is before the chain left.
    fn before_until(&self, height: u64) -> bool {
        self.until.is_none_or(|until| height < until.0)
    }

    /// The chain's number of this region's block `height` (`None` outside the chain's blocks
    /// here).
    pub fn number(&self, height: u64) -> Option<u64> {
        if !self.before_until(height) {
            return None;
        }
        height.checked_sub(self.from.0)?.checked_add(self.first)
    }

    /// This region's height of the chain's block `number` (`None`: that block is in another
    /// region).
    pub fn height(&self, number: u64) -> Option<u64> {
        let height = number.checked_sub(self.first)?.checked_add(self.from.0)?;
        self.before_until(height).then_some(height)
    }

    /// The chain's number of this region's block `height` held within the chain's blocks
    /// here: its first number before them, the number after its last one past them.
    fn clamped(&self, height: u64) -> u64 {
        let height = height.max(self.from.0);
        let height = self.until.map_or(height, |until| height.min(until.0));
        self.first.saturating_add(height - self.from.0)
    }

    /// The chain's newest number among this region's blocks up to `head`: the one before its
    /// first here while the adopting block is not in yet, its last here once it moved away.
    pub fn last(&self, head: u64) -> u64 {
        self.clamped(head.saturating_add(1)).saturating_sub(1)
    }

    /// `NUMBER` of this region's block `height` for the chain: its number, or the chain's next
    /// one where `height` is past its blocks here (a call on a chain that moved away).
    pub fn evm_number(&self, height: u64) -> u64 {
        self.clamped(height)
    }

    /// This region's heights of the chain's blocks `from..=to` that are here.
    pub fn heights(&self, from: u64, to: u64) -> Option<RangeInclusive<u64>> {
        let low = self.height(from.max(self.first))?;
        let high = match self.until {
            Some(until) => number_height(self, to)?.min(until.0.checked_sub(1)?),
            None => number_height(self, to)?,
        };
        (low <= high).then_some(low..=high)
    }
}

/// `numbers`' height of `number` without the end of the chain's blocks here.
fn number_height(numbers: &ChainNumbers, number: u64) -> Option<u64> {
    number
        .checked_sub(numbers.first)?
        .checked_add(numbers.from.0)
}

/// How a region's chains number their blocks: those adopted or moved away as their
/// [`ChainNumbers`] say, the others by height.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Numbering(BTreeMap<ChainId, ChainNumbers>);

impl Numbering {
    /// Records that `chain` was adopted by this region's block `at`, frozen at `first`.
    pub fn adopt(&mut self, chain: ChainId, first: u64, at: Height) {
        self.0.insert(chain, ChainNumbers::adopted(first, at));
    }

    /// Records that `chain` moved away at this region's block `until`.
    pub fn move_away(&mut self, chain: ChainId, until: Height) {
        self.0
            .entry(chain)
            .or_insert(ChainNumbers::moved_away(until))
            .until = Some(until);
    }

    /// How `chain` numbers its blocks, if it came or left.
    pub fn get(&self, chain: ChainId) -> Option<ChainNumbers> {
        self.0.get(&chain).copied()
    }

    /// `chain`'s number of this region's block `height` (`None`: not one of its blocks).
    pub fn number(&self, chain: ChainId, height: u64) -> Option<u64> {
        match self.get(chain) {
            Some(numbers) => numbers.number(height),
            None => Some(height),
        }
    }

    /// This region's height of `chain`'s block `number` (`None`: in another region, or past
    /// `u64`).
    pub fn height(&self, chain: ChainId, number: u64) -> Option<u64> {
        match self.get(chain) {
            Some(numbers) => numbers.height(number),
            None => Some(number),
        }
    }

    /// `chain`'s newest number among this region's blocks up to `head` (`head` for a chain
    /// that never moved).
    pub fn last(&self, chain: ChainId, head: u64) -> u64 {
        self.get(chain).map_or(head, |numbers| numbers.last(head))
    }

    /// `NUMBER` on `chain` in this region's block `height` ([`ChainNumbers::evm_number`]).
    pub fn evm_number(&self, chain: ChainId, height: u64) -> u64 {
        self.get(chain)
            .map_or(height, |numbers| numbers.evm_number(height))
    }

    /// Whether `chain` came here from another region.
    pub fn adopted(&self, chain: ChainId) -> bool {
        self.get(chain)
            .is_some_and(|n| n.until.is_none() && n.from.0 > 0)
    }

    /// This region's heights of `chain`'s blocks `from..=to` that are here.
    pub fn heights(&self, chain: ChainId, from: u64, to: u64) -> Option<RangeInclusive<u64>> {
        match self.get(chain) {
            Some(numbers) => numbers.heights(from, to),
            None => (from <= to).then_some(from..=to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOVED: ChainId = ChainId(1001);
    const STAYED: ChainId = ChainId(1002);

    fn adopted(first: u64, at: u64) -> Numbering {
        let mut numbering = Numbering::default();
        numbering.adopt(MOVED, first, Height(at));
        numbering
    }

    #[test]
    fn an_adopted_chain_counts_on_from_its_freeze_whether_this_region_is_younger_or_older() {
        // Frozen at 133 in its first region, adopted here at 40 (a younger region) …
        let younger = adopted(133, 40);
        assert_eq!(younger.number(MOVED, 40), Some(133));
        assert_eq!(younger.number(MOVED, 41), Some(134));
        assert_eq!(younger.height(MOVED, 134), Some(41));
        assert_eq!(younger.last(MOVED, 41), 134);
        // Before the adopting block is stored, the chain's head is where it was frozen.
        assert_eq!(younger.last(MOVED, 39), 132);
        assert_eq!(younger.evm_number(MOVED, 39), 133);
        assert!(younger.adopted(MOVED) && !younger.adopted(STAYED));
        // … or at 500 (an older one).
        let older = adopted(133, 500);
        assert_eq!(older.number(MOVED, 501), Some(134));
        assert_eq!(older.height(MOVED, 134), Some(501));
        for n in [133, 134, 10_000] {
            for numbering in [&younger, &older] {
                let height = numbering.height(MOVED, n).unwrap();
                assert_eq!(numbering.number(MOVED, height), Some(n));
            }
        }
    }

    #[test]
    fn blocks_before_the_adoption_are_not_here_and_other_chains_number_by_height() {
        let numbering = adopted(133, 40);
        assert_eq!(numbering.number(MOVED, 39), None);
        assert_eq!(numbering.height(MOVED, 132), None);
        assert_eq!(numbering.height(MOVED, 0), None);
        assert_eq!(numbering.heights(MOVED, 100, 135), Some(40..=42));
        assert_eq!(numbering.heights(MOVED, 100, 132), None);
        assert_eq!(numbering.number(STAYED, 39), Some(39));
        assert_eq!(numbering.height(STAYED, 132), Some(132));
        assert_eq!(numbering.last(STAYED, 132), 132);
        assert_eq!(numbering.evm_number(STAYED, 132), 132);
        assert_eq!(numbering.heights(STAYED, 5, 7), Some(5..=7));
    }

    #[test]
    fn a_chain_moved_away_ends_before_its_freezing_block() {
        let mut numbering = Numbering::default();
        numbering.move_away(MOVED, Height(133));
        assert_eq!(numbering.number(MOVED, 132), Some(132));
        assert_eq!(numbering.number(MOVED, 133), None);
        assert_eq!(numbering.height(MOVED, 133), None);
        assert_eq!(numbering.last(MOVED, 200), 132);
        assert_eq!(numbering.last(MOVED, 100), 100);
        // A call on it after the move sees the number its next block would have had.
        assert_eq!(numbering.evm_number(MOVED, 200), 133);
        assert_eq!(numbering.evm_number(MOVED, 100), 100);
        assert!(!numbering.adopted(MOVED));
        assert_eq!(numbering.heights(MOVED, 130, 200), Some(130..=132));
        assert_eq!(numbering.heights(MOVED, 133, 200), None);
    }

    #[test]
    fn numbers_past_u64_are_absent_not_wrapped() {
        let late = adopted(5, 1_000);
        assert_eq!(late.height(MOVED, u64::MAX), None);
        assert_eq!(late.heights(MOVED, 0, u64::MAX), None);
        assert_eq!(adopted(1_000, 5).number(MOVED, u64::MAX), None);
    }
}
