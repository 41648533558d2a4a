//! Segment 0: the regionchain's own system transactions ([`crate::types::system`]).
//!
//! - CN-set governance ([`crate::consensus::governance`]): a valid change becomes pending, the
//!   block before its effective height announces the new keys in `next_cn_set`, and the set
//!   switches there.
//! - Servicechain registration ([`super::servicechain`]): a verified registration adds the
//!   chain to the registry when its container commits.
//! - Checkpoints: at every `checkpoint_interval`-th height, segment 0 records the latest
//!   segment of every servicechain that moved since the previous checkpoint.
//! - Proof of Participation ([`super::pop`]): PoR shares verified against the node's block
//!   log, epoch payouts from the RN reward reserve.
//! - PoSC ([`super::posc`]): RN registrations, and penalties of RNs a quorum of CNs found
//!   unresponsive (slashing beyond the limit).
//! - Regions ([`super::directory`], [`super::region_checkpoint`]): creations add a region to
//!   the directory region's directory; checkpoints record the other regions' sealed headers
//!   (folded into the governance root), and a checkpoint of the directory region may carry its
//!   directory, which every other region copies, so each region checkpoints every other one.
//!
//! The segment's state root is [`RegionRoots::state_root`] over its parts.

use super::directory::{in_span, Directory, DirectoryError, RegionCreation, RegionEntry};
/// Whether segment 0 verifies the seals region checkpoints and adoptions carry (`Trust`:
/// replaying a block this node executed before, whose certified commitment the caller
/// compares with the outcome).
pub use super::migration::SealCheck as Seals;
use super::migration::{
    cut_state, Adopting, Adoption, AdoptionChunk, FrozenState, MigrationError, MoveOrder,
    MoveRecord, NoState, MAX_CHUNKS_PER_BLOCK, MAX_OPEN_ADOPTIONS,
};
use super::pop::{NoSegments, PopDelta, PopState, SegmentSource, ShareError, ShareSubmission};
use super::posc::{Penalty, PoscError, ProbeAttestation, RnRegistration};
use super::region_checkpoint::{
    platform_root, verify_seal, Platform, RegionCheckpoint, RegionCheckpointError, RegionHead,
    MAX_REGION_CHECKPOINTS_PER_CONTAINER,
};
use super::servicechain::{
    ChainEntry, Checkpoint, Checkpoints, GenesisAlloc, RegionRoots, Registration, Registry,
    RegistryError,
};
use super::withdrawal::{Withdrawal, WithdrawalError};
use crate::consensus::governance::{CnSetChange, GovernanceError};
use crate::consensus::selection::CnSet;
use crate::crypto::bls::PublicKeyBytes;
use crate::crypto::hash::{merkle_root, sha256_concat};
use crate::exec::InvalidReason;
use crate::exec::{ChainSnapshot, Numbering, SnapshotError, StateError};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind};
use crate::types::{BlockHash, ChainId, Header, Height, Segment, SegmentCommitment};
use alloy_primitives::B256;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Tags a checkpointed region head where it is folded into the governance root, apart from
/// the CN-set changes and region creations folded there.
const REGION_HEAD_DOMAIN: &[u8] = b"KAON/region-head/v1";

/// The regionchain state that consensus and the servicechains depend on.
#[derive(Debug, Clone)]
pub struct RegionState {
    pub region: ChainId,
    /// The CN set in force.
    pub set: Arc<CnSet>,
    /// An approved change not yet in force: (effective height, new keys).
    pub pending: Option<(Height, Vec<PublicKeyBytes>)>,
    /// Commitment to every governance change (CN-set changes, region creations) and every
    /// other region's checkpointed header so far.
    pub governance_root: B256,
    /// The regions this regionchain has recorded (the first region's is the platform's).
    pub directory: Directory,
    /// The last checkpointed header of each other region in the directory (or of the
    /// directory region, named by `anchor`).
    pub region_heads: BTreeMap<ChainId, RegionHead>,
    /// In a region other than the first: the directory region, as genesis names it.
    pub anchor: Option<RegionEntry>,
    pub registry: Registry,
    /// Registered chains this region moved to another one: frozen, served for history only.
    pub moved: BTreeMap<ChainId, MovedChain>,
    /// Commitment to every move, in order ([`MoveRecord::fold`]).
    pub moves_root: B256,
    /// How the chains moved here from another region number their blocks: on from where
    /// they were frozen (shared with every block's EVM context).
    pub numbering: Arc<Numbering>,
    /// Adoptions whose state is still arriving in chunks: held, not served.
    pub adopting: BTreeMap<ChainId, Adopting>,
    pub checkpoints: Checkpoints,
    pub pop: PopState,
    /// Where share verification reads `C(h)`.
    pub segments: Arc<dyn SegmentSource>,
    /// Where a move reads the chain's state.
    pub states: Arc<dyn FrozenState>,
}

/// What an accepted region checkpoint records ([`RegionState::check_checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The header's head (none for the last recorded header sent again with a listing).
    pub head: Option<RegionHead>,
    /// The directory region's view of the platform, when the checkpoint carried it.
    pub platform: Option<Platform>,
}

/// Records `head` in `heads` where it is further on than the one there (an accepted
/// checkpoint always is; a head copied from the directory region may not be).
fn record_head(heads: &mut BTreeMap<ChainId, RegionHead>, head: RegionHead) {
    if heads
        .get(&head.region)
        .is_none_or(|h| h.height < head.height)
    {
        heads.insert(head.region, head);
    }
}

/// A chain this region moved away, with what the target needs to check it: the roots of the
/// freezing block's segment 0 and the `moves` root before the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedChain {
    pub record: MoveRecord,
    pub previous_moves: B256,
    pub roots: RegionRoots,
}

/// A servicechain registered by a segment, with its genesis allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChain {
    pub chain_id: ChainId,
    pub entry: ChainEntry,
    pub alloc: Vec<GenesisAlloc>,
    /// A chain moved here: its state, and its commitment where it was frozen.
    pub adopted: Option<(MoveRecord, ChainSnapshot)>,
}

/// The outcome of executing segment 0 of one block.
#[derive(Debug, Clone)]
pub struct RegionExecution {
    pub commitment: SegmentCommitment,
    /// The pending change after this segment.
    pub pending: Option<(Height, Vec<PublicKeyBytes>)>,
    pub governance_root: B256,
    /// The directory after this segment, when it was written: regions created here (the
    /// directory region), or the directory copied from a checkpoint of the directory region
    /// (which may equal the one before, the listing bringing heads only).
    pub directory: Option<Directory>,
    /// Other regions' heads this segment recorded, in order: checkpointed here, or taken from
    /// the directory region's listing (where it is further on).
    pub region_heads: Vec<RegionHead>,
    pub registered: Vec<NewChain>,
    pub registry_root: B256,
    /// Adoptions this segment opened whose state has more chunks to come.
    pub opened: Vec<Adopting>,
    /// Chunks of adopted states this segment took.
    pub chunks: Vec<AdoptionChunk>,
    /// The chain this segment froze and moved away.
    pub moved: Option<MoveRecord>,
    /// Why this node could not read the state a move needed (the execution is then void).
    pub state_error: Option<String>,
    /// Positions of transactions refused for now only (a second move order in the block, a
    /// move waiting for owed rewards or a CN-set change), which CNs keep queued.
    pub retry: Vec<usize>,
    /// The segment's roots (its state root hashes them).
    pub roots: RegionRoots,
    pub checkpoint: Option<Checkpoint>,
    pub pop: PopDelta,
    /// Per transaction: why it was marked invalid, `None` when accepted.
    pub refusals: Vec<Option<String>>,
}

/// What applying segment 0 needs to know of its committed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<'a> {
    pub height: Height,
    pub hash: BlockHash,
    /// `mix(height)`: seeds the PoSC probe selection after this container.
    pub mix: B256,
    /// Chains of the servicechain segments (1..), in order.
    pub servicechains: Vec<ChainId>,
    /// The header's CN-set announcement.
    pub next_cn_set: &'a [PublicKeyBytes],
}

impl<'a> Committed<'a> {
    pub fn of(header: &'a Header) -> Self {
        Self {
            height: header.height,
            hash: header.hash(),
            mix: header.mix,
            servicechains: header.segments.iter().skip(1).map(|s| s.chain_id).collect(),
            next_cn_set: &header.next_cn_set,
        }
    }
}

/// Why a system transaction was marked invalid.
#[derive(Debug, thiserror::Error)]
enum SystemTxRefusal {
    #[error(transparent)]
    Framing(#[from] system::SystemTxError),
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    RegionCheckpoint(#[from] RegionCheckpointError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Posc(#[from] PoscError),
    #[error(transparent)]
    Withdrawal(#[from] WithdrawalError),
}

/// Segment-0 state being built by one execution.
struct Draft<'a> {
    base: &'a RegionState,
    seals: Seals,
    height: Height,
    pending: Option<(Height, Vec<PublicKeyBytes>)>,
    governance_root: B256,
    /// The directory as this segment changed it.
    directory: Option<Directory>,
    region_heads: Vec<RegionHead>,
    /// Regions whose checkpoint this segment looked at, accepted or not.
    checkpoints_tried: Vec<ChainId>,
    /// Heads this segment took from the directory region's listing: the later checkpoints of
    /// those regions are checked against them.
    copied: Vec<RegionHead>,
    registered: Vec<NewChain>,
    registry_root: B256,
    moved: Option<MoveRecord>,
    /// Whether a move order was looked at (one per segment, accepted or not).
    move_tried: bool,
    /// Replaying with every move refused ([`RegionState::execute_refusing_moves`]).
    refuse_moves: bool,
    /// Why this node could not read the state a move needs: the execution is void.
    state_error: Option<String>,
    /// Position of the transaction being applied.
    index: usize,
    /// Transactions refused for now only, kept queued for a later block.
    retry: Vec<usize>,
    /// Whether an adoption was looked at (one per segment, accepted or not: each costs a
    /// pairing and hashing a snapshot).
    adoption_tried: bool,
    opened: Vec<Adopting>,
    chunks: Vec<AdoptionChunk>,
    /// Chunks hashed against their roots in this segment, taken or not.
    chunks_tried: usize,
    shares: Vec<ShareSubmission>,
    registrations: Vec<RnRegistration>,
    penalties: Vec<Penalty>,
    withdrawals: Vec<Withdrawal>,
}

impl Draft<'_> {
    fn apply(&mut self, raw: &[u8]) -> Result<(), SystemTxRefusal> {
        match system::split(raw)?.0 {
            SystemKind::CnSetChange => self.change_set(CnSetChange::from_system_tx(raw)?),
            SystemKind::RegisterServicechain => self.register(Registration::from_system_tx(raw)?),
            SystemKind::PorShare => self.share(ShareSubmission::from_system_tx(raw)?),
            SystemKind::RegisterRn => self.register_rn(RnRegistration::from_system_tx(raw)?),
            SystemKind::Penalty => self.penalize(Penalty::from_system_tx(raw)?),
            SystemKind::Withdrawal => self.withdraw(Withdrawal::from_system_tx(raw)?),
            SystemKind::CreateRegion => self.create_region(RegionCreation::from_system_tx(raw)?),
            SystemKind::RegionCheckpoint => {
                self.checkpoint_region(RegionCheckpoint::from_system_tx(raw)?)
            }
            SystemKind::MoveServicechain => self.move_chain(MoveOrder::from_system_tx(raw)?),
            SystemKind::AdoptServicechain => self.adopt(Adoption::from_system_tx(raw)?),
            SystemKind::AdoptionChunk => self.adopt_chunk(AdoptionChunk::from_system_tx(raw)?),
            SystemKind::ProbeAttestation => {
                ProbeAttestation::from_system_tx(raw)?;
                Err(PoscError::BareAttestation.into())
            }
        }
    }

    fn register_rn(&mut self, registration: RnRegistration) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        base.pop
            .posc
            .check_registration(&registration, base.region, &self.registrations)?;
        self.registrations.push(registration);
        Ok(())
    }

    fn withdraw(&mut self, withdrawal: Withdrawal) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        let chain = withdrawal.spec.chain;
        let registered = base.serves(chain) && self.moved.is_none_or(|m| m.chain != chain);
        base.pop
            .check_withdrawal(&withdrawal, base.region, registered, &self.withdrawals)?;
        self.withdrawals.push(withdrawal);
        Ok(())
    }

    fn penalize(&mut self, penalty: Penalty) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        base.pop.posc.check_penalty(
            &penalty,
            self.height,
            base.region,
            &base.set,
            &self.penalties,
        )?;
        self.penalties.push(penalty);
        Ok(())
    }

    fn share(&mut self, share: ShareSubmission) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        base.pop
            .check_share(&share, self.height, &self.shares, &*base.segments)?;
        self.shares.push(share);
        Ok(())
    }

    fn change_set(&mut self, change: CnSetChange) -> Result<(), SystemTxRefusal> {
        if self.pending.is_some() {
            return Err(GovernanceError::AlreadyPending.into());
        }
        change.verify(self.base.region, &self.base.set, self.height)?;
        self.governance_root =
            sha256_concat(&[self.governance_root.as_slice(), &canonical(&change)]);
        self.pending = Some((change.effective, change.new_set));
        Ok(())
    }

    /// The directory as this segment has it so far.
    fn directory(&self) -> &Directory {
        self.directory.as_ref().unwrap_or(&self.base.directory)
    }

    fn create_region(&mut self, creation: RegionCreation) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        // Only the directory region lists regions; the others copy its directory.
        if let Some(anchor) = &base.anchor {
            return Err(DirectoryError::NotDirectoryRegion {
                here: base.region,
                directory: anchor.region,
            }
            .into());
        }
        if !self.directory().has_room_for(&creation.entry) {
            return Err(DirectoryError::Full.into());
        }
        let listed = std::iter::once(base.region).chain(self.directory().ids());
        creation.verify(base.region, &base.set, listed)?;
        self.governance_root =
            sha256_concat(&[self.governance_root.as_slice(), &canonical(&creation)]);
        self.directory
            .get_or_insert_with(|| base.directory.clone())
            .insert(creation.entry);
        Ok(())
    }

    /// Records another region's header: the region must be in the directory (listed before
    /// this segment) or be the directory region genesis names, and the header above its last
    /// checkpoint. One checkpoint per region and
    /// [`MAX_REGION_CHECKPOINTS_PER_CONTAINER`] in all are looked at per segment, accepted or
    /// not (the cheap refusals come before any signature work).
    fn checkpoint_region(&mut self, checkpoint: RegionCheckpoint) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        let region = checkpoint.region();
        if self.checkpoints_tried.contains(&region) {
            return Err(RegionCheckpointError::AlreadyInBlock(region).into());
        }
        if self.checkpoints_tried.len() >= MAX_REGION_CHECKPOINTS_PER_CONTAINER {
            return Err(RegionCheckpointError::TooManyInBlock.into());
        }
        // A listing may change the trust every later checkpoint is checked against, so it is
        // looked at only first (a proposer puts it there).
        if checkpoint.listing.is_some() && !self.checkpoints_tried.is_empty() {
            // For this block only: it stays queued for a block that puts it first.
            self.retry.push(self.index);
            return Err(RegionCheckpointError::ListingNotFirst.into());
        }
        self.checkpoints_tried.push(region);
        let Recorded { head, platform } =
            base.check_checkpoint(&checkpoint, &self.copied, self.seals)?;
        if let Some(head) = head {
            self.governance_root = sha256_concat(&[
                self.governance_root.as_slice(),
                REGION_HEAD_DOMAIN,
                &canonical(&head),
            ]);
            self.region_heads.push(head);
        }
        if let Some(platform) = platform {
            self.take_platform(platform);
        }
        Ok(())
    }

    /// Copies the directory region's view of the platform: its directory, and its heads of
    /// the regions it lists (other than this one), so this regionchain trusts each region's
    /// CN set as far as the directory region followed it, not from that region's genesis.
    /// A head is kept only where it is further on than the one recorded here
    /// ([`record_head`]); the state root commits to the heads through its `directory` part.
    fn take_platform(&mut self, platform: Platform) {
        let base = self.base;
        let taken = |h: &&RegionHead| base.takes_head(&platform.directory, h);
        self.copied = platform.heads.iter().filter(taken).copied().collect();
        self.region_heads.extend(&self.copied);
        self.directory = Some(platform.directory);
    }

    /// Freezes one of this region's servicechains and records its state for the target: a
    /// quorum's order, a chain this region registered and still serves, a region this
    /// regionchain knows as the target, one move per segment. The chain's state is read as
    /// committed before this block, which carries no segment of it.
    fn move_chain(&mut self, order: MoveOrder) -> Result<(), SystemTxRefusal> {
        // Before the approval's pairing: a block looks at one order, whatever it carries.
        if std::mem::replace(&mut self.move_tried, true) {
            // Another order came first (maybe a forged one): this one waits for a later block.
            self.retry.push(self.index);
            return Err(MigrationError::OnePerBlock.into());
        }
        if self.refuse_moves {
            return Err(MigrationError::Replay.into());
        }
        let base = self.base;
        order.verify(base.region, &base.set)?;
        let entry = base
            .registry
            .get(order.chain)
            .filter(|_| base.serves(order.chain))
            .ok_or(MigrationError::NotServed(order.chain))?;
        // A chain moved here keeps its first region's id; the next target could not tell it
        // from a forgery of that region's chain, so it stays (`docs/regions.md`).
        if !in_span(base.region, order.chain) {
            return Err(MigrationError::NotSourcesChain {
                chain: order.chain,
                source_region: base.region,
            }
            .into());
        }
        if base.listed(order.target).is_none() {
            return Err(MigrationError::UnknownRegion(order.target).into());
        }
        // Rewards withdrawn to the chain are paid by its next segment, which it will not get.
        let owed = base.pop.credits.contains_key(&order.chain)
            || self.withdrawals.iter().any(|w| w.spec.chain == order.chain);
        if owed {
            self.retry.push(self.index);
            return Err(MigrationError::RewardsOwed(order.chain).into());
        }
        // Its header would carry the new set beside the chain's state in the adoption.
        if !base.expected_next_set(self.height).is_empty() {
            self.retry.push(self.index);
            return Err(MigrationError::SetChanging.into());
        }
        let (snapshot, final_root) = match base.states.take(order.chain) {
            Ok(taken) => taken,
            // The same on every node: the state at the parent is the same everywhere.
            Err(e @ StateError::Snapshot(SnapshotError::TooLarge)) => {
                return Err(MigrationError::Snapshot {
                    chain: order.chain,
                    reason: e.to_string(),
                }
                .into())
            }
            // This node cannot read its state: it cannot execute the block at all.
            Err(e) => {
                let reason = format!("reading chain {}'s state: {e}", order.chain);
                self.state_error = Some(reason.clone());
                return Err(MigrationError::Snapshot {
                    chain: order.chain,
                    reason,
                }
                .into());
            }
        };
        // Cut as the adoption carries it; a contract too large for a chunk is refused alike
        // everywhere.
        let snapshot_root = cut_state(&snapshot)
            .map_err(|e| MigrationError::Snapshot {
                chain: order.chain,
                reason: e.to_string(),
            })?
            .snapshot_root();
        let record = MoveRecord {
            chain: order.chain,
            source: base.region,
            target: order.target,
            height: self.height,
            owner: entry.owner,
            final_root,
            snapshot_root,
        };
        self.moved = Some(record);
        Ok(())
    }

    /// Starts a chain another region moved here, once its adoption proves itself against
    /// the CN set this regionchain trusts for that region; one looked at per segment.
    fn adopt(&mut self, adoption: Adoption) -> Result<(), SystemTxRefusal> {
        if std::mem::replace(&mut self.adoption_tried, true) {
            self.retry.push(self.index);
            return Err(MigrationError::OnePerBlock.into());
        }
        let base = self.base;
        let held = self.holds(adoption.record.chain);
        let trusted = base.trusted_set(adoption.record.source);
        adoption.verify(base.region, trusted, held, self.seals)?;
        // After the whole check: only a proven adoption waits for a place.
        let more_to_come = adoption.chunk_roots.len() > 1;
        let open = base.adopting.len() + self.opened.len();
        if more_to_come && open >= MAX_OPEN_ADOPTIONS {
            self.retry.push(self.index);
            return Err(MigrationError::TooManyOpen(open).into());
        }
        match more_to_come {
            true => self.opened.push(Adopting::open(adoption, self.height)),
            false => self.register_adopted(adoption.record, adoption.snapshot),
        }
        Ok(())
    }

    /// Whether `chain` is held here or becomes so in this segment: registered, adopted, or
    /// being adopted.
    fn holds(&self, chain: ChainId) -> bool {
        self.base.registry.contains(chain)
            || self.base.adopting.contains_key(&chain)
            || self.registered.iter().any(|c| c.chain_id == chain)
            || self.opened.iter().any(|a| a.record.chain == chain)
    }

    /// Registers `chain` for `owner` in this segment, with its genesis allocations or the
    /// state it was adopted with.
    fn record_registration(
        &mut self,
        chain: ChainId,
        owner: alloy_primitives::Address,
        alloc: Vec<GenesisAlloc>,
        adopted: Option<(MoveRecord, ChainSnapshot)>,
    ) {
        let entry = ChainEntry {
            owner,
            registered_at: self.height,
        };
        self.registry_root = Registry::fold(self.registry_root, chain, &entry);
        self.registered.push(NewChain {
            chain_id: chain,
            entry,
            alloc,
            adopted,
        });
    }

    /// Registers a chain moved here, its whole state in.
    fn register_adopted(&mut self, record: MoveRecord, state: ChainSnapshot) {
        self.record_registration(
            record.chain,
            record.owner,
            Vec::new(),
            Some((record, state)),
        );
    }

    /// Takes one more chunk of an open adoption's state, checked against the root the source
    /// recorded for its place; with the last one in, the chain is registered. A chunk whose
    /// adoption is not open yet (or past this block's [`MAX_CHUNKS_PER_BLOCK`]) waits queued.
    fn adopt_chunk(&mut self, chunk: AdoptionChunk) -> Result<(), SystemTxRefusal> {
        let base = self.base;
        if chunk.region != base.region {
            return Err(MigrationError::WrongRegion {
                got: chunk.region,
                expected: base.region,
            }
            .into());
        }
        let chain = chunk.chain;
        let opened = self.opened.iter().find(|a| a.record.chain == chain);
        let Some(adopting) = opened.or_else(|| base.adopting.get(&chain)) else {
            self.retry.push(self.index);
            return Err(MigrationError::NotAdopting(chain).into());
        };
        let in_block = self.chunks.iter().filter(|c| c.chain == chain);
        if in_block.clone().any(|c| c.index == chunk.index) {
            return Err(MigrationError::ChunkIn {
                chain,
                index: chunk.index,
            }
            .into());
        }
        // Counted before the hashing, taken or not: a block's junk chunks cost a bounded work.
        if self.chunks_tried >= MAX_CHUNKS_PER_BLOCK {
            self.retry.push(self.index);
            return Err(MigrationError::ChunksPerBlock.into());
        }
        self.chunks_tried += 1;
        adopting.check(&chunk)?;
        let complete = match adopting.missing().saturating_sub(in_block.count()) {
            1 => Some(adopting.clone()),
            _ => None,
        };
        self.chunks.push(chunk);
        if let Some(mut whole) = complete {
            for c in self.chunks.iter().filter(|c| c.chain == chain) {
                whole.chunks[c.index as usize] = Some(c.snapshot.clone());
            }
            let state = whole.state().expect("every chunk is in");
            self.register_adopted(whole.record, state);
        }
        Ok(())
    }

    fn register(&mut self, registration: Registration) -> Result<(), SystemTxRefusal> {
        registration.verify(self.base.region)?;
        let spec = registration.spec;
        if self.holds(spec.chain_id) {
            return Err(RegistryError::AlreadyRegistered(spec.chain_id).into());
        }
        self.record_registration(spec.chain_id, spec.owner, spec.alloc, None);
        Ok(())
    }
}

impl RegionState {
    pub fn new(region: ChainId, set: Arc<CnSet>, checkpoint_interval: u64) -> Self {
        Self {
            region,
            set,
            pending: None,
            governance_root: B256::ZERO,
            directory: Directory::default(),
            region_heads: BTreeMap::new(),
            anchor: None,
            registry: Registry::default(),
            moved: BTreeMap::new(),
            moves_root: B256::ZERO,
            numbering: Arc::default(),
            adopting: BTreeMap::new(),
            checkpoints: Checkpoints::new(checkpoint_interval),
            pop: PopState::new(Default::default()),
            segments: Arc::new(NoSegments),
            states: Arc::new(NoState),
        }
    }

    /// Reads servicechain state from `states` when a move freezes a chain.
    pub fn with_states(mut self, states: Arc<dyn FrozenState>) -> Self {
        self.states = states;
        self
    }

    /// Whether a chunk of adopted state would be taken now, without executing a segment (the
    /// last chunk's segment would merge the whole state): for an RN checking one it is sent.
    pub fn check_chunk(&self, raw: &[u8]) -> Result<(), MigrationError> {
        let chunk = AdoptionChunk::from_system_tx(raw)?;
        if chunk.region != self.region {
            return Err(MigrationError::WrongRegion {
                got: chunk.region,
                expected: self.region,
            });
        }
        self.adopting
            .get(&chunk.chain)
            .ok_or(MigrationError::NotAdopting(chunk.chain))?
            .check(&chunk)
    }

    /// Whether `chain` is one of this region's servicechains now: registered (or adopted)
    /// and not moved away. Only these get segments and transactions.
    pub fn serves(&self, chain: ChainId) -> bool {
        self.registry.contains(chain) && !self.moved.contains_key(&chain)
    }

    /// The root of the CN set this regionchain trusts for `region` now: the one its last
    /// checkpoint of that region names, else the set the directory (or genesis) records.
    pub fn trusted_set(&self, region: ChainId) -> Option<B256> {
        match self.region_heads.get(&region) {
            Some(head) => Some(head.set_root),
            None => self.listed(region).map(|e| e.cn_set_root),
        }
    }

    /// Checks `checkpoint` as segment 0 would now — the region listed, the height, the trusted
    /// set (from `copied`, the heads a listing earlier in the segment brought, where it holds
    /// the region), a listing only in a checkpoint of the directory region and only the one
    /// its header commits to — and the seal unless `seals` is [`Seals::Trust`]; what it would
    /// record.
    pub fn check_checkpoint(
        &self,
        checkpoint: &RegionCheckpoint,
        copied: &[RegionHead],
        seals: Seals,
    ) -> Result<Recorded, RegionCheckpointError> {
        let region = checkpoint.region();
        let last = copied
            .iter()
            .find(|h| h.region == region)
            .or(self.region_heads.get(&region));
        // The header recorded last, sent again for the listing it carries (a checkpoint
        // without one, relayed by anyone, may have taken that height first): its height and
        // set were checked when it was recorded; the rest is checked as for any checkpoint.
        let again = checkpoint.listing.is_some()
            && last.is_some_and(|l| l.hash == checkpoint.sealed.hash());
        if again {
            checkpoint.precheck_again(self.region)?;
        } else {
            checkpoint.precheck(self.region, self.listed(region), last)?;
        }
        let platform = match &checkpoint.listing {
            None => None,
            Some(_) if self.anchor.as_ref().is_none_or(|a| a.region != region) => {
                return Err(RegionCheckpointError::ListingNotFromDirectory(region))
            }
            Some(listing) => Some(listing.check(&checkpoint.sealed.header, &self.directory)?),
        };
        // Sent again, it must bring something, or anyone could fill blocks with it.
        if again && platform.as_ref().is_some_and(|p| !self.would_take(p)) {
            return Err(RegionCheckpointError::NothingNew(region));
        }
        if seals == Seals::Verify {
            verify_seal(&checkpoint.sealed, &checkpoint.cn_set)?;
        }
        Ok(Recorded {
            head: (!again).then(|| checkpoint.head()),
            platform,
        })
    }

    /// Whether copying `platform` would change this regionchain: an entry it lacks, or a head
    /// further on than its own ([`Draft::take_platform`] takes those).
    fn would_take(&self, platform: &Platform) -> bool {
        platform.directory != self.directory
            || platform
                .heads
                .iter()
                .any(|h| self.takes_head(&platform.directory, h))
    }

    /// Whether this regionchain lacks some of directory region `from`'s view of the platform
    /// that a listing would bring and that matters: an entry, or a head further on than its own
    /// ([`Self::takes_head`]) whose CN set it does not trust (it would refuse that region's
    /// checkpoints until it took it). What a relay sends a listing for.
    pub fn lacks_trust_of(&self, from: &RegionState) -> bool {
        let untrusted = |h: &&RegionHead| self.trusted_set(h.region) != Some(h.set_root);
        self.directory != from.directory
            || from
                .region_heads
                .values()
                .filter(untrusted)
                .any(|h| self.takes_head(&from.directory, h))
    }

    /// Whether a head of the directory region's view is taken here: of another region it
    /// lists, further on than this regionchain's own.
    fn takes_head(&self, directory: &Directory, head: &RegionHead) -> bool {
        head.region != self.region
            && directory.get(head.region).is_some()
            && self
                .region_heads
                .get(&head.region)
                .is_none_or(|mine| mine.height < head.height)
    }

    /// Names the directory region (from genesis) whose headers this regionchain checkpoints.
    pub fn with_directory_anchor(mut self, anchor: Option<RegionEntry>) -> Self {
        self.anchor = anchor;
        self
    }

    /// A region whose headers this regionchain checkpoints: one its directory lists, or the
    /// directory region its genesis names.
    pub fn listed(&self, region: ChainId) -> Option<&RegionEntry> {
        self.directory
            .get(region)
            .or(self.anchor.as_ref().filter(|a| a.region == region))
    }

    /// Starts the PoP state with `params` (genesis settings).
    pub fn with_pop(mut self, params: super::pop::PopParams) -> Self {
        self.pop = PopState::new(params);
        self
    }

    /// Verifies shares against `segments` (the node's block log) from now on.
    pub fn with_segments(mut self, segments: Arc<dyn SegmentSource>) -> Self {
        self.segments = segments;
        self
    }

    /// Registers the genesis servicechains (owner: nobody).
    pub fn with_genesis_chains(mut self, chains: &[ChainId]) -> Self {
        for chain in chains {
            self.registry.insert(
                *chain,
                ChainEntry {
                    owner: Default::default(),
                    registered_at: Height(0),
                },
            );
        }
        self
    }

    /// The regionchain's state parts now.
    pub fn roots(&self) -> RegionRoots {
        RegionRoots {
            governance: self.governance_root,
            registry: self.registry.root(),
            checkpoints: self.checkpoints.head(),
            pop: self.pop.root,
            moves: self.moves_root,
            directory: platform_root(&self.directory, self.region_heads.values()),
        }
    }

    /// The regionchain's state root now.
    pub fn root(&self) -> B256 {
        self.roots().state_root()
    }

    /// Keys block `height`'s header must announce: the pending set when it takes effect at
    /// the next height, nothing otherwise.
    pub fn expected_next_set(&self, height: Height) -> Vec<PublicKeyBytes> {
        match &self.pending {
            Some((effective, keys)) if *effective == height.next() => keys.clone(),
            _ => Vec::new(),
        }
    }

    /// Executes segment 0 of block `height` without changing this state.
    pub fn execute(&self, height: Height, segment: &Segment) -> RegionExecution {
        self.execute_with(height, segment, Seals::Verify, false)
    }

    /// [`Self::execute`] taking the seals of region checkpoints as verified (every other
    /// check made): for replaying a block this node committed before, whose certified segment-0
    /// commitment — receipts root included, so which transactions were accepted — the caller
    /// compares with the result, executing in full when they differ.
    pub(crate) fn execute_trusting_seals(
        &self,
        height: Height,
        segment: &Segment,
    ) -> RegionExecution {
        self.execute_with(height, segment, Seals::Trust, false)
    }

    /// [`Self::execute_trusting_seals`] refusing every move: for replaying a block this node
    /// committed before whose move was refused then for the chain's state at the time (too
    /// large), which a replay reading today's state cannot see again.
    pub(crate) fn execute_refusing_moves(
        &self,
        height: Height,
        segment: &Segment,
    ) -> RegionExecution {
        self.execute_with(height, segment, Seals::Trust, true)
    }

    fn execute_with(
        &self,
        height: Height,
        segment: &Segment,
        seals: Seals,
        refuse_moves: bool,
    ) -> RegionExecution {
        let mut draft = Draft {
            base: self,
            seals,
            height,
            pending: self.pending.clone(),
            governance_root: self.governance_root,
            directory: None,
            region_heads: Vec::new(),
            checkpoints_tried: Vec::new(),
            copied: Vec::new(),
            registered: Vec::new(),
            registry_root: self.registry.root(),
            moved: None,
            move_tried: false,
            refuse_moves,
            state_error: None,
            index: 0,
            retry: Vec::new(),
            adoption_tried: false,
            opened: Vec::new(),
            chunks: Vec::new(),
            chunks_tried: 0,
            shares: Vec::new(),
            registrations: Vec::new(),
            penalties: Vec::new(),
            withdrawals: Vec::new(),
        };
        let refusals: Vec<Option<String>> = segment
            .txs
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                draft.index = index;
                draft.apply(raw).err().map(|e| {
                    tracing::debug!(error = %e, %height, "system transaction marked invalid");
                    e.to_string()
                })
            })
            .collect();
        let directory_root = {
            let mut heads = self.region_heads.clone();
            for head in &draft.region_heads {
                record_head(&mut heads, *head);
            }
            platform_root(draft.directory(), heads.values())
        };
        let receipts: Vec<B256> = refusals
            .iter()
            .map(|refusal| match refusal {
                None => sha256_concat(&[&[1u8]]),
                Some(_) => sha256_concat(&[&[0u8, InvalidReason::Unsupported as u8]]),
            })
            .collect();
        let checkpoint = self.checkpoints.due(height);
        let mut pop = PopDelta {
            shares: draft.shares,
            registrations: draft.registrations,
            penalties: draft.penalties,
            withdrawals: draft.withdrawals,
            root: B256::ZERO,
        };
        pop.root = self.pop.next_root(height, &pop);
        let roots = RegionRoots {
            governance: draft.governance_root,
            registry: draft.registry_root,
            checkpoints: checkpoint
                .as_ref()
                .map_or(self.checkpoints.head(), Checkpoint::chain_head),
            pop: pop.root,
            moves: draft
                .moved
                .as_ref()
                .map_or(self.moves_root, |m| m.fold(self.moves_root)),
            directory: directory_root,
        };
        RegionExecution {
            commitment: SegmentCommitment {
                chain_id: self.region,
                tx_count: segment.txs.len() as u32,
                tx_root: segment.tx_root(),
                receipts_root: merkle_root(&receipts),
                state_root: roots.state_root(),
            },
            pending: draft.pending,
            governance_root: draft.governance_root,
            directory: draft.directory,
            region_heads: draft.region_heads,
            registered: draft.registered,
            registry_root: draft.registry_root,
            opened: draft.opened,
            chunks: draft.chunks,
            moved: draft.moved,
            state_error: draft.state_error,
            retry: draft.retry,
            roots,
            checkpoint,
            pop,
            refusals,
        }
    }

    /// Applies a committed block's segment 0 and the header's announcement, and notes the
    /// block's servicechain segments for the next checkpoint.
    pub fn apply(&mut self, execution: &RegionExecution, container: &Committed<'_>) {
        self.governance_root = execution.governance_root;
        self.pending = execution.pending.clone();
        if let Some(directory) = &execution.directory {
            self.directory = directory.clone();
        }
        for head in &execution.region_heads {
            record_head(&mut self.region_heads, *head);
        }
        for adopting in &execution.opened {
            self.adopting
                .insert(adopting.record.chain, adopting.clone());
        }
        for chunk in &execution.chunks {
            if let Some(adopting) = self.adopting.get_mut(&chunk.chain) {
                adopting.chunks[chunk.index as usize] = Some(chunk.snapshot.clone());
                adopting.progress = container.height;
            }
        }
        // An adoption whose chunks stopped coming frees its place.
        self.adopting
            .retain(|_, adopting| !adopting.stalled(container.height));
        for chain in &execution.registered {
            self.adopting.remove(&chain.chain_id);
            self.registry.insert(chain.chain_id, chain.entry);
            if let Some((record, _)) = &chain.adopted {
                Arc::make_mut(&mut self.numbering).adopt(
                    chain.chain_id,
                    record.height.0,
                    container.height,
                );
            }
        }
        if let Some(record) = execution.moved {
            let moved = MovedChain {
                record,
                previous_moves: self.moves_root,
                roots: execution.roots,
            };
            self.moves_root = execution.roots.moves;
            self.moved.insert(record.chain, moved);
            Arc::make_mut(&mut self.numbering).move_away(record.chain, record.height);
        }
        debug_assert_eq!(self.registry.root(), execution.registry_root);
        self.pop.apply(
            container.height,
            container.mix,
            &container.servicechains,
            &execution.pop,
        );
        if let Some(checkpoint) = &execution.checkpoint {
            let roots = RegionRoots {
                checkpoints: checkpoint.chain_head(),
                ..self.roots()
            };
            self.checkpoints.commit(checkpoint.clone(), roots);
        }
        self.checkpoints.record_segments(
            container.height,
            &container.hash,
            &container.servicechains,
        );
        self.switch_set(container.next_cn_set);
    }

    fn switch_set(&mut self, announced: &[PublicKeyBytes]) {
        if announced.is_empty() {
            return;
        }
        match CnSet::from_bytes(announced) {
            Ok(set) => {
                tracing::info!(cns = set.len(), "CN set changes at the next height");
                self.set = Arc::new(set);
                self.pending = None;
            }
            // Invariant: validation compared the announcement with the verified pending
            // change, whose keys were validated; a failure here is a bug worth seeing.
            Err(e) => tracing::error!(error = %e, "announced CN set does not parse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::directory::approve_creation;
    use crate::chain::region_checkpoint::tests::{
        checkpoint, cn_keys, entry, reseal, sealed, HERE, OTHER,
    };
    use crate::chain::region_checkpoint::Listing;
    use crate::crypto::bls::SecretKey;
    use crate::types::{BlockHash, CnIndex, SealedHeader};

    /// Region HERE, whose directory lists OTHER.
    fn directory_region() -> RegionState {
        let own = cn_keys("here");
        let set = CnSet::new(own.iter().map(SecretKey::public_key).collect()).unwrap();
        let mut state = RegionState::new(HERE, Arc::new(set), 16);
        state.directory.insert(entry(&cn_keys("other")));
        state
    }

    fn segment(txs: Vec<alloy_primitives::Bytes>) -> Segment {
        Segment {
            chain_id: HERE,
            txs,
        }
    }

    /// A servicechain state of one account, or a store that cannot be read.
    #[derive(Debug)]
    struct Fixed(bool);

    impl FrozenState for Fixed {
        fn take(&self, _chain: ChainId) -> Result<(ChainSnapshot, B256), StateError> {
            match self.0 {
                true => Ok((ChainSnapshot::default(), B256::repeat_byte(4))),
                false => Err(StateError::Backend("the disk is gone".into())),
            }
        }
    }

    #[test]
    fn a_move_looks_at_one_order_waits_for_owed_rewards_and_a_state_it_cannot_read_voids_it() {
        let own = cn_keys("here");
        let chain = ChainId(HERE.0 + 1);
        let region = |readable: bool| {
            directory_region()
                .with_genesis_chains(&[chain])
                .with_states(Arc::new(Fixed(readable)))
        };
        let state = region(true);
        let approvers: Vec<(crate::types::CnIndex, &SecretKey)> = own
            .iter()
            .enumerate()
            .map(|(i, k)| (crate::types::CnIndex(i as u32), k))
            .collect();
        let order = MoveOrder::approve(HERE, &state.set, chain, OTHER, &approvers)
            .unwrap()
            .to_system_tx();
        // The second order of a block is refused before its approval is checked (one without a
        // quorum says so only when first), and kept for a later block.
        let short = MoveOrder::approve(HERE, &state.set, chain, OTHER, &approvers[..1])
            .unwrap()
            .to_system_tx();
        let execution = state.execute(Height(1), &segment(vec![order.clone(), short.clone()]));
        assert_eq!(execution.refusals[0], None);
        assert!(execution.refusals[1]
            .as_deref()
            .is_some_and(|r| r.contains("one move and one adoption per block")));
        assert_eq!(execution.retry, [1]);
        let first = state.execute(Height(1), &segment(vec![short, order.clone()]));
        assert!(first.refusals[0]
            .as_deref()
            .is_some_and(|r| r.contains("approv")));
        assert!(first.moved.is_none() && first.retry == [1]);
        let record = execution.moved.expect("moved");
        assert_eq!(record.final_root, B256::repeat_byte(4));
        assert_eq!(execution.roots.moves, record.fold(B256::ZERO));
        assert_eq!(
            execution.commitment.state_root,
            execution.roots.state_root()
        );
        // Rewards withdrawn to the chain and not yet paid: the move waits.
        let mut owed = region(true);
        owed.pop.credits = Arc::new(BTreeMap::from([(chain, Vec::new())]));
        let refusal = owed
            .execute(Height(1), &segment(vec![order.clone()]))
            .refusals;
        assert!(
            refusal[0]
                .as_deref()
                .is_some_and(|r| r.contains("not paid yet")),
            "{refusal:?}"
        );
        // A node that cannot read the state cannot execute the block at all (no refusal that
        // other nodes would not make).
        let unreadable = region(false).execute(Height(1), &segment(vec![order.clone()]));
        assert!(unreadable
            .state_error
            .is_some_and(|e| e.contains("the disk is gone")));
        // Replaying with moves refused gives the other outcome, for the caller to compare.
        let refused = state.execute_refusing_moves(Height(1), &segment(vec![order]));
        assert!(refused.moved.is_none());
        assert_ne!(refused.commitment, execution.commitment);
    }

    fn refused_for(execution: &RegionExecution, i: usize, reason: &str) {
        let refusal = execution.refusals[i].as_deref().unwrap_or_default();
        assert!(refusal.contains(reason), "tx {i}: {:?}", execution.refusals);
    }

    #[test]
    fn an_adoption_in_chunks_takes_each_chunk_once_and_registers_the_chain_with_the_last() {
        use crate::chain::migration::tests::{adoption_for, adoption_of, state_of};
        use crate::chain::migration::ADOPTION_PATIENCE;
        let mut state = directory_region();
        // 25 000 accounts: 18 chunks, more than one block takes.
        let whole = state_of(25_000);
        let (adoption, _, rest) = adoption_of(&whole);
        assert_eq!(rest.len() + 1, 18);
        let chain = adoption.record.chain;
        let chunk = |i: usize, snapshot: &ChainSnapshot| {
            AdoptionChunk {
                region: HERE,
                chain,
                index: i as u32,
                snapshot: snapshot.clone(),
            }
            .to_system_tx()
        };
        let mut forged = rest[2].clone();
        forged.accounts[0].balance += alloy_primitives::U256::from(1);
        let mut txs = vec![
            chunk(1, &rest[0]),
            adoption.to_system_tx(),
            chunk(2, &rest[1]),
            chunk(2, &rest[1]),
            chunk(3, &forged),
        ];
        txs.extend((3..=17).map(|i| chunk(i, &rest[i - 1])));
        txs.push(chunk(1, &rest[0]));
        let first = state.execute(Height(1), &segment(txs));
        // Before its adoption, a chunk waits queued; a chunk already in, or another than the
        // recorded one, is refused; past 16 chunks hashed in a block (the forged one counts),
        // the others wait.
        refused_for(&first, 0, "no adoption of chain");
        assert_eq!(first.refusals[1], None);
        refused_for(&first, 3, "already in");
        refused_for(&first, 4, "does not hash to the record");
        refused_for(&first, 19, "this block takes 16 chunks");
        refused_for(&first, 20, "this block takes 16 chunks");
        assert_eq!(first.retry, [0, 19, 20]);
        assert_eq!((first.opened.len(), first.chunks.len()), (1, 15));
        assert!(first.registered.is_empty());
        let header = |h| Header {
            segments: Vec::new(),
            ..sealed(&cn_keys("here"), h, 3, &[]).header
        };
        state.apply(&first, &Committed::of(&header(1)));
        assert!(!state.serves(chain) && state.adopting.contains_key(&chain));
        // The same adoption again is refused while it is open; the last chunks complete it.
        let second = state.execute(
            Height(2),
            &segment(vec![
                adoption.to_system_tx(),
                chunk(1, &rest[0]),
                chunk(17, &rest[16]),
            ]),
        );
        refused_for(&second, 0, "already held");
        assert_eq!(second.refusals[1..], [None, None]);
        let registered = &second.registered[0];
        assert_eq!(registered.chain_id, chain);
        assert_eq!(
            registered.adopted.as_ref().map(|(_, s)| s),
            Some(&whole),
            "the whole state, merged in order"
        );
        state.apply(&second, &Committed::of(&header(2)));
        assert!(state.serves(chain) && state.adopting.is_empty());
        assert_eq!(state.numbering.number(chain, 2), Some(5));
        // At most four adoptions are open at once: a fifth waits queued.
        let mut full = directory_region();
        for c in 2..6 {
            let (open, _, _) = adoption_for(&whole, ChainId(OTHER.0 + c));
            full.adopting
                .insert(open.record.chain, Adopting::open(open, Height(1)));
        }
        let fifth = full.execute(Height(1), &segment(vec![adoption.to_system_tx()]));
        refused_for(&fifth, 0, "4 adoptions are open here");
        assert_eq!(fifth.retry, [0]);
        // One whose chunks stopped coming is closed, its place freed.
        let header_at = |h: u64| Header {
            segments: Vec::new(),
            ..sealed(&cn_keys("here"), h, 3, &[]).header
        };
        let idle = full.execute(Height(2), &segment(Vec::new()));
        full.apply(&idle, &Committed::of(&header_at(ADOPTION_PATIENCE)));
        assert_eq!(full.adopting.len(), 4);
        full.apply(&idle, &Committed::of(&header_at(1 + ADOPTION_PATIENCE)));
        assert!(full.adopting.is_empty());
    }

    const THIRD: ChainId = ChainId(2_001_000);

    fn set_of(keys: &[SecretKey]) -> Arc<CnSet> {
        Arc::new(CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap())
    }

    /// Region `region`'s entry, genesis set `keys`.
    fn entry_of(region: ChainId, keys: &[SecretKey]) -> RegionEntry {
        RegionEntry {
            region,
            ..entry(keys)
        }
    }

    /// Region `region`'s header at `height` whose segment 0 commits to `roots`, sealed by
    /// `keys`.
    fn committing(
        keys: &[SecretKey],
        region: ChainId,
        height: u64,
        roots: RegionRoots,
    ) -> SealedHeader {
        let mut header = sealed(keys, height, 4, &[]).header;
        header.region = region;
        header.segments = vec![SegmentCommitment {
            chain_id: region,
            tx_count: 0,
            tx_root: B256::ZERO,
            receipts_root: B256::ZERO,
            state_root: roots.state_root(),
        }];
        reseal(keys, header)
    }

    /// A checkpoint of directory region OTHER at `height` carrying `directory`'s listing.
    fn listing(keys: &[SecretKey], height: u64, directory: &RegionState) -> RegionCheckpoint {
        let roots = directory.roots();
        RegionCheckpoint {
            listing: Some(listed_view(directory)),
            ..checkpoint(keys, committing(keys, OTHER, height, roots))
        }
    }

    /// `state`'s view of the platform as a listing.
    fn listed_view(state: &RegionState) -> Listing {
        Listing::of(state.roots(), &state.directory, state.region_heads.values())
    }

    /// A committed container at `height` for [`RegionState::apply`].
    fn container(height: u64) -> Header {
        Header {
            segments: Vec::new(),
            ..sealed(&cn_keys("here"), height, 3, &[]).header
        }
    }

    fn refusal(state: &RegionState, height: u64, tx: alloy_primitives::Bytes) -> String {
        let execution = state.execute(Height(height), &segment(vec![tx]));
        assert!(execution.directory.is_none());
        execution.refusals[0].clone().unwrap_or_default()
    }

    #[test]
    fn a_region_copies_its_directory_regions_listing_and_then_checkpoints_every_region_listed() {
        let (own, dir_keys, third_keys) = (cn_keys("here"), cn_keys("other"), cn_keys("third"));
        // Directory region OTHER lists this region and THIRD.
        let mut platform = RegionState::new(OTHER, set_of(&dir_keys), 16);
        platform.directory.insert(entry_of(HERE, &own));
        platform.directory.insert(entry_of(THIRD, &third_keys));
        assert_ne!(platform.roots().directory, B256::ZERO);
        // This region's genesis names OTHER as the directory region.
        let mut state = RegionState::new(HERE, set_of(&own), 16)
            .with_directory_anchor(Some(entry_of(OTHER, &dir_keys)));
        let third_at = |height| {
            checkpoint(
                &third_keys,
                committing(&third_keys, THIRD, height, platform.roots()),
            )
        };
        assert!(refusal(&state, 1, third_at(3).to_system_tx()).contains("not in this directory"));

        let listed = listing(&dir_keys, 5, &platform);
        assert_eq!(
            RegionCheckpoint::from_system_tx(&listed.to_system_tx()).unwrap(),
            listed
        );
        // An entry added after sealing, or roots other than the header's: not proven.
        let mut added = listed.clone();
        let extra = entry_of(ChainId(3_001_000), &cn_keys("forger"));
        added.listing.as_mut().unwrap().entries.push(extra);
        let mut other_roots = listed.clone();
        other_roots.listing.as_mut().unwrap().roots.directory = B256::repeat_byte(3);
        // A directory that holds together, but of a state other than the header's.
        let mut bigger = platform.clone();
        bigger
            .directory
            .insert(entry_of(ChainId(3_001_000), &cn_keys("forger")));
        let other_state = RegionCheckpoint {
            listing: Some(listed_view(&bigger)),
            ..listed.clone()
        };
        for forged in [added, other_roots, other_state] {
            let reason = refusal(&state, 1, forged.to_system_tx());
            assert!(
                reason.contains("not the one the header's segment 0"),
                "{reason}"
            );
        }

        let execution = state.execute(Height(1), &segment(vec![listed.to_system_tx()]));
        assert_eq!(execution.refusals, [None]);
        assert_eq!(execution.directory.as_ref(), Some(&platform.directory));
        // Its view: the copied directory and its own head of the directory region.
        let view = platform_root(&platform.directory, execution.region_heads.iter());
        assert_eq!(execution.roots.directory, view);
        let root_before = state.root();
        let header = Header {
            segments: Vec::new(),
            ..sealed(&own, 1, 3, &[]).header
        };
        state.apply(&execution, &Committed::of(&header));
        assert_eq!(state.directory, platform.directory);
        assert_ne!(state.root(), root_before, "the state root commits to it");

        // THIRD is checkpointed here now, from its genesis set on.
        let accepted = state.execute(Height(2), &segment(vec![third_at(3).to_system_tx()]));
        assert_eq!(accepted.refusals, [None]);
        assert_eq!(accepted.region_heads[0].region, THIRD);
        // Only the directory region's checkpoints carry a listing (this one's header commits
        // to it).
        let carrying = RegionCheckpoint {
            listing: listed.listing.clone(),
            ..third_at(3)
        };
        let reason = refusal(&state, 2, carrying.to_system_tx());
        assert!(reason.contains("only the directory region's"), "{reason}");
        // A later listing that drops a region this one lists, though its header commits to it.
        let mut shrunk = RegionState::new(OTHER, set_of(&dir_keys), 16);
        shrunk.directory.insert(entry_of(THIRD, &third_keys));
        let reason = refusal(&state, 2, listing(&dir_keys, 6, &shrunk).to_system_tx());
        assert!(reason.contains("drops or changes region 1000"), "{reason}");
        // Regions are created in the directory region only.
        let approvers: Vec<_> = own
            .iter()
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        let creation = approve_creation(
            HERE,
            &state.set,
            entry_of(ChainId(4_001_000), &cn_keys("fourth")),
            &approvers,
        )
        .unwrap();
        let reason = refusal(&state, 2, creation.to_system_tx());
        assert!(reason.contains("not the directory region"), "{reason}");
    }

    #[test]
    fn a_copy_takes_the_directory_regions_trust_in_each_set_and_may_come_with_the_last_header() {
        let (own, dir_keys) = (cn_keys("here"), cn_keys("other"));
        let (third_keys, rotated) = (cn_keys("third"), cn_keys("third-later"));
        // The directory region followed THIRD through a change to the `rotated` set.
        let mut platform = RegionState::new(OTHER, set_of(&dir_keys), 16);
        platform.directory.insert(entry_of(HERE, &own));
        platform.directory.insert(entry_of(THIRD, &third_keys));
        let followed = RegionHead {
            region: THIRD,
            height: Height(40),
            hash: BlockHash(B256::repeat_byte(4)),
            set_root: set_of(&rotated).root(),
        };
        platform.region_heads.insert(THIRD, followed);
        let mut state = RegionState::new(HERE, set_of(&own), 16)
            .with_directory_anchor(Some(entry_of(OTHER, &dir_keys)));
        // An earlier copy listed THIRD already: trusted from its genesis set so far.
        state.directory = platform.directory.clone();
        // The directory region's header recorded first without the listing (anyone relays)...
        let bare = checkpoint(&dir_keys, committing(&dir_keys, OTHER, 5, platform.roots()));
        let first = state.execute(Height(1), &segment(vec![bare.to_system_tx()]));
        assert_eq!(first.refusals, [None]);
        state.apply(&first, &Committed::of(&container(1)));
        // ...then the same header again with it: the copy is taken, the head stays.
        let again = RegionCheckpoint {
            listing: Some(listed_view(&platform)),
            ..bare.clone()
        };
        // Not with a head edited on the way (a relay trusting its own set for THIRD).
        let mut edited_head = again.clone();
        edited_head.listing.as_mut().unwrap().heads[0].set_root = set_of(&own).root();
        let reason = refusal(&state, 2, edited_head.to_system_tx());
        assert!(reason.contains("not the one the header's"), "{reason}");
        // Nor with other bytes beside the header: another set carried, a seal short of quorum.
        let mut swapped = again.clone();
        swapped.cn_set.reverse();
        let reason = refusal(&state, 2, swapped.to_system_tx());
        assert!(reason.contains("is not the header's"), "{reason}");
        let mut unsealed = again.clone();
        unsealed.sealed.seal.signers =
            crate::types::SignerBitmap(alloy_primitives::Bytes::from_static(&[0b0011]));
        let reason = refusal(&state, 2, unsealed.to_system_tx());
        assert!(reason.contains("commit certificate"), "{reason}");
        // THIRD's genesis set (retired there) sealing a header beside it: checked against the
        // trust the listing brought when it comes after it, and the listing refused when it
        // comes second (it must come first, or that checkpoint would pass on the old trust).
        let third = |keys: &[SecretKey], height| {
            checkpoint(
                keys,
                committing(keys, THIRD, height, RegionRoots::default()),
            )
        };
        let retired = third(&third_keys, 50).to_system_tx();
        let second = state.execute(
            Height(2),
            &segment(vec![retired.clone(), again.to_system_tx()]),
        );
        assert!(second.refusals[1]
            .as_deref()
            .is_some_and(|r| r.contains("must be the first")));
        let execution = state.execute(Height(2), &segment(vec![again.to_system_tx(), retired]));
        assert_eq!(execution.refusals[0], None);
        let reason = execution.refusals[1].clone().unwrap_or_default();
        assert!(reason.contains("trusts"), "{reason}");
        assert_eq!(execution.directory.as_ref(), Some(&platform.directory));
        assert_eq!(execution.region_heads, [followed]);
        state.apply(&execution, &Committed::of(&container(2)));
        assert_eq!(state.region_heads[&OTHER], first.region_heads[0]);
        assert_eq!(state.region_heads[&THIRD], followed);
        // Once more, it brings nothing: refused, so it cannot fill blocks.
        let reason = refusal(&state, 3, again.to_system_tx());
        assert!(reason.contains("changes nothing"), "{reason}");
        // Another header at the recorded height is not "the same again".
        let mut edited = again.clone();
        edited.sealed.header.timestamp_ms += 1;
        let reason = refusal(&state, 3, edited.to_system_tx());
        assert!(reason.contains("not above"), "{reason}");
        // THIRD's set is trusted as far as the directory region followed it: its genesis set
        // no longer seals, the rotated one does above the copied head.
        let reason = refusal(&state, 3, third(&third_keys, 41).to_system_tx());
        assert!(reason.contains("trusts"), "{reason}");
        let reason = refusal(&state, 3, third(&rotated, 40).to_system_tx());
        assert!(reason.contains("not above"), "{reason}");
        let accepted = state.execute(
            Height(3),
            &segment(vec![third(&rotated, 41).to_system_tx()]),
        );
        assert_eq!(accepted.refusals, [None]);
    }

    #[test]
    fn a_full_directory_takes_no_more_regions() {
        let own = cn_keys("here");
        let mut state = RegionState::new(HERE, set_of(&own), 16);
        let span = crate::chain::directory::REGION_ID_SPAN;
        for i in 1..=crate::chain::directory::MAX_REGIONS as u64 {
            state
                .directory
                .insert(entry_of(ChainId(HERE.0 + i * span), &own));
        }
        let approvers: Vec<_> = own
            .iter()
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        let next = ChainId(HERE.0 + 1000 * span);
        let creation =
            approve_creation(HERE, &state.set, entry_of(next, &own), &approvers).unwrap();
        let reason = refusal(&state, 1, creation.to_system_tx());
        assert!(reason.contains("directory is full"), "{reason}");
    }

    #[test]
    fn one_checkpoint_per_region_and_block_rising_and_committed_by_the_governance_root() {
        let keys = cn_keys("other");
        let mut state = directory_region();
        let at = |h| checkpoint(&keys, sealed(&keys, h, 3, &[])).to_system_tx();
        // Only the first of a region in one segment is looked at, valid or not.
        let execution = state.execute(Height(1), &segment(vec![at(5), at(4), at(6)]));
        let refused: Vec<bool> = execution.refusals.iter().map(Option::is_some).collect();
        assert_eq!(refused, [false, true, true], "{:?}", execution.refusals);
        assert!(execution.refusals[2]
            .as_deref()
            .is_some_and(|r| r.contains("already has a checkpoint in this block")));
        assert_ne!(execution.governance_root, state.governance_root);
        let root_before = state.root();
        let header = Header {
            segments: Vec::new(),
            ..sealed(&keys, 1, 3, &[]).header
        };
        state.apply(&execution, &Committed::of(&header));
        assert_eq!(state.region_heads[&OTHER].height, Height(5));
        assert_ne!(
            state.root(),
            root_before,
            "the state root commits to the checkpoints"
        );
        // In a later block: not above the recorded head refused, above it recorded.
        let later = state.execute(Height(2), &segment(vec![at(5)]));
        assert!(later.refusals[0]
            .as_deref()
            .is_some_and(|r| r.contains("not above")));
        let later = state.execute(Height(2), &segment(vec![at(6)]));
        assert_eq!(later.refusals, [None]);
        assert_eq!(later.region_heads[0].height, Height(6));
    }

    #[test]
    fn a_region_checkpoints_the_directory_region_its_genesis_names_and_no_other() {
        let keys = cn_keys("other");
        let own = cn_keys("here");
        let set = CnSet::new(own.iter().map(SecretKey::public_key).collect()).unwrap();
        let tx = checkpoint(&keys, sealed(&keys, 5, 3, &[])).to_system_tx();
        let unnamed = RegionState::new(HERE, Arc::new(set), 16);
        let refused = unnamed.execute(Height(1), &segment(vec![tx.clone()]));
        assert!(refused.refusals[0]
            .as_deref()
            .is_some_and(|r| r.contains("not in this directory")));
        let named = unnamed.with_directory_anchor(Some(entry(&keys)));
        let accepted = named.execute(Height(1), &segment(vec![tx]));
        assert_eq!(accepted.refusals, [None]);
        assert_eq!(accepted.region_heads[0].region, OTHER);
    }

    #[test]
    fn trusting_seals_accepts_a_forged_seal_and_so_commits_otherwise_than_verifying() {
        let keys = cn_keys("other");
        let state = directory_region();
        let mut forged = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        forged.sealed.header.timestamp_ms += 1;
        let segment = segment(vec![forged.to_system_tx()]);
        let verified = state.execute(Height(1), &segment);
        let trusted = state.execute_trusting_seals(Height(1), &segment);
        assert!(verified.refusals[0].is_some());
        assert_eq!(trusted.refusals, [None]);
        // What replay compares: the receipts root (and state root) tell the two apart.
        assert_ne!(
            verified.commitment.receipts_root,
            trusted.commitment.receipts_root
        );
        assert_ne!(verified.commitment, trusted.commitment);
        // A sound seal: both agree, so replay can skip the pairing.
        let sound = segment_of(checkpoint(&keys, sealed(&keys, 5, 3, &[])).to_system_tx());
        assert_eq!(
            state.execute(Height(1), &sound).commitment,
            state.execute_trusting_seals(Height(1), &sound).commitment
        );
    }

    fn segment_of(tx: alloy_primitives::Bytes) -> Segment {
        segment(vec![tx])
    }

    #[test]
    fn a_segment_looks_at_a_bounded_number_of_checkpoints() {
        let mut state = directory_region();
        // One more listed region than a segment looks at, each with a valid checkpoint.
        let regions = MAX_REGION_CHECKPOINTS_PER_CONTAINER + 1;
        let txs: Vec<_> = (0..regions as u64)
            .map(|k| {
                let keys = cn_keys(&format!("region-{k}"));
                let mut listed = entry(&keys);
                listed.region = ChainId(OTHER.0 + k * super::super::directory::REGION_ID_SPAN);
                state.directory.insert(listed.clone());
                let header = Header {
                    region: listed.region,
                    ..sealed(&keys, 5, 3, &[]).header
                };
                checkpoint(&keys, reseal(&keys, header)).to_system_tx()
            })
            .collect();
        let execution = state.execute(Height(1), &segment(txs));
        let accepted = execution.refusals.iter().filter(|r| r.is_none()).count();
        assert_eq!(accepted, MAX_REGION_CHECKPOINTS_PER_CONTAINER);
        assert!(execution.refusals[regions - 1]
            .as_deref()
            .is_some_and(|r| r.contains("per block")));
    }
}
