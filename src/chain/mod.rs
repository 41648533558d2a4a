//! The chain's rules: what a block may contain and what applying it does, apart from the
//! processes that run them.
//!
//! - [`app`]: the CN application for consensus (build, validate, commit): one regionchain
//!   segment and one segment per active servicechain, executed in parallel on the EVM;
//! - [`region`]: the regionchain's state — CN-set governance, the [`directory`] of regions and
//!   the [`region_checkpoint`]s of their headers,
//!   [`servicechain`] registrations
//!   and checkpoints, [`pop`] (PoR shares and the reward reserve), [`posc`] (RN registration,
//!   probe selection, penalties), [`withdrawal`] (reward withdrawals into servicechains);
//! - [`segments`]: the PoR segments `C(h)` cut from the chain itself;
//! - [`genesis`]: the region's genesis file; [`recovery`]: replaying a node's block log into
//!   its state after a restart.
//!
//! Layering: this module uses only `types`, `crypto`, `config`, `storage`, `consensus`,
//! `exec`, `mempool`, `por` and `net` (the chain reader); `pipeline`, `rn`, `node` and `cli`
//! use it from above.

pub mod app;
pub mod directory;
pub mod genesis;
pub mod migration;
pub mod pop;
pub mod posc;
pub mod recovery;
pub mod region;
pub mod region_checkpoint;
pub mod segments;
pub mod servicechain;
pub mod withdrawal;
