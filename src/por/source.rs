//! `C(h)` on a running node: the canonical block log is never materialised; the node keeps the
//! canonical length of every committed block and reads only the blocks a segment overlaps.

use super::{segment_window, PorError};
use alloy_primitives::B256;

/// Canonical (RLP) lengths of blocks `1 …`, as prefix sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalLog {
    /// `ends[i]`: bytes of blocks `1 ..= i + 1`.
    ends: Vec<u64>,
}

impl CanonicalLog {
    /// Records the canonical length of the next block (heights must arrive in order).
    pub fn push(&mut self, canonical_len: u64) {
        let total = self.ends.last().copied().unwrap_or(0) + canonical_len;
        self.ends.push(total);
    }

    /// Blocks recorded.
    pub fn blocks(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Bytes of the canonical log before height `h` (blocks `1 … h-1`).
    pub fn len_before(&self, h: u64) -> Option<u64> {
        match h {
            0 => None,
            1 => Some(0),
            _ => self.ends.get(h as usize - 2).copied(),
        }
    }

    /// `C(h)` for seed `seed`: the segment's bytes, reading each overlapped block with
    /// `read_block(height)` (its canonical encoding). Fails if `h - 1` blocks are not known.
    pub fn segment<E: From<PorError>>(
        &self,
        h: u64,
        seed: B256,
        segment_len: usize,
        mut read_block: impl FnMut(u64) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let log_len = self.len_before(h).ok_or(PorError::UnknownHeight(h))?;
        let (offset, len) = segment_window(seed, log_len, segment_len)?;
        let end = offset + len as u64;
        // First block whose end is past the offset (blocks are 1-based: index i is height i+1).
        let mut i = self.ends.partition_point(|&e| e <= offset);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            let bytes = read_block(i as u64 + 1)?;
            if bytes.len() as u64 != self.ends[i] - start {
                return Err(PorError::LengthMismatch(i as u64 + 1).into());
            }
            let from = (offset.max(start) - start) as usize;
            let to = (end.min(self.ends[i]) - start) as usize;
            out.extend_from_slice(&bytes[from..to]);
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::sha256;
    use crate::por::segment_of;

    #[test]
    fn segments_equal_windows_of_the_concatenated_log() {
        let blocks: Vec<Vec<u8>> = (0..40u64)
            .map(|i| {
                let len = 1 + (sha256(&i.to_be_bytes())[0] as usize) * 7;
                (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
            })
            .collect();
        let mut log = CanonicalLog::default();
        blocks.iter().for_each(|b| log.push(b.len() as u64));
        for h in [2u64, 3, 10, 41] {
            let before: Vec<&[u8]> = blocks[..h as usize - 1].iter().map(|b| &b[..]).collect();
            for k in 0..20u8 {
                let seed = sha256(&[k, h as u8]);
                let mut reads = 0;
                let got = log.segment::<PorError>(h, seed, 1000, |height| {
                    reads += 1;
                    Ok(blocks[height as usize - 1].clone())
                });
                assert_eq!(got, segment_of(&before, seed, 1000), "h={h} k={k}");
                assert!(reads <= before.len());
            }
        }
        assert_eq!(
            log.segment::<PorError>(42, B256::ZERO, 64, |_| Ok(Vec::new())),
            Err(PorError::UnknownHeight(42))
        );
        assert!(matches!(
            log.segment::<PorError>(41, B256::ZERO, 64, |_| Ok(vec![0; 3])),
            Err(PorError::LengthMismatch(_))
        ));
    }
}
