//! Consensus: who may propose and vote at each height and round, and how their signatures
//! are checked.
//!
//! - [`selection`]: the RANDAO-style randomness mix, public ranks, the fixed committee of a
//!   height and round, and its proposer, all recomputed by every receiver from public data.
//! - [`certificate`]: building and verifying commit certificates (aggregate BLS signature of a
//!   quorum of the committee), one at a time or many at once.
//! - [`audit`]: every check of a run of decided blocks on top of a known tip, with all their
//!   signatures in one BLS batch — how an RN audits what it syncs and how a CN catching up
//!   verifies what its peers send ahead of its height.
//! - [`machine`]: the pure BFT state machine (`step(input) -> outputs`); [`proposal`] holds the
//!   checks it applies to proposals, headers and round changes, [`tally`] its vote books,
//!   [`verifier`] the signature cache, [`wal`] the encoding of its write-ahead log.

// A peer's bytes or a disk's contents must never take the node down from here: no `unwrap`,
// `expect` or `panic!` outside tests (an invariant that truly cannot fail says why, in an
// `allow` at its one site).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod certificate;
pub mod governance;
pub mod interface;
pub mod machine;
pub mod proposal;
pub mod selection;
pub mod tally;
pub mod verifier;
pub mod wal;

pub use selection::{CnSet, Committee, Role, SelectionError};
