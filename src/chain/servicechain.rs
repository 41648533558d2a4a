//! Servicechains on the regionchain: registration, the registry, and checkpoints.
//!
//! A servicechain is registered by a regionchain system transaction ([`Registration`]) that
//! names its chain id, its owner and its genesis allocations, signed by the owner's Ethereum
//! key. The registry holds one small entry per chain, so 100 000 registered chains cost a few
//! megabytes and nothing per block while idle.
//!
//! Every `checkpoint_interval` containers, segment 0 records a [`Checkpoint`]: for every
//! servicechain that had a segment since the previous checkpoint, `(chain id, height of its
//! latest segment, segment hash)`. Checkpoints form a hash chain, and the regionchain's state
//! root commits to its head, so a [`CheckpointProof`] shows against one certified header that a
//! servicechain block hash was anchored.

use super::directory::{in_span, REGION_ID_SPAN};
use crate::crypto::hash::{
    keccak256, merkle_proof, merkle_root, merkle_root_from_path, sha256_concat,
};
use crate::crypto::tx::{AccountSigned, Signable};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{BlockHash, ChainId, Height};
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use thiserror::Error;

/// Most genesis allocations one registration may carry.
pub const MAX_ALLOCATIONS: usize = 1024;
/// Largest servicechain id: JavaScript clients (ethers, web3.js) hold chain ids as doubles,
/// and EIP-155's `v = 2·id + 35` must stay exact there.
pub const MAX_CHAIN_ID: u64 = (1 << 52) - 1;
/// Default containers between checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 16;
/// Checkpoints kept in memory for proofs (older ones are still committed, not servable).
pub const RECENT_CHECKPOINTS: usize = 1024;

const REGISTRATION_DOMAIN: &[u8] = b"KAON/register-servicechain/v1";
const SEGMENT_DOMAIN: &[u8] = b"KAON/segment/v1";
const CHECKPOINT_DOMAIN: &[u8] = b"KAON/checkpoint/v1";
const REGISTRY_DOMAIN: &[u8] = b"KAON/registry/v1";

/// The hash that names servicechain `chain`'s block inside container `container`: what
/// checkpoints record and what the chain's JSON-RPC reports as its block hash.
pub fn segment_hash(container: &BlockHash, chain: ChainId) -> B256 {
    sha256_concat(&[
        SEGMENT_DOMAIN,
        container.0.as_slice(),
        &chain.0.to_be_bytes(),
    ])
}

/// One initial balance of a new servicechain.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable, Serialize)]
pub struct GenesisAlloc {
    pub address: Address,
    pub balance: U256,
}

/// What a registration asks for.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct ServicechainSpec {
    /// The regionchain the servicechain joins (a registration cannot be replayed elsewhere).
    pub region: ChainId,
    pub chain_id: ChainId,
    pub owner: Address,
    pub alloc: Vec<GenesisAlloc>,
}

/// A servicechain registration signed by its owner.
pub type Registration = AccountSigned<ServicechainSpec>;

/// Why a registration was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error(transparent)]
    Framing(#[from] SystemTxError),
    #[error("registration is for region {got}, this is {expected}")]
    WrongRegion { got: ChainId, expected: ChainId },
    #[error("chain id {0} is not one of this region's servicechain ids (after the region's own, fewer than {REGION_ID_SPAN} apart, at most {MAX_CHAIN_ID})")]
    BadChainId(ChainId),
    #[error("chain id {0} is already registered")]
    AlreadyRegistered(ChainId),
    #[error("{0} allocations exceed the limit of {MAX_ALLOCATIONS}")]
    TooManyAllocations(usize),
    #[error("signature is not the owner's")]
    NotOwner,
}

impl Signable for ServicechainSpec {
    /// The digest the owner signs.
    fn digest(&self) -> B256 {
        keccak256([REGISTRATION_DOMAIN, &canonical(self)].concat())
    }
}

impl Registration {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::RegisterServicechain, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, RegistryError> {
        Ok(system::decode(raw, SystemKind::RegisterServicechain)?)
    }

    /// Checks everything that does not depend on the registry: region, id range, limits, and
    /// the owner's signature.
    pub fn verify(&self, region: ChainId) -> Result<(), RegistryError> {
        let spec = &self.spec;
        if spec.region != region {
            return Err(RegistryError::WrongRegion {
                got: spec.region,
                expected: region,
            });
        }
        // A region's servicechains take ids after its own, within its span, so that ids stay
        // unique across regions without one region reading another's registry.
        if spec.chain_id.0 > MAX_CHAIN_ID
            || spec.chain_id == region
            || !in_span(region, spec.chain_id)
        {
            return Err(RegistryError::BadChainId(spec.chain_id));
        }
        if spec.alloc.len() > MAX_ALLOCATIONS {
            return Err(RegistryError::TooManyAllocations(spec.alloc.len()));
        }
        if self.is_signed_by(spec.owner) {
            Ok(())
        } else {
            Err(RegistryError::NotOwner)
        }
    }
}

/// What the registry keeps per servicechain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainEntry {
    pub owner: Address,
    /// Height of the container that registered it (0 for genesis chains).
    pub registered_at: Height,
}

/// Every registered servicechain of a region, with a running commitment to registrations.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    chains: HashMap<ChainId, ChainEntry>,
    root: B256,
}

impl Registry {
    pub fn get(&self, chain: ChainId) -> Option<&ChainEntry> {
        self.chains.get(&chain)
    }

    pub fn contains(&self, chain: ChainId) -> bool {
        self.chains.contains_key(&chain)
    }

    pub fn len(&self) -> usize {
        self.chains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Commitment to every registration in order.
    pub fn root(&self) -> B256 {
        self.root
    }

    /// Registered chains in id order.
    pub fn list(&self) -> Vec<(ChainId, ChainEntry)> {
        let mut all: Vec<_> = self.chains.iter().map(|(c, e)| (*c, *e)).collect();
        all.sort_unstable_by_key(|(c, _)| *c);
        all
    }

    /// Adds a chain (genesis, or a verified registration at commit) and folds it into the root.
    pub fn insert(&mut self, chain: ChainId, entry: ChainEntry) {
        self.root = Self::fold(self.root, chain, &entry);
        self.chains.insert(chain, entry);
    }

    /// The root after registering `chain` on top of `root`.
    pub fn fold(root: B256, chain: ChainId, entry: &ChainEntry) -> B256 {
        sha256_concat(&[
            REGISTRY_DOMAIN,
            root.as_slice(),
            &chain.0.to_be_bytes(),
            entry.owner.as_slice(),
            &entry.registered_at.0.to_be_bytes(),
        ])
    }
}

/// One servicechain's line in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable, Serialize)]
pub struct CheckpointEntry {
    pub chain_id: ChainId,
    /// Container height of the chain's latest segment before the checkpoint.
    pub height: Height,
    /// [`segment_hash`] of that segment.
    pub segment_hash: B256,
}

impl CheckpointEntry {
    fn leaf(&self) -> B256 {
        sha256_concat(&[CHECKPOINT_DOMAIN, &canonical(self)])
    }
}

/// The checkpoint recorded by the container at `height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub height: Height,
    /// Entries in chain-id order.
    pub entries: Vec<CheckpointEntry>,
    /// Merkle root over the entries.
    pub root: B256,
    /// Head of the checkpoint chain before this checkpoint.
    pub previous: B256,
}

impl Checkpoint {
    fn new(height: Height, entries: Vec<CheckpointEntry>, previous: B256) -> Self {
        let leaves: Vec<B256> = entries.iter().map(CheckpointEntry::leaf).collect();
        Self {
            height,
            root: merkle_root(&leaves),
            entries,
            previous,
        }
    }

    /// Head of the checkpoint chain after this checkpoint.
    pub fn chain_head(&self) -> B256 {
        chain_checkpoint(self.previous, self.height, self.root)
    }
}

fn chain_checkpoint(previous: B256, height: Height, root: B256) -> B256 {
    sha256_concat(&[
        CHECKPOINT_DOMAIN,
        previous.as_slice(),
        &height.0.to_be_bytes(),
        root.as_slice(),
    ])
}

/// The parts of the regionchain's state, each a running commitment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, RlpEncodable, RlpDecodable)]
#[serde(rename_all = "camelCase")]
pub struct RegionRoots {
    pub governance: B256,
    pub registry: B256,
    pub checkpoints: B256,
    pub pop: B256,
    /// Servicechains moved to other regions ([`super::migration::MoveRecord::fold`]); zero
    /// until the first, and then only part of the state root.
    pub moves: B256,
    /// The regions the regionchain lists ([`super::directory::Directory::root`]); zero while
    /// it lists none, and then only part of the state root.
    pub directory: B256,
}

impl RegionRoots {
    /// The regionchain's state root: one hash over its parts, so a proof about one part
    /// carries the others as opaque hashes.
    pub fn state_root(&self) -> B256 {
        let parts = [
            self.governance.as_slice(),
            self.registry.as_slice(),
            self.checkpoints.as_slice(),
            self.pop.as_slice(),
            self.moves.as_slice(),
            self.directory.as_slice(),
        ];
        // A regionchain that never moved a chain and lists no region hashes as it did before
        // moves and directories existed; the part count tells the three layouts apart.
        let count = match (self.moves == B256::ZERO, self.directory == B256::ZERO) {
            (true, true) => 4,
            (false, true) => 5,
            (_, false) => 6,
        };
        sha256_concat(&parts[..count])
    }
}

/// Proof that `entry` was checkpointed: verifiable against segment 0's `state_root` in the
/// certified header at `checkpoint_height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointProof {
    pub entry: CheckpointEntry,
    pub checkpoint_height: Height,
    pub index: u32,
    pub leaf_count: u32,
    pub path: Vec<B256>,
    pub previous_checkpoint_head: B256,
    /// The regionchain roots after the checkpoint's container (`checkpoints` is recomputed).
    pub roots: RegionRoots,
}

impl CheckpointProof {
    /// The regionchain state root this proof implies; compare it with the header's.
    pub fn implied_state_root(&self) -> Option<B256> {
        let root = merkle_root_from_path(
            self.entry.leaf(),
            self.index as usize,
            self.leaf_count as usize,
            &self.path,
        )?;
        let checkpoints =
            chain_checkpoint(self.previous_checkpoint_head, self.checkpoint_height, root);
        Some(
            RegionRoots {
                checkpoints,
                ..self.roots
            }
            .state_root(),
        )
    }

    /// Whether the proof holds against segment 0's state root at the checkpoint's height.
    pub fn verify(&self, region_state_root_at_checkpoint: B256) -> bool {
        self.implied_state_root() == Some(region_state_root_at_checkpoint)
    }
}

/// A committed checkpoint with the regionchain roots after its container.
#[derive(Debug, Clone)]
struct Anchored {
    checkpoint: Checkpoint,
    roots: RegionRoots,
}

/// Checkpoint bookkeeping: which chains moved since the last checkpoint, the chain head, and
/// recent checkpoints for proofs.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub interval: u64,
    /// Latest segment per servicechain since the last checkpoint.
    dirty: BTreeMap<ChainId, (Height, B256)>,
    head: B256,
    recent: VecDeque<Anchored>,
    by_segment: HashMap<B256, Height>,
}

impl Checkpoints {
    pub fn new(interval: u64) -> Self {
        Self {
            interval: interval.max(1),
            dirty: BTreeMap::new(),
            head: B256::ZERO,
            recent: VecDeque::new(),
            by_segment: HashMap::new(),
        }
    }

    /// Head of the checkpoint chain.
    pub fn head(&self) -> B256 {
        self.head
    }

    /// The checkpoint the container at `height` records, if any (not yet applied).
    pub fn due(&self, height: Height) -> Option<Checkpoint> {
        if !height.0.is_multiple_of(self.interval) || self.dirty.is_empty() {
            return None;
        }
        let entries = self
            .dirty
            .iter()
            .map(|(chain, (h, hash))| CheckpointEntry {
                chain_id: *chain,
                height: *h,
                segment_hash: *hash,
            })
            .collect();
        Some(Checkpoint::new(height, entries, self.head))
    }

    /// Records a committed checkpoint with the regionchain roots after its container.
    pub fn commit(&mut self, checkpoint: Checkpoint, roots: RegionRoots) {
        self.head = checkpoint.chain_head();
        self.dirty.clear();
        for entry in &checkpoint.entries {
            self.by_segment
                .insert(entry.segment_hash, checkpoint.height);
        }
        self.recent.push_back(Anchored { checkpoint, roots });
        if self.recent.len() > RECENT_CHECKPOINTS {
            if let Some(old) = self.recent.pop_front() {
                for entry in &old.checkpoint.entries {
                    self.by_segment.remove(&entry.segment_hash);
                }
            }
        }
    }

    /// Notes the servicechain segments of a committed container.
    pub fn record_segments(&mut self, height: Height, container: &BlockHash, chains: &[ChainId]) {
        for chain in chains {
            self.dirty
                .insert(*chain, (height, segment_hash(container, *chain)));
        }
    }

    /// Recent checkpoints, newest last.
    pub fn recent(&self) -> impl Iterator<Item = &Checkpoint> {
        self.recent.iter().map(|a| &a.checkpoint)
    }

    /// Proof that servicechain block `segment_hash` was the latest of its chain at a
    /// checkpoint still held in memory.
    pub fn prove(&self, segment_hash: &B256) -> Option<CheckpointProof> {
        let height = self.by_segment.get(segment_hash)?;
        let anchored = self
            .recent
            .iter()
            .find(|a| a.checkpoint.height == *height)?;
        let checkpoint = &anchored.checkpoint;
        let index = checkpoint
            .entries
            .iter()
            .position(|e| e.segment_hash == *segment_hash)?;
        let leaves: Vec<B256> = checkpoint
            .entries
            .iter()
            .map(CheckpointEntry::leaf)
            .collect();
        Some(CheckpointProof {
            entry: checkpoint.entries[index],
            checkpoint_height: checkpoint.height,
            index: index as u32,
            leaf_count: leaves.len() as u32,
            path: merkle_proof(&leaves, index)?,
            previous_checkpoint_head: checkpoint.previous,
            roots: anchored.roots,
        })
    }
}
