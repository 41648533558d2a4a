//! Newtypes for the integers and hashes the protocol talks about, so a height is never
//! mistaken for a round or a chain id.

use alloy_primitives::{Bytes, B256};
use alloy_rlp::{RlpDecodableWrapper, RlpEncodableWrapper};
use std::fmt;

macro_rules! integer_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            RlpEncodableWrapper, RlpDecodableWrapper, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The value as its underlying integer.
            pub const fn get(self) -> $inner {
                self.0
            }

            /// The big-endian bytes, as used inside hashed and signed messages.
            pub const fn to_be_bytes(self) -> [u8; std::mem::size_of::<$inner>()] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

integer_newtype!(
    /// Position of a consensus container in the regionchain; genesis is height 0.
    Height(u64)
);
integer_newtype!(
    /// Consensus round within one height; starts at 0 and grows on each round change.
    Round(u32)
);
integer_newtype!(
    /// EIP-155 chain id: names the regionchain or one servicechain.
    ChainId(u64)
);
integer_newtype!(
    /// Index of a segment inside one container; segment 0 is the regionchain's own.
    SegmentId(u32)
);
integer_newtype!(
    /// Index of a consensus node in the CN set in force at a height.
    CnIndex(u32)
);

impl Height {
    /// The next height (saturating: a peer-supplied height never overflows).
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl Round {
    /// The next round (saturating: a peer-supplied round never overflows).
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// SHA-256 of a header's canonical encoding.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    RlpEncodableWrapper,
    RlpDecodableWrapper,
)]
pub struct BlockHash(pub B256);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Which members of a committee signed: bit `i` (LSB-first within each byte) stands for the
/// `i`-th member of the committee ordered by [`CnIndex`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, RlpEncodableWrapper, RlpDecodableWrapper)]
pub struct SignerBitmap(pub Bytes);

impl SignerBitmap {
    /// An empty bitmap for a committee of `members`.
    pub fn with_members(members: usize) -> Self {
        Self(Bytes::from(vec![0u8; members.div_ceil(8)]))
    }

    /// Marks member `i` as a signer.
    ///
    /// # Panics
    /// If `i` is outside the bitmap (a caller bug, not peer input).
    pub fn set(&mut self, i: usize) {
        assert!(
            i / 8 < self.0.len(),
            "signer {i} outside a bitmap of {} bytes",
            self.0.len()
        );
        let mut bytes = self.0.to_vec();
        bytes[i / 8] |= 1 << (i % 8);
        self.0 = Bytes::from(bytes);
    }

    /// Whether member `i` signed; false outside the bitmap.
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Number of signers.
    pub fn count(&self) -> usize {
        self.0.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Indices of the signers, ascending.
    pub fn signers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.0.len() * 8).filter(|&i| self.get(i))
    }

    /// Whether this bitmap is well formed for a committee of `members`: exactly the right
    /// number of bytes and no bit set past the last member.
    pub fn fits(&self, members: usize) -> bool {
        self.0.len() == members.div_ceil(8) && self.signers().all(|i| i < members)
    }
}
