//! Moving a servicechain from one region to another (`docs/regions.md`, "Migration").
//!
//! ```text
//! source region                                   target region
//! MoveOrder (quorum of its CNs) ─► segment 0 at F:
//!   the chain is frozen (no segment from F on),
//!   its state is taken whole: ChainSnapshot,
//!   MoveRecord {final root, snapshot root} folded
//!   into the `moves` root of F's state root
//!                     sealed header F + roots + record + chunk roots + chunk 0
//!                     ─────────────── Adoption ───────────────► segment 0: checked against the
//!                                                                source's trusted CN set
//!                     chunk 1, 2, … of the state
//!                     ───────────── AdoptionChunk ────────────► each checked against its root;
//!                                                                with the last one in, the
//!                                                                chain starts from the state
//! ```
//!
//! The target trusts nothing it is sent: the header's seal is checked against the CN set it
//! trusts for the source (the one its checkpoints of the source follow), the record against
//! the `moves` part of that header's segment-0 state root, the chunk roots against the
//! record's snapshot root, and each chunk against its root. The chain's commitment goes on from where it was frozen.

use super::directory::in_span;
use super::region_checkpoint::{verify_seal, RegionCheckpointError};
use super::servicechain::RegionRoots;
use crate::consensus::governance::{check_approval, sign_approval, GovernanceError};
use crate::consensus::selection::{set_root, CnSet};
use crate::crypto::bls::{PublicKeyBytes, SecretKey, SignatureBytes};
use crate::crypto::hash::sha256_concat;
use crate::exec::{chunked_root, ChainSnapshot, SnapshotError, StateError, MAX_CHUNKS};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{ChainId, CnIndex, Height, SealedHeader, SignerBitmap};
use alloy_primitives::{Address, Bytes, B256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use serde::Serialize;
use thiserror::Error;

const MOVE_DOMAIN: &[u8] = b"KAON/move-servicechain/v1";

/// Servicechain segments a block that freezes a chain may carry: its sealed header travels in
/// the adoption, which must fit one system transaction beside the chain's state.
pub const MAX_SEGMENTS_BESIDE_A_MOVE: usize = 256;
const MOVE_RECORD_DOMAIN: &[u8] = b"KAON/moved/v1";
/// Adoptions a region holds open at once while their states arrive (each up to
/// [`crate::exec::MAX_SNAPSHOT_BYTES`] in memory until its last chunk is in).
pub const MAX_OPEN_ADOPTIONS: usize = 4;
/// Chunks of adopted states one block looks at, taken or not (2 MiB of state): each is
/// hashed, no signature.
pub const MAX_CHUNKS_PER_BLOCK: usize = 16;
/// Blocks an open adoption waits for its next chunk before it is closed, its place freed
/// (the adoption can be sent again: the source keeps serving it).
pub const ADOPTION_PATIENCE: u64 = 4096;

/// The source region's order to move one of its servicechains to another region.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct MoveOrder {
    /// The region that holds the chain now (so the order is not replayed elsewhere).
    pub region: ChainId,
    pub chain: ChainId,
    pub target: ChainId,
    /// Approvers among the region's current CN set (bit i = CN i).
    pub approvers: SignerBitmap,
    pub approval: SignatureBytes,
}

/// What the source region commits when it freezes a chain, and the target checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveRecord {
    pub chain: ChainId,
    pub source: ChainId,
    pub target: ChainId,
    /// The container whose segment 0 froze the chain: it and every later one carry no
    /// segment of it.
    pub height: Height,
    pub owner: Address,
    /// The chain's state commitment when frozen.
    pub final_root: B256,
    /// [`chunked_root`] of its state then, cut into chunks ([`ChainSnapshot::chunks`]).
    pub snapshot_root: B256,
}

impl MoveRecord {
    /// The `moves` root after recording `self` on top of `previous`.
    pub fn fold(&self, previous: B256) -> B256 {
        sha256_concat(&[MOVE_RECORD_DOMAIN, previous.as_slice(), &canonical(self)])
    }
}

/// The target region's system transaction that starts a moved chain: the source's sealed
/// header at the freeze with the CN set that sealed it, the source's regionchain roots there,
/// the `moves` root before the record, the record, the root of each chunk of the chain's
/// state and the first chunk (the others follow as [`AdoptionChunk`]s).
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Adoption {
    /// The region taking the chain (so the adoption is not replayed elsewhere).
    pub region: ChainId,
    pub sealed: SealedHeader,
    pub cn_set: Vec<PublicKeyBytes>,
    pub roots: RegionRoots,
    pub previous_moves: B256,
    pub record: MoveRecord,
    pub chunk_roots: Vec<B256>,
    /// Chunk 0 of the state.
    pub snapshot: ChainSnapshot,
}

/// One more chunk of the state of a chain whose adoption is open in the target region.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct AdoptionChunk {
    /// The region taking the chain.
    pub region: ChainId,
    pub chain: ChainId,
    /// Its place among the state's chunks (1 or more: chunk 0 came with the adoption).
    pub index: u32,
    pub snapshot: ChainSnapshot,
}

/// An adoption whose state is still arriving: the record, the root of each chunk and the
/// chunks in so far. The chain is held (no other adoption of it) but not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopting {
    pub record: MoveRecord,
    pub chunk_roots: Vec<B256>,
    pub chunks: Vec<Option<ChainSnapshot>>,
    /// The block that opened it or took its last chunk ([`ADOPTION_PATIENCE`]).
    pub progress: Height,
}

impl Adopting {
    /// The adoption (verified: it has one chunk root at least), opened by block `at` with
    /// its first chunk in, waiting for the others.
    pub fn open(adoption: Adoption, at: Height) -> Self {
        debug_assert!(!adoption.chunk_roots.is_empty());
        let mut chunks = vec![None; adoption.chunk_roots.len().max(1)];
        chunks[0] = Some(adoption.snapshot);
        Self {
            record: adoption.record,
            chunk_roots: adoption.chunk_roots,
            chunks,
            progress: at,
        }
    }

    /// Whether it has waited past [`ADOPTION_PATIENCE`] for a chunk at block `height`.
    pub fn stalled(&self, height: Height) -> bool {
        height.0.saturating_sub(self.progress.0) >= ADOPTION_PATIENCE
    }

    /// Whether chunk `index` is in.
    pub fn has(&self, index: u32) -> bool {
        self.chunks.get(index as usize).is_some_and(Option::is_some)
    }

    /// Checks `chunk` against the root the record committed for its place; one already in,
    /// or a place past the last, is refused.
    pub fn check(&self, chunk: &AdoptionChunk) -> Result<(), MigrationError> {
        let chain = self.record.chain;
        let Some(root) = self.chunk_roots.get(chunk.index as usize) else {
            return Err(MigrationError::NoSuchChunk {
                chain,
                index: chunk.index,
                chunks: self.chunk_roots.len(),
            });
        };
        if self.has(chunk.index) {
            return Err(MigrationError::ChunkIn {
                chain,
                index: chunk.index,
            });
        }
        chunk.snapshot.check()?;
        if chunk.snapshot.root() != *root {
            return Err(MigrationError::SnapshotNotRecorded);
        }
        Ok(())
    }

    /// Chunks still to come.
    pub fn missing(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_none()).count()
    }

    /// The whole state, once every chunk is in.
    pub fn state(&self) -> Option<ChainSnapshot> {
        let chunks: Option<Vec<ChainSnapshot>> = self.chunks.iter().cloned().collect();
        chunks.map(ChainSnapshot::merge)
    }
}

/// Why a move or an adoption was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MigrationError {
    #[error("not a system transaction")]
    NotSystem,
    #[error("malformed {0}")]
    Malformed(String),
    #[error("the transaction is for region {got}, this is region {expected}")]
    WrongRegion { got: ChainId, expected: ChainId },
    #[error("chain {0} is not a servicechain this region serves")]
    NotServed(ChainId),
    #[error("region {0} is not one this regionchain knows (the directory, or the directory region its genesis names)")]
    UnknownRegion(ChainId),
    #[error("a chain moves to another region, not to its own")]
    SameRegion,
    #[error("one move and one adoption per block; this block already has one")]
    OnePerBlock,
    #[error("rewards withdrawn to chain {0} are not paid yet; move it after its next segment")]
    RewardsOwed(ChainId),
    #[error("refused while replaying")]
    Replay,
    #[error("the CN set changes at the next height; move the chain after the change")]
    SetChanging,
    #[error("chain {chain} cannot be taken whole: {reason}")]
    Snapshot { chain: ChainId, reason: String },
    #[error(
        "the record moves chain {chain} from region {source_region}, whose ids do not include it"
    )]
    NotSourcesChain {
        chain: ChainId,
        source_region: ChainId,
    },
    #[error("chain {0} is already held here")]
    AlreadyHeld(ChainId),
    #[error(
        "the header is sealed by CN set {got}, this region trusts {trusted} for region {region} \
         (it follows a region's set through that region's checkpoints)"
    )]
    UntrustedSet {
        region: ChainId,
        got: B256,
        trusted: B256,
    },
    #[error("the header is region {header}'s at height {height}, the record names region {source_region} at height {record}")]
    NotTheFreeze {
        header: ChainId,
        height: Height,
        source_region: ChainId,
        record: Height,
    },
    #[error("the roots do not hash to the header's segment-0 state root")]
    RootsNotHeaders,
    #[error("the record is not the one the header's moves root adds")]
    RecordNotCommitted,
    #[error("the snapshot does not hash to the record's snapshot root")]
    SnapshotNotRecorded,
    #[error("the state of a move is cut into 1 to {MAX_CHUNKS} chunks, not {0}")]
    ChunkCount(usize),
    #[error("no adoption of chain {0} is open here (its adoption comes first)")]
    NotAdopting(ChainId),
    #[error("chain {chain}'s state has {chunks} chunks; there is no chunk {index}")]
    NoSuchChunk {
        chain: ChainId,
        index: u32,
        chunks: usize,
    },
    #[error("chunk {index} of chain {chain}'s state is already in")]
    ChunkIn { chain: ChainId, index: u32 },
    #[error("{0} adoptions are open here; this one waits for one of them to complete")]
    TooManyOpen(usize),
    #[error("this block takes {MAX_CHUNKS_PER_BLOCK} chunks of adopted state; this one waits for the next")]
    ChunksPerBlock,
    #[error(transparent)]
    BadSnapshot(#[from] SnapshotError),
    #[error(transparent)]
    Approval(#[from] GovernanceError),
    #[error(transparent)]
    Seal(#[from] RegionCheckpointError),
}

/// Where segment 0 reads a chain's whole state when it freezes it: the node's committed
/// state (a region's blocks never execute before their parent committed, so this is the
/// state before the freezing block).
pub trait FrozenState: Send + Sync + std::fmt::Debug {
    /// The chain's state and its commitment now.
    fn take(&self, chain: ChainId) -> Result<(ChainSnapshot, B256), StateError>;
}

/// No state to read (unit tests of the regionchain alone): every move is refused.
#[derive(Debug)]
pub struct NoState;

impl FrozenState for NoState {
    fn take(&self, _chain: ChainId) -> Result<(ChainSnapshot, B256), StateError> {
        Err(StateError::Environment(
            "this regionchain reads no servicechain state".into(),
        ))
    }
}

impl FrozenState for crate::storage::state::CommittedState {
    fn take(&self, chain: ChainId) -> Result<(ChainSnapshot, B256), StateError> {
        self.snapshot(chain)
    }
}

fn framing(kind: &str, e: SystemTxError) -> MigrationError {
    match e {
        SystemTxError::NotSystem => MigrationError::NotSystem,
        other => MigrationError::Malformed(format!("{kind}: {other}")),
    }
}

/// The message the source region's CNs sign to move `chain` to `target`.
pub fn move_message(
    region: ChainId,
    approving_set: B256,
    chain: ChainId,
    target: ChainId,
) -> Vec<u8> {
    [
        MOVE_DOMAIN,
        &region.to_be_bytes(),
        approving_set.as_slice(),
        &chain.to_be_bytes(),
        &target.to_be_bytes(),
    ]
    .concat()
}

impl MoveOrder {
    /// An order approved by `approvers` (index in the region's current set, key).
    pub fn approve(
        region: ChainId,
        current: &CnSet,
        chain: ChainId,
        target: ChainId,
        approvers: &[(CnIndex, &SecretKey)],
    ) -> Result<Self, MigrationError> {
        let msg = move_message(region, current.root(), chain, target);
        let (approvers, approval) = sign_approval(current, approvers, &msg)?;
        Ok(Self {
            region,
            chain,
            target,
            approvers,
            approval,
        })
    }

    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::MoveServicechain, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, MigrationError> {
        system::decode(raw, SystemKind::MoveServicechain).map_err(|e| framing("move order", e))
    }

    /// Checks the order in region `here` with CN set `current`: this region's, to another
    /// one, approved by strictly more than two thirds of the set.
    pub fn verify(&self, here: ChainId, current: &CnSet) -> Result<(), MigrationError> {
        if self.region != here {
            return Err(MigrationError::WrongRegion {
                got: self.region,
                expected: here,
            });
        }
        if self.target == here {
            return Err(MigrationError::SameRegion);
        }
        let msg = move_message(here, current.root(), self.chain, self.target);
        check_approval(current, &self.approvers, &self.approval, &msg)?;
        Ok(())
    }
}

impl AdoptionChunk {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::AdoptionChunk, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, MigrationError> {
        system::decode(raw, SystemKind::AdoptionChunk).map_err(|e| framing("adoption chunk", e))
    }
}

/// The state a move records, cut into chunks ([`cut_state`]), each chunk's root hashed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutState {
    pub chunks: Vec<ChainSnapshot>,
    /// [`ChainSnapshot::root`] of each chunk, in order.
    pub roots: Vec<B256>,
}

impl CutState {
    /// The record's snapshot root: [`chunked_root`] of the chunks' roots.
    pub fn snapshot_root(&self) -> B256 {
        chunked_root(&self.roots)
    }
}

/// `snapshot` cut into chunks as a move carries it.
pub fn cut_state(snapshot: &ChainSnapshot) -> Result<CutState, SnapshotError> {
    let chunks = snapshot.chunks()?;
    let roots = chunks.iter().map(ChainSnapshot::root).collect();
    Ok(CutState { chunks, roots })
}

/// How an adoption's header seal is treated (see `region::Seals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealCheck {
    Verify,
    /// Taken as verified: a replay of a block this node committed before.
    Trust,
}

impl Adoption {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::AdoptServicechain, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, MigrationError> {
        system::decode(raw, SystemKind::AdoptServicechain).map_err(|e| framing("adoption", e))
    }

    /// Checks the adoption in region `here`, which trusts CN set `trusted` for the source
    /// region (`None`: the source is not a region it knows) and does not hold the chain
    /// (`held`). Every comparison comes before the snapshot is hashed, and that before the
    /// seal's pairing.
    pub fn verify(
        &self,
        here: ChainId,
        trusted: Option<B256>,
        held: bool,
        seal: SealCheck,
    ) -> Result<(), MigrationError> {
        let record = &self.record;
        if let Some(got) = [self.region, record.target]
            .into_iter()
            .find(|r| *r != here)
        {
            return Err(MigrationError::WrongRegion {
                got,
                expected: here,
            });
        }
        let header = &self.sealed.header;
        if header.region != record.source || header.height != record.height {
            return Err(MigrationError::NotTheFreeze {
                header: header.region,
                height: header.height,
                source_region: record.source,
                record: record.height,
            });
        }
        if record.source == here {
            return Err(MigrationError::SameRegion);
        }
        if !in_span(record.source, record.chain) {
            return Err(MigrationError::NotSourcesChain {
                chain: record.chain,
                source_region: record.source,
            });
        }
        let trusted = trusted.ok_or(MigrationError::UnknownRegion(record.source))?;
        if header.cn_set_root != trusted || set_root(&self.cn_set) != trusted {
            return Err(MigrationError::UntrustedSet {
                region: record.source,
                got: header.cn_set_root,
                trusted,
            });
        }
        if held {
            return Err(MigrationError::AlreadyHeld(record.chain));
        }
        let region_root = header.segments.first().map(|s| s.state_root);
        if region_root != Some(self.roots.state_root()) {
            return Err(MigrationError::RootsNotHeaders);
        }
        if record.fold(self.previous_moves) != self.roots.moves {
            return Err(MigrationError::RecordNotCommitted);
        }
        let chunks = self.chunk_roots.len();
        if !(1..=MAX_CHUNKS).contains(&chunks) {
            return Err(MigrationError::ChunkCount(chunks));
        }
        if chunked_root(&self.chunk_roots) != record.snapshot_root {
            return Err(MigrationError::SnapshotNotRecorded);
        }
        self.snapshot.check()?;
        if self.snapshot.root() != self.chunk_roots[0] {
            return Err(MigrationError::SnapshotNotRecorded);
        }
        if seal == SealCheck::Verify {
            verify_seal(&self.sealed, &self.cn_set)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chain::region_checkpoint::tests::{cn_keys, reseal, sealed, HERE, OTHER};
    use crate::crypto::bls::SecretKey;
    use crate::exec::{Account, SnapshotAccount};
    use crate::types::SegmentCommitment;
    use alloy_primitives::U256;

    fn snapshot() -> ChainSnapshot {
        let accounts = std::collections::BTreeMap::from([(
            Address::repeat_byte(1),
            Account::with_balance(U256::from(5)),
        )]);
        ChainSnapshot::build::<SnapshotError>(&accounts, &Default::default(), |_| Ok(None)).unwrap()
    }

    fn compressed(keys: &[SecretKey]) -> Vec<PublicKeyBytes> {
        keys.iter().map(|k| k.public_key().to_bytes()).collect()
    }

    /// Region OTHER's header at height 5 sealed by `keys`, its segment-0 state root `root`.
    fn freeze_header(keys: &[SecretKey], root: B256) -> SealedHeader {
        let mut header = sealed(keys, 5, keys.len(), &[]).header;
        header.segments = vec![SegmentCommitment {
            chain_id: OTHER,
            tx_count: 1,
            tx_root: B256::ZERO,
            receipts_root: B256::ZERO,
            state_root: root,
        }];
        reseal(keys, header)
    }

    /// An adoption into HERE of chain `OTHER + 1`, frozen at OTHER's height 5, with roots and
    /// record consistent with the sealed header; and the set root HERE trusts for OTHER.
    fn adoption() -> (Adoption, B256) {
        let (adoption, trusted, _) = adoption_of(&snapshot());
        (adoption, trusted)
    }

    /// [`adoption`] of `state`, with the chunks after the first.
    pub(crate) fn adoption_of(state: &ChainSnapshot) -> (Adoption, B256, Vec<ChainSnapshot>) {
        adoption_for(state, ChainId(OTHER.0 + 1))
    }

    /// [`adoption_of`] for `chain`.
    pub(crate) fn adoption_for(
        state: &ChainSnapshot,
        chain: ChainId,
    ) -> (Adoption, B256, Vec<ChainSnapshot>) {
        let keys = cn_keys("other");
        let cut = cut_state(state).unwrap();
        let snapshot_root = cut.snapshot_root();
        let (mut chunks, chunk_roots) = (cut.chunks, cut.roots);
        let snapshot = chunks.remove(0);
        let record = MoveRecord {
            chain,
            source: OTHER,
            target: HERE,
            height: Height(5),
            owner: Address::ZERO,
            final_root: B256::repeat_byte(7),
            snapshot_root,
        };
        let previous_moves = B256::repeat_byte(9);
        let roots = RegionRoots {
            moves: record.fold(previous_moves),
            ..Default::default()
        };
        let adoption = Adoption {
            region: HERE,
            sealed: freeze_header(&keys, roots.state_root()),
            cn_set: compressed(&keys),
            roots,
            previous_moves,
            record,
            chunk_roots,
            snapshot,
        };
        (adoption, set_root(&compressed(&keys)), chunks)
    }

    /// A state of 3 000 accounts: more than one chunk.
    fn large_state() -> ChainSnapshot {
        state_of(3_000)
    }

    /// A state of `n` accounts, balances 1 to `n`.
    pub(crate) fn state_of(n: u64) -> ChainSnapshot {
        let accounts: std::collections::BTreeMap<Address, Account> = (0..n)
            .map(|i| {
                let mut a = [0u8; 20];
                a[..8].copy_from_slice(&i.to_be_bytes());
                (Address::from(a), Account::with_balance(U256::from(i + 1)))
            })
            .collect();
        ChainSnapshot::build::<SnapshotError>(&accounts, &Default::default(), |_| Ok(None)).unwrap()
    }

    #[test]
    fn a_state_in_chunks_is_taken_chunk_by_chunk_each_against_its_recorded_root() {
        let state = large_state();
        let (a, trusted, rest) = adoption_of(&state);
        assert!(rest.len() >= 2, "{} chunks after the first", rest.len());
        a.verify(HERE, Some(trusted), false, SealCheck::Verify)
            .unwrap();
        let chain = a.record.chain;
        let chunk = |index: usize, snapshot: &ChainSnapshot| AdoptionChunk {
            region: HERE,
            chain,
            index: index as u32,
            snapshot: snapshot.clone(),
        };
        let decoded = AdoptionChunk::from_system_tx(&chunk(1, &rest[0]).to_system_tx()).unwrap();
        assert_eq!(decoded, chunk(1, &rest[0]));
        let mut adopting = Adopting::open(a.clone(), Height(5));
        assert!(!adopting.stalled(Height(5 + ADOPTION_PATIENCE - 1)));
        assert!(adopting.stalled(Height(5 + ADOPTION_PATIENCE)));
        assert_eq!(adopting.missing(), rest.len());
        // A chunk edited in transit, put in another place, or past the last, is refused.
        let mut richer = rest[0].clone();
        richer.accounts[0].balance += U256::from(1);
        assert_eq!(
            adopting.check(&chunk(1, &richer)),
            Err(MigrationError::SnapshotNotRecorded)
        );
        assert_eq!(
            adopting.check(&chunk(2, &rest[0])),
            Err(MigrationError::SnapshotNotRecorded)
        );
        assert!(matches!(
            adopting.check(&chunk(rest.len() + 1, &rest[0])),
            Err(MigrationError::NoSuchChunk { .. })
        ));
        assert!(matches!(
            adopting.check(&chunk(0, &a.snapshot)),
            Err(MigrationError::ChunkIn { index: 0, .. })
        ));
        for (i, c) in rest.iter().enumerate() {
            assert_eq!(adopting.state(), None);
            adopting.check(&chunk(i + 1, c)).unwrap();
            adopting.chunks[i + 1] = Some(c.clone());
            assert!(matches!(
                adopting.check(&chunk(i + 1, c)),
                Err(MigrationError::ChunkIn { .. })
            ));
        }
        assert_eq!(adopting.missing(), 0);
        assert_eq!(adopting.state(), Some(state));
        // The chunk roots must be the recorded ones, and there is at least one.
        let mut fewer = a.clone();
        fewer.chunk_roots.pop();
        assert_eq!(
            fewer.verify(HERE, Some(trusted), false, SealCheck::Trust),
            Err(MigrationError::SnapshotNotRecorded)
        );
        fewer.chunk_roots.clear();
        assert_eq!(
            fewer.verify(HERE, Some(trusted), false, SealCheck::Trust),
            Err(MigrationError::ChunkCount(0))
        );
    }

    #[test]
    fn an_adoption_proved_by_the_sources_seal_is_accepted() {
        let (a, trusted) = adoption();
        a.verify(HERE, Some(trusted), false, SealCheck::Verify)
            .unwrap();
        let decoded = Adoption::from_system_tx(&a.to_system_tx()).unwrap();
        assert_eq!(decoded, a);
    }

    #[test]
    fn an_adoption_that_does_not_prove_itself_is_refused_with_its_reason() {
        let (a, trusted) = adoption();
        let check = |a: &Adoption| a.verify(HERE, Some(trusted), false, SealCheck::Verify);
        // Another snapshot than the one recorded (a balance raised in transit).
        let mut richer = a.clone();
        richer.snapshot.accounts[0] = SnapshotAccount {
            balance: U256::from(6),
            ..richer.snapshot.accounts[0]
        };
        assert_eq!(check(&richer), Err(MigrationError::SnapshotNotRecorded));
        // A record the header does not commit (its snapshot root made to match a forged state).
        let mut forged = richer.clone();
        forged.chunk_roots = vec![forged.snapshot.root()];
        forged.record.snapshot_root = chunked_root(&forged.chunk_roots);
        assert_eq!(check(&forged), Err(MigrationError::RecordNotCommitted));
        // Roots other than the header's.
        let mut roots = a.clone();
        roots.roots.pop = B256::repeat_byte(1);
        assert_eq!(check(&roots), Err(MigrationError::RootsNotHeaders));
        // A header sealed by keys this region does not trust for the source.
        let other_keys = cn_keys("forger");
        let mut forger = a.clone();
        forger.cn_set = compressed(&other_keys);
        forger.sealed = freeze_header(&other_keys, a.roots.state_root());
        assert!(matches!(
            check(&forger),
            Err(MigrationError::UntrustedSet { .. })
        ));
        // The trusted set's header, edited after sealing: the seal does not verify.
        let mut edited = a.clone();
        edited.sealed.header.timestamp_ms += 1;
        assert!(matches!(check(&edited), Err(MigrationError::Seal(_))));
        // Not this region's, from an unknown region, of a chain outside the source's ids,
        // at another height than the freeze, already held.
        assert!(matches!(
            a.verify(ChainId(2_000_000), Some(trusted), false, SealCheck::Verify),
            Err(MigrationError::WrongRegion { .. })
        ));
        assert_eq!(
            a.verify(HERE, None, false, SealCheck::Verify),
            Err(MigrationError::UnknownRegion(OTHER))
        );
        let mut outside = a.clone();
        outside.record.chain = ChainId(HERE.0 + 1);
        assert!(matches!(
            check(&outside),
            Err(MigrationError::NotSourcesChain { .. })
        ));
        let mut later = a.clone();
        later.record.height = Height(6);
        assert!(matches!(
            check(&later),
            Err(MigrationError::NotTheFreeze { .. })
        ));
        assert_eq!(
            a.verify(HERE, Some(trusted), true, SealCheck::Verify),
            Err(MigrationError::AlreadyHeld(a.record.chain))
        );
        // Trusting the seal (a replay) skips only the pairing.
        edited
            .verify(HERE, Some(trusted), false, SealCheck::Trust)
            .unwrap();
    }

    #[test]
    fn a_move_needs_the_regions_quorum_and_another_region() {
        let keys = cn_keys("here");
        let set = CnSet::from_bytes(&compressed(&keys)).unwrap();
        let signers: Vec<(CnIndex, &SecretKey)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        let chain = ChainId(HERE.0 + 1);
        let order = MoveOrder::approve(HERE, &set, chain, OTHER, &signers[..3]).unwrap();
        order.verify(HERE, &set).unwrap();
        assert_eq!(
            MoveOrder::from_system_tx(&order.to_system_tx()).unwrap(),
            order
        );
        let short = MoveOrder::approve(HERE, &set, chain, OTHER, &signers[..2]).unwrap();
        assert!(matches!(
            short.verify(HERE, &set),
            Err(MigrationError::Approval(GovernanceError::NoQuorum { .. }))
        ));
        let mut retargeted = order.clone();
        retargeted.target = ChainId(3_000_000);
        assert!(matches!(
            retargeted.verify(HERE, &set),
            Err(MigrationError::Approval(GovernanceError::BadApproval))
        ));
        let home = MoveOrder::approve(HERE, &set, chain, HERE, &signers).unwrap();
        assert_eq!(home.verify(HERE, &set), Err(MigrationError::SameRegion));
        assert!(matches!(
            order.verify(OTHER, &set),
            Err(MigrationError::WrongRegion { .. })
        ));
    }
}
