//! Pipeline plumbing: stages joined by bounded links.
//!
//! Every stage is a thread that owns its state and the receiving end of one [`crate::link::Link`];
//! it ends when all senders of its input are gone, after draining what was queued, and drops its
//! own outputs as it leaves — so closing the ingress shuts the whole node down in pipeline order
//! without losing queued work. Links are bounded: a slow stage pushes back on the stage before
//! it instead of growing a queue. [`topology`] is the one place where stages and links are
//! created.

pub mod compact;
pub mod consensus;
pub mod persist;
pub mod pool;
pub mod prober;
pub mod sigverify;
pub mod stage;
pub mod supervisor;
pub mod topology;

pub use crate::link::{link, LinkReceiver, LinkSender, LinkSnapshot, LinkStats};
pub use stage::{
    spawn_critical, spawn_critical_stage, spawn_stage, Stage, StageHandle, StageReport,
    EXIT_STAGE_DIED,
};
pub use supervisor::{NodeRuntime, Supervisor};
