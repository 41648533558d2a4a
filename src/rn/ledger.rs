//! An RN's chain on disk: audited blocks appended to the block log (one group commit per
//! batch) and indexed in RocksDB (height → offset, hash → height, tx hash → location) — the
//! same layout as a CN's, so the same [`ChainReader`] and [`BlockServer`] read and serve it.
//! On restart the log is replayed (each block re-applied, the index repaired where it lags)
//! and the node continues from its last block.
//!
//! [`BlockServer`]: crate::net::sync::BlockServer

use crate::chain::app::CnApp;
use crate::chain::recovery::replay_log;
use crate::config::StorageConfig;
use crate::consensus::machine::Tip;
use crate::consensus::selection::CnSet;
use crate::net::sync::ChainReader;
use crate::storage::blocklog::BlockLog;
use crate::storage::history::HistoryRetention;
use crate::storage::state::{CommittedState, WalSync};
use crate::storage::store::{Store, StoreOptions};
use crate::types::codec::encode_frame;
use crate::types::{Block, ChainId, Height};
use alloy_primitives::{Address, U256};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;

/// The CN set in force from each height on (genesis, then every announced change).
#[derive(Debug, Clone)]
pub struct SetHistory(Vec<(Height, Arc<CnSet>)>);

impl SetHistory {
    /// History starting with the genesis set at height 1.
    pub fn new(genesis: Arc<CnSet>) -> Self {
        Self(vec![(Height(1), genesis)])
    }

    /// The set in force at `height`.
    pub fn at(&self, height: Height) -> &Arc<CnSet> {
        let i = self.0.partition_point(|(from, _)| *from <= height);
        // Invariant: the genesis entry covers every height from 1, and height 0 has no set of
        // its own (its callers ask about blocks, which start at 1).
        &self.0[i.saturating_sub(1)].1
    }

    /// Records that `set` is in force from `from` on.
    pub fn switch(&mut self, from: Height, set: Arc<CnSet>) {
        self.0.retain(|(h, _)| *h < from);
        self.0.push((from, set));
    }
}

/// The block log (single writer) and the index of an RN.
pub struct Ledger {
    log: BlockLog,
    chain: ChainReader,
    state: Arc<CommittedState>,
}

impl Ledger {
    /// Opens (creating if needed) `datadir/blocks.log` and `datadir/db`, the latter with
    /// `allocations` as servicechain genesis state when new.
    pub fn open(
        datadir: &Path,
        storage: &StorageConfig,
        allocations: &[(ChainId, Address, U256)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(datadir)
            .with_context(|| format!("creating {}", datadir.display()))?;
        let options = crate::pipeline::topology::log_options(storage);
        let (log, report) = BlockLog::open(datadir.join("blocks.log"), options)?;
        if let Some(torn) = report.truncated {
            tracing::warn!(
                at = torn.at,
                reason = torn.reason,
                "block log: cut a torn tail"
            );
        }
        let store = Store::open_with(
            datadir.join("db"),
            StoreOptions {
                block_cache_bytes: storage.rocksdb_cache_mib << 20,
                ..Default::default()
            },
        )?;
        let store = Arc::new(store);
        let retention = storage.history(HistoryRetention::All);
        let state = Arc::new(CommittedState::open_with(
            Arc::clone(&store),
            allocations,
            retention,
        )?);
        let chain = ChainReader::new(log.reader(), store);
        Ok(Self { log, chain, state })
    }

    pub fn chain(&self) -> &ChainReader {
        &self.chain
    }

    /// Servicechain state, receipts and logs (re-executed blocks are held here until
    /// [`Self::append`] writes them).
    pub fn state(&self) -> &Arc<CommittedState> {
        &self.state
    }

    /// Replays the log into `app` on top of `genesis`, calling `on_block` after each block;
    /// blocks above the state's applied height (a crash between append and write) are
    /// re-executed and written. Returns the tip.
    pub fn replay(
        &self,
        genesis: Tip,
        app: &mut CnApp,
        on_block: impl FnMut(&CnApp, &Block),
    ) -> anyhow::Result<Tip> {
        let replayed = replay_log(&self.log, &self.state, app, genesis, on_block)?;
        if let Some(head) = self.chain.store().head()? {
            anyhow::ensure!(
                head.height <= replayed.tip.height.0,
                "the index's head is height {} but the block log ends at height {}",
                head.height,
                replayed.tip.height
            );
        }
        Ok(replayed.tip)
    }

    /// Makes `blocks` durable (one group commit), then writes each with its execution (index,
    /// state, receipts) to RocksDB.
    pub fn append(&mut self, blocks: &[Block]) -> anyhow::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let frames: Vec<Vec<u8>> = blocks.iter().map(encode_frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let offsets = self.log.append_batch(&refs)?;
        let last = blocks.len() - 1;
        for (i, (block, offset)) in blocks.iter().zip(offsets).enumerate() {
            // One WAL sync for the run, at its last block.
            let sync = match i == last {
                true => WalSync::Now,
                false => WalSync::ByTheNext,
            };
            self.state
                .persist_with(block, offset.0, sync)
                .with_context(|| format!("persisting block {}", block.header().height))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::app::CnState;
    use crate::consensus::machine::{Application, Params};
    use crate::consensus::proposal::build_block;
    use crate::crypto::bls::SecretKey;
    use crate::crypto::hash::sha256;
    use crate::mempool::Mempool;
    use crate::storage::store::BlockIndex;
    use crate::types::{BlockHash, CnIndex, Round};
    use std::sync::Mutex;

    const REGION: ChainId = ChainId(1000);

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed(&[seed; 32]).unwrap()
    }

    fn set(seed: u8) -> Arc<CnSet> {
        Arc::new(CnSet::new(vec![key(seed).public_key()]).unwrap())
    }

    fn genesis() -> Tip {
        Tip {
            height: Height(0),
            hash: BlockHash(sha256(b"ledger-test-genesis")),
            mix: sha256(b"ledger-test-mix"),
            timestamp_ms: 1,
        }
    }

    fn open(dir: &Path) -> Ledger {
        let storage = StorageConfig {
            log_preallocate_mib: 0,
            rocksdb_cache_mib: 8,
            ..Default::default()
        };
        Ledger::open(dir, &storage, &[]).unwrap()
    }

    /// A one-CN application on `ledger`'s state, at genesis (as an RN audits with).
    fn app(ledger: &Ledger) -> CnApp {
        let shared = CnState {
            pool: Arc::new(Mutex::new(Mempool::new(Default::default(), [REGION]))),
            state: Arc::clone(ledger.state()),
            system: Arc::default(),
        };
        CnApp::new(REGION, set(7), shared, 100, genesis())
    }

    /// The next block on `tip` as its proposer builds it (unsealed: the ledger checks no
    /// seal), executed by `app` but not committed.
    fn next_block(app: &mut CnApp, tip: &Tip) -> Block {
        let params = Params {
            region: REGION,
            committee_size: 1,
            block_interval_ms: 0,
            base_timeout_ms: 1,
            max_timeout_ms: 1,
            votes: Default::default(),
        };
        let timestamp_ms = tip.timestamp_ms + 100;
        let body = app.build(tip.height.next(), tip, timestamp_ms);
        let set = Arc::clone(app.cn_set());
        let key = key(7);
        build_block(
            &params,
            &key,
            CnIndex(0),
            &set,
            tip,
            Round(0),
            timestamp_ms,
            body,
        )
    }

    /// `n` blocks on genesis, each committed by `app` (its execution held for the ledger).
    fn committed_chain(app: &mut CnApp, n: usize) -> Vec<Block> {
        let mut tip = genesis();
        (0..n)
            .map(|_| {
                let block = next_block(app, &tip);
                app.commit(&block).unwrap();
                tip = Tip::of(&block);
                block
            })
            .collect()
    }

    fn heights_replayed(ledger: &Ledger, app: &mut CnApp) -> anyhow::Result<(Tip, Vec<u64>)> {
        let mut seen = Vec::new();
        let tip = ledger.replay(genesis(), app, |_, b| seen.push(b.header().height.0))?;
        Ok((tip, seen))
    }

    /// A signed transfer of 1 wei on `chain` from the account of secret `[1; 32]`.
    fn transfer(chain: ChainId, nonce: u64) -> crate::crypto::tx::RecoveredTx {
        use crate::crypto::tx::{Eip1559Tx, Transaction, TxKind};
        let tx = Transaction::Eip1559(Eip1559Tx {
            chain_id: chain,
            nonce,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: 1_000_000_000,
            gas_limit: crate::exec::TRANSFER_GAS,
            to: TxKind::Call(Address::repeat_byte(9)),
            value: U256::from(1u64),
            input: alloy_primitives::Bytes::new(),
            access_list: Default::default(),
        });
        crate::crypto::tx::RecoveredTx::recover(tx.sign(&[1; 32]).unwrap()).unwrap()
    }

    #[test]
    fn a_move_freezes_the_chain_from_its_block_on_and_records_its_whole_state() {
        use crate::chain::migration::{FrozenState, MoveOrder, MAX_SEGMENTS_BESIDE_A_MOVE};
        use crate::chain::region_checkpoint::tests::{cn_keys, entry, OTHER};
        use crate::consensus::machine::InvalidBlock;
        let chain = ChainId(REGION.0 + 1);
        let owner = crate::crypto::tx::address_of(&[1; 32]).unwrap();
        let funded = [(chain, owner, U256::from(10u64.pow(18)))];
        // A proposer and a validator, each on its own datadir from the same genesis.
        let node = |dir: &Path| {
            let storage = StorageConfig {
                log_preallocate_mib: 0,
                rocksdb_cache_mib: 8,
                ..Default::default()
            };
            let ledger = Ledger::open(dir, &storage, &funded).unwrap();
            let shared = CnState {
                pool: Arc::new(Mutex::new(Mempool::new(
                    Default::default(),
                    [REGION, chain],
                ))),
                state: Arc::clone(ledger.state()),
                system: Arc::default(),
            };
            let mut app = CnApp::new(REGION, set(7), shared.clone(), 100, genesis());
            let states: Arc<dyn FrozenState> = ledger.state().clone();
            app.configure_region(|mut r| {
                r.directory.insert(entry(&cn_keys("other")));
                // The chain, and more idle ones than a freezing block may carry segments of.
                let chains: Vec<ChainId> = (1..=MAX_SEGMENTS_BESIDE_A_MOVE as u64 + 2)
                    .map(|i| ChainId(REGION.0 + i))
                    .collect();
                r.with_genesis_chains(&chains).with_states(states)
            });
            (ledger, shared, app)
        };
        let (proposer_dir, validator_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut ledger, shared, mut proposer) = node(proposer_dir.path());
        let (_other, _, mut validator) = node(validator_dir.path());
        let refuses_chain = |shared: &CnState| {
            shared
                .pool
                .lock()
                .unwrap()
                .insert(transfer(chain, 1), 1)
                .is_err()
        };
        let pooled = |shared: &CnState, nonce: u64| {
            let mut pool = shared.pool.lock().unwrap();
            pool.insert(transfer(chain, nonce), nonce).unwrap();
        };
        // Block 1 includes a transfer; block 2 carries the move and, though a transfer waits,
        // no segment of the chain.
        let mut tip = genesis();
        pooled(&shared, 0);
        let first = next_block(&mut proposer, &tip);
        assert_eq!(first.segments.len(), 2);
        for app in [&mut proposer, &mut validator] {
            app.validate(&first, &tip).unwrap();
            app.commit(&first).unwrap();
        }
        tip = Tip::of(&first);
        let signer = key(7);
        let region_set = set(7);
        let order = MoveOrder::approve(REGION, &region_set, chain, OTHER, &[(CnIndex(0), &signer)])
            .unwrap();
        assert!(shared.add_system_tx(order.to_system_tx()));
        pooled(&shared, 1);
        let freezing = next_block(&mut proposer, &tip);
        assert_eq!(
            freezing.segments.len(),
            1,
            "the freezing block carries no segment of the chain"
        );
        // A proposer that adds one anyway is refused.
        let mut sneaky = freezing.clone();
        sneaky.segments.push(crate::types::Segment {
            chain_id: chain,
            txs: vec![transfer(chain, 1).tx().raw().clone()],
        });
        assert!(matches!(
            validator.validate(&sneaky, &tip),
            Err(InvalidBlock::UnregisteredChain(c)) if c == chain
        ));
        // So is one with more segments than an adoption can carry the header of.
        let mut crowded = freezing.clone();
        crowded
            .segments
            .extend(
                (2..=MAX_SEGMENTS_BESIDE_A_MOVE as u64 + 2).map(|i| crate::types::Segment {
                    chain_id: ChainId(REGION.0 + i),
                    txs: Vec::new(),
                }),
            );
        assert!(matches!(
            validator.validate(&crowded, &tip),
            Err(InvalidBlock::TooManySegmentsBesideAMove { .. })
        ));
        validator.validate(&freezing, &tip).unwrap();
        for app in [&mut proposer, &mut validator] {
            app.commit(&freezing).unwrap();
        }
        tip = Tip::of(&freezing);
        let region = validator.region_handle().read().unwrap().clone();
        let moved = &region.moved[&chain];
        assert_eq!(moved.record.height, freezing.header().height);
        assert_eq!(moved.record.target, OTHER);
        assert_eq!(
            moved.roots.state_root(),
            freezing.header().segments[0].state_root
        );
        assert_eq!(moved.record.fold(moved.previous_moves), moved.roots.moves);
        // The record holds the chain's state after block 1: the owner paid for one transfer.
        let (snapshot, root) = region.states.take(chain).unwrap();
        assert_eq!(root, first.header().segments[1].state_root);
        assert_eq!(moved.record.final_root, root);
        let recorded = crate::chain::migration::cut_state(&snapshot)
            .unwrap()
            .snapshot_root();
        assert_eq!(moved.record.snapshot_root, recorded);
        let paid = snapshot
            .accounts
            .iter()
            .find(|a| a.address == owner)
            .unwrap();
        assert_eq!(paid.nonce, 1);
        assert!(!region.serves(chain));
        // Later blocks carry none either, and the pools took the chain's transactions out.
        assert!(refuses_chain(&shared));
        let later = next_block(&mut proposer, &tip);
        assert_eq!(later.segments.len(), 1);
        let mut sneaky = later.clone();
        sneaky.segments.push(crate::types::Segment {
            chain_id: chain,
            txs: Vec::new(),
        });
        assert!(matches!(
            validator.validate(&sneaky, &tip),
            Err(InvalidBlock::UnregisteredChain(c)) if c == chain
        ));
        // A second move of the chain is refused (it is no longer served here), and a proposer
        // drops it unproposed.
        let second = crate::types::Segment {
            chain_id: REGION,
            txs: vec![order.to_system_tx()],
        };
        let refusal = region
            .execute(tip.height.next(), &second)
            .refusals
            .remove(0);
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("not a servicechain this region serves")),
            "{refusal:?}"
        );
        assert!(shared.add_system_tx(order.to_system_tx()));
        let again = next_block(&mut proposer, &tip);
        assert!(again.segments[0].txs.is_empty());
        assert!(shared.system.lock().unwrap().is_empty());
        // After a restart the replay freezes it again: same record, and the pool (built from
        // genesis' chains) refuses its transactions.
        ledger.append(&[first, freezing]).unwrap();
        drop((ledger, proposer, shared));
        let (ledger, shared, mut restarted) = node(proposer_dir.path());
        heights_replayed(&ledger, &mut restarted).unwrap();
        assert_eq!(
            restarted.region_handle().read().unwrap().moved[&chain],
            region.moved[&chain]
        );
        assert!(refuses_chain(&shared));
    }

    #[test]
    fn a_replay_trusts_checkpoint_seals_only_where_the_certified_outcome_agrees() {
        use crate::chain::region_checkpoint::tests::{checkpoint, cn_keys, entry, sealed, OTHER};
        let keys = cn_keys("other");
        let listing = |app: &mut CnApp| {
            app.configure_region(|mut r| {
                r.directory.insert(entry(&keys));
                r
            })
        };
        // Block 1 carries a checkpoint at height 9 whose seal does not cover its header
        // (refused when executed), block 2 a sound one at height 5 (recorded).
        let mut forged = checkpoint(&keys, sealed(&keys, 9, 3, &[]));
        forged.sealed.header.timestamp_ms += 1;
        let sound = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ledger = open(dir.path());
            let shared = CnState {
                pool: Arc::new(Mutex::new(Mempool::new(Default::default(), [REGION]))),
                state: Arc::clone(ledger.state()),
                system: Arc::default(),
            };
            let mut app = CnApp::new(REGION, set(7), shared.clone(), 100, genesis());
            listing(&mut app);
            let mut tip = genesis();
            let mut chain = Vec::new();
            for tx in [forged.to_system_tx(), sound.to_system_tx()] {
                assert!(shared.add_system_tx(tx));
                let block = next_block(&mut app, &tip);
                app.commit(&block).unwrap();
                tip = Tip::of(&block);
                chain.push(block);
            }
            assert_eq!(
                app.region_handle().read().unwrap().region_heads[&OTHER].height,
                Height(5)
            );
            ledger.append(&chain).unwrap();
        }
        let ledger = open(dir.path());
        let mut app = app(&ledger);
        listing(&mut app);
        heights_replayed(&ledger, &mut app).unwrap();
        // Trusting block 1's forged seal would have recorded height 9 and refused block 2's.
        assert_eq!(
            app.region_handle().read().unwrap().region_heads[&OTHER].height,
            Height(5)
        );
        // Replayed by a node whose directory does not list the region (another genesis):
        // the checkpoint its header says was recorded is refused: the node does not start.
        let mut unlisted = self::app(&ledger);
        let error = format!(
            "{:#}",
            heights_replayed(&ledger, &mut unlisted).unwrap_err()
        );
        assert!(
            error.contains("replays to a commitment other than"),
            "{error}"
        );
    }

    /// A CN's application over a ledger in `dir`, its system transaction queue, and a
    /// directory listing region OTHER (signed by `cn_keys("other")`).
    fn proposer_knowing_other(dir: &Path) -> (Ledger, CnState, CnApp) {
        use crate::chain::region_checkpoint::tests::{cn_keys, entry};
        let ledger = open(dir);
        let shared = CnState {
            pool: Arc::new(Mutex::new(Mempool::new(Default::default(), [REGION]))),
            state: Arc::clone(ledger.state()),
            system: Arc::default(),
        };
        let mut app = CnApp::new(REGION, set(7), shared.clone(), 100, genesis());
        app.configure_region(|mut r| {
            r.directory.insert(entry(&cn_keys("other")));
            r
        });
        (ledger, shared, app)
    }

    #[test]
    fn region_checkpoints_get_a_bounded_share_of_the_queue_and_hopeless_ones_are_not_proposed() {
        use crate::chain::app::MAX_QUEUED_CHECKPOINTS;
        use crate::chain::region_checkpoint::tests::{checkpoint, cn_keys, sealed};
        use crate::chain::region_checkpoint::RegionCheckpoint;
        use alloy_primitives::Bytes;
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, shared, mut app) = proposer_knowing_other(dir.path());
        let keys = cn_keys("other");
        let at = |h| checkpoint(&keys, sealed(&keys, h, 3, &[])).to_system_tx();
        // Sealed by a set the directory does not trust: can never be accepted.
        let forger = cn_keys("forger");
        let untrusted = checkpoint(&forger, sealed(&forger, 9, 4, &[])).to_system_tx();
        assert!(shared.add_system_tx(untrusted.clone()));
        for h in 1..MAX_QUEUED_CHECKPOINTS as u64 {
            assert!(shared.add_system_tx(at(h)), "checkpoint {h} refused");
        }
        // The checkpoints' share is full; other kinds still get in.
        assert!(!shared.add_system_tx(at(1_000)));
        let other_kind = Bytes::from_static(&[0xfe, 2, 0xc0]);
        assert!(shared.add_system_tx(other_kind.clone()));
        // No kind, or one beyond the system transaction limit: refused, whatever room is left.
        assert!(!shared.add_system_tx(Bytes::from_static(&[0xfe, 99, 0xc0])));
        let mut oversize = vec![0xfe, 2];
        oversize.resize(crate::types::system::MAX_SYSTEM_TX_BYTES + 1, 0);
        assert!(!shared.add_system_tx(Bytes::from(oversize)));
        let body = app.build(Height(1), &genesis(), 101);
        let proposed: Vec<&Bytes> = body.segments[0]
            .txs
            .iter()
            .filter(|tx| RegionCheckpoint::from_system_tx(tx).is_ok())
            .collect();
        // One checkpoint per region, the first that can be accepted; the hopeless one is
        // dropped from the queue unproposed.
        assert_eq!(proposed, [&at(1)]);
        assert!(body.segments[0].txs.contains(&other_kind));
        assert!(!shared.system.lock().unwrap().contains(&untrusted));
    }

    #[test]
    fn a_chunk_of_adopted_state_waits_for_its_adoption_and_an_orphan_one_is_not_proposed() {
        use crate::chain::migration::tests::{adoption_of, state_of};
        use crate::chain::migration::AdoptionChunk;
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, shared, mut app) = proposer_knowing_other(dir.path());
        let (adoption, _, rest) = adoption_of(&state_of(3_000));
        let chunk = |chain: ChainId, index: u32| {
            AdoptionChunk {
                region: REGION,
                chain,
                index,
                snapshot: rest[index as usize - 1].clone(),
            }
            .to_system_tx()
        };
        let chain = adoption.record.chain;
        // Chunks queued before their adoption, and one of an adoption that is nowhere.
        let orphan = chunk(ChainId(chain.0 + 7), 1);
        for tx in [
            chunk(chain, 1),
            orphan.clone(),
            adoption.to_system_tx(),
            chunk(chain, 2),
        ] {
            assert!(shared.add_system_tx(tx));
        }
        let body = app.build(Height(1), &genesis(), 101);
        let proposed = &body.segments[0].txs;
        assert!(proposed.contains(&adoption.to_system_tx()));
        assert!(proposed.contains(&chunk(chain, 1)) && proposed.contains(&chunk(chain, 2)));
        assert!(!proposed.contains(&orphan));
        assert!(!shared.system.lock().unwrap().contains(&orphan));
    }

    #[test]
    fn the_set_in_force_is_the_last_one_switched_to_at_or_below_the_height() {
        let (a, b, c, d) = (set(1), set(2), set(3), set(4));
        let mut history = SetHistory::new(Arc::clone(&a));
        history.switch(Height(10), Arc::clone(&b));
        history.switch(Height(20), Arc::clone(&c));
        let expect = |history: &SetHistory, height: u64, set: &Arc<CnSet>| {
            assert!(Arc::ptr_eq(history.at(Height(height)), set), "at {height}");
        };
        for (height, set) in [(0, &a), (1, &a), (9, &a), (10, &b), (19, &b), (20, &c)] {
            expect(&history, height, set);
        }
        expect(&history, u64::MAX, &c);
        // A change recorded again from an earlier height (a replay, a re-audit) replaces
        // every later one.
        history.switch(Height(15), Arc::clone(&d));
        for (height, set) in [(14, &b), (15, &d), (20, &d), (u64::MAX, &d)] {
            expect(&history, height, set);
        }
        assert_eq!(history.0.len(), 3);
    }

    #[test]
    fn appended_blocks_are_read_by_height_and_hash_and_replayed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let chain = {
            let mut ledger = open(dir.path());
            let mut app = app(&ledger);
            let chain = committed_chain(&mut app, 3);
            ledger.append(&chain[..2]).unwrap();
            ledger.append(&[]).unwrap();
            ledger.append(&chain[2..]).unwrap();
            let reader = ledger.chain();
            assert_eq!(reader.head().unwrap(), Some((Height(3), chain[2].hash())));
            for block in &chain {
                let height = block.header().height;
                assert_eq!(reader.block_at(height).unwrap().as_ref(), Some(block));
                assert_eq!(
                    reader.block_by_hash(&block.hash()).unwrap().as_ref(),
                    Some(block)
                );
            }
            assert_eq!(reader.block_at(Height(4)).unwrap(), None);
            assert_eq!(ledger.state().store().state_height().unwrap(), Some(3));
            chain
        };
        let mut ledger = open(dir.path());
        let mut app = app(&ledger);
        let (tip, seen) = heights_replayed(&ledger, &mut app).unwrap();
        assert_eq!(tip, Tip::of(&chain[2]));
        assert_eq!(seen, vec![1, 2, 3]);
        // It continues from its last block.
        let fourth = next_block(&mut app, &tip);
        app.commit(&fourth).unwrap();
        ledger.append(std::slice::from_ref(&fourth)).unwrap();
        assert_eq!(
            ledger.chain().head().unwrap(),
            Some((Height(4), fourth.hash()))
        );
    }

    #[test]
    fn a_block_logged_but_not_indexed_is_re_executed_and_indexed_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let second = {
            let mut ledger = open(dir.path());
            let mut app = app(&ledger);
            let first = committed_chain(&mut app, 1).remove(0);
            ledger.append(std::slice::from_ref(&first)).unwrap();
            // Built and executed, never committed: the ledger has no execution to write.
            let second = next_block(&mut app, &Tip::of(&first));
            let err = ledger.append(std::slice::from_ref(&second)).unwrap_err();
            assert!(format!("{err:#}").contains("persisting block 2"), "{err:#}");
            assert_eq!(
                ledger.chain().head().unwrap().map(|(h, _)| h),
                Some(Height(1))
            );
            assert_eq!(ledger.chain().block_by_hash(&second.hash()).unwrap(), None);
            second
        };
        // The block log is the authority: a restart re-executes it and indexes it.
        let ledger = open(dir.path());
        let mut app = app(&ledger);
        let (tip, seen) = heights_replayed(&ledger, &mut app).unwrap();
        assert_eq!(tip, Tip::of(&second));
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(ledger.chain().block_at(Height(2)).unwrap(), Some(second));
        assert_eq!(ledger.state().store().state_height().unwrap(), Some(2));
    }

    #[test]
    fn an_out_of_order_block_is_not_indexed_and_a_log_holding_it_is_refused_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ledger = open(dir.path());
            let mut app = app(&ledger);
            let chain = committed_chain(&mut app, 2);
            // Block 2 before block 1: the execution held next is block 1's.
            assert!(ledger.append(&chain[1..]).is_err());
            assert_eq!(ledger.chain().head().unwrap(), None);
            assert_eq!(ledger.chain().block_at(Height(2)).unwrap(), None);
        }
        let ledger = open(dir.path());
        let mut app = app(&ledger);
        let err = heights_replayed(&ledger, &mut app).unwrap_err();
        assert!(
            format!("{err:#}").contains("does not extend height 0"),
            "{err:#}"
        );
    }

    #[test]
    fn an_index_ahead_of_the_block_log_is_refused_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ledger = open(dir.path());
            let mut app = app(&ledger);
            let chain = committed_chain(&mut app, 1);
            ledger.append(&chain).unwrap();
            // An index entry for a block the log never held (a database from another run).
            let store = ledger.chain().store();
            store
                .index_block(&BlockIndex {
                    height: 9,
                    hash: [9; 32],
                    log_offset: 0,
                    txs: &[],
                })
                .unwrap();
        }
        let ledger = open(dir.path());
        let mut app = app(&ledger);
        let err = heights_replayed(&ledger, &mut app).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("index's head is height 9 but the block log ends at height 1"),
            "{err:#}"
        );
    }
}
