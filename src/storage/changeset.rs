//! One block's change set of one servicechain, as the `changes` family of [`super::history`]
//! stores it: every state key the block wrote with its value before the block, sorted by key,
//! in one value that a reader binary-searches in place.
//!
//! Layout (integers big-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 4 | `n`, the number of entries |
//! | 4 × n | each entry's offset from the start of the entries |
//! | … | `n` entries: key length (2), key, value length (2), value |
//!
//! An empty value means the key was absent before the block (state never stores an empty
//! value: accounts, slots and commitments have fixed sizes). One value per block and chain is
//! what keeps history cheap on the persist path: a block that changes 10 000 keys adds one
//! write, not 10 000 (the per-key index is built later, off that path).

use std::ops::Range;

/// Bytes of the entry count.
const COUNT_LEN: usize = 4;
/// Bytes of one entry offset.
const OFFSET_LEN: usize = 4;
/// Bytes of a key or value length.
const LEN_LEN: usize = 2;

/// Why stored change-set bytes cannot be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChangeSetError {
    #[error("{len} bytes cannot hold the entry count and offsets")]
    Header { len: usize },
    #[error("entry {index} runs past the end of the change set")]
    Truncated { index: usize },
    #[error("entry {index} is not above the one before it (keys must be sorted and unique)")]
    Unsorted { index: usize },
    #[error("a {what} of {len} bytes does not fit a change set")]
    TooLong { what: &'static str, len: usize },
}

/// Encodes entries `(state key, value before the block)`, which must be sorted by key with no
/// key twice (as [`super::history::BlockChanges`] hands them over).
pub fn encode(entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<Vec<u8>, ChangeSetError> {
    debug_assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "change-set keys must be sorted and unique"
    );
    let count = u32::try_from(entries.len()).map_err(|_| ChangeSetError::TooLong {
        what: "change set",
        len: entries.len(),
    })?;
    let body: usize = entries
        .iter()
        .map(|(k, v)| 2 * LEN_LEN + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let header = COUNT_LEN + OFFSET_LEN * entries.len();
    let mut out = Vec::with_capacity(header + body);
    out.extend_from_slice(&count.to_be_bytes());
    let mut offset = 0usize;
    for (key, value) in entries {
        let at = u32::try_from(offset).map_err(|_| ChangeSetError::TooLong {
            what: "change set",
            len: offset,
        })?;
        out.extend_from_slice(&at.to_be_bytes());
        offset += 2 * LEN_LEN + key.len() + value.as_ref().map_or(0, Vec::len);
    }
    for (key, value) in entries {
        put_field(&mut out, "key", key)?;
        put_field(&mut out, "value", value.as_deref().unwrap_or_default())?;
    }
    Ok(out)
}

fn put_field(out: &mut Vec<u8>, what: &'static str, bytes: &[u8]) -> Result<(), ChangeSetError> {
    let len = u16::try_from(bytes.len()).map_err(|_| ChangeSetError::TooLong {
        what,
        len: bytes.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A stored change set, read in place. Every access checks its bounds, so damaged bytes give
/// an error, never a panic or a read outside them; [`Self::entries`] also checks the key order
/// that [`Self::get`]'s binary search relies on (a lookup in damaged but well-formed bytes can
/// miss; RocksDB's block checksums are what catch damage on disk).
#[derive(Debug, Clone, Copy)]
pub struct ChangeSet<'a> {
    offsets: &'a [u8],
    entries: &'a [u8],
}

/// One entry: a state key and its value before the block (`None`: absent).
pub type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

impl<'a> ChangeSet<'a> {
    /// Checks the header (count and offset table) of `bytes`; entries are checked as read.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChangeSetError> {
        let header = || ChangeSetError::Header { len: bytes.len() };
        let count = bytes.get(..COUNT_LEN).map(be_u32).ok_or_else(header)? as usize;
        let table_end = count
            .checked_mul(OFFSET_LEN)
            .and_then(|t| t.checked_add(COUNT_LEN))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(header)?;
        Ok(Self {
            offsets: &bytes[COUNT_LEN..table_end],
            entries: &bytes[table_end..],
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.offsets.len() / OFFSET_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Entry `index` (< [`Self::len`]).
    pub fn entry(&self, index: usize) -> Result<Entry<'a>, ChangeSetError> {
        let truncated = ChangeSetError::Truncated { index };
        let start = index.checked_mul(OFFSET_LEN).ok_or(truncated.clone())?;
        let at = self
            .offsets
            .get(start..start.saturating_add(OFFSET_LEN))
            .ok_or(truncated.clone())?;
        let mut at = be_u32(at) as usize;
        let key = self.field(&mut at).ok_or(truncated.clone())?;
        let value = self.field(&mut at).ok_or(truncated)?;
        Ok((key, Some(value).filter(|v| !v.is_empty())))
    }

    /// The length-prefixed field at `*at`, moving `*at` past it.
    fn field(&self, at: &mut usize) -> Option<&'a [u8]> {
        let len_at: Range<usize> = *at..at.checked_add(LEN_LEN)?;
        let len = u16::from_be_bytes(self.entries.get(len_at.clone())?.try_into().ok()?);
        let field = len_at.end..len_at.end.checked_add(len as usize)?;
        *at = field.end;
        self.entries.get(field)
    }

    /// The value before the block of `key`: `None` when the block did not write `key`,
    /// `Some(None)` when `key` was absent before it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Option<&'a [u8]>>, ChangeSetError> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let (found, value) = self.entry(mid)?;
            match found.cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(Some(value)),
            }
        }
        Ok(None)
    }

    /// Every entry in key order, checking that keys ascend (what [`Self::get`] relies on).
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry<'a>, ChangeSetError>> + '_ {
        let mut previous: Option<&[u8]> = None;
        (0..self.len()).map(move |index| {
            let (key, value) = self.entry(index)?;
            if previous.is_some_and(|p| p >= key) {
                return Err(ChangeSetError::Unsorted { index });
            }
            previous = Some(key);
            Ok((key, value))
        })
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        vec![
            (vec![0x00], Some(vec![7; 32])),
            (vec![0x01, 0xaa], None),
            (vec![0x01, 0xab], Some(vec![1, 2, 3])),
            (vec![0x02; 53], Some(vec![9; 72])),
        ]
    }

    #[test]
    fn every_entry_is_found_and_nothing_else() {
        let entries = sample();
        let bytes = encode(&entries).unwrap();
        let set = ChangeSet::new(&bytes).unwrap();
        assert_eq!(set.len(), 4);
        for (key, value) in &entries {
            assert_eq!(set.get(key).unwrap(), Some(value.as_deref()), "{key:02x?}");
        }
        for missing in [&[][..], &[0x01], &[0x01, 0xac], &[0x03]] {
            assert_eq!(set.get(missing).unwrap(), None, "{missing:02x?}");
        }
        let listed: Vec<_> = set.entries().map(Result::unwrap).collect();
        let expected: Vec<_> = entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn an_empty_change_set_holds_nothing() {
        let bytes = encode(&[]).unwrap();
        let set = ChangeSet::new(&bytes).unwrap();
        assert!(set.is_empty());
        assert_eq!(set.get(&[0]).unwrap(), None);
    }

    /// Every truncation and a count or offset pointing past the end gives an error, never a
    /// panic.
    #[test]
    fn corrupt_bytes_are_errors() {
        let entries = sample();
        let bytes = encode(&entries).unwrap();
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            let Ok(set) = ChangeSet::new(short) else {
                continue;
            };
            let all: Result<Vec<_>, _> = set.entries().collect();
            assert!(all.is_err(), "cut at {cut} read as whole");
        }
        let mut huge_count = bytes.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            ChangeSet::new(&huge_count),
            Err(ChangeSetError::Header { .. })
        ));
        let mut bad_offset = bytes.clone();
        bad_offset[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let set = ChangeSet::new(&bad_offset).unwrap();
        assert_eq!(set.entry(0), Err(ChangeSetError::Truncated { index: 0 }));
        let index = usize::MAX;
        assert_eq!(set.entry(index), Err(ChangeSetError::Truncated { index }));
    }

    #[test]
    fn keys_out_of_order_are_reported() {
        let entries = sample();
        let mut bytes = encode(&entries).unwrap();
        // Swap the first bytes of entries 1 and 2's keys (0x01 0xaa / 0x01 0xab → 0xab…).
        let entries_at = 4 + 4 * entries.len();
        let second = entries_at + be_u32(&bytes[8..12]) as usize + 2;
        let third = entries_at + be_u32(&bytes[12..16]) as usize + 2;
        bytes.swap(second + 1, third + 1);
        let set = ChangeSet::new(&bytes).unwrap();
        let all: Result<Vec<_>, _> = set.entries().collect();
        assert_eq!(all, Err(ChangeSetError::Unsorted { index: 2 }));
    }

    #[test]
    fn overlong_fields_are_refused() {
        let long = vec![(vec![0; 70_000], None)];
        assert!(matches!(
            encode(&long),
            Err(ChangeSetError::TooLong { what: "key", .. })
        ));
    }
}
