//! A ranger node's hold on the transactions its JSON-RPC accepted, from the hash it answered
//! until they are included, replaced, or dropped by a pool rule (`docs/transactions.md`).
//!
//! ```text
//!  eth_sendRawTransaction ─► pool (the CN's rules: refusals answered to the client)
//!                              │  └─ fresh ─► forwarder ─► TxBatch frames ─► every CN
//!  audited blocks ─► CnApp::commit ─► pool.committed (included transactions leave)
//!  every RESEND_INTERVAL ─► transactions ready for two ticks in a row are forwarded again
//! ```
//!
//! The pool is the audit application's (its `committed` calls keep it current) and the truth:
//! the path to the CNs may drop frames under load (full queues never block the network), a CN
//! may restart, so whatever is still ready and not included after a tick is sent again, and a
//! CN answers a copy it holds with "already known". Transactions from one burst travel
//! together, in frames of up to [`FORWARD_BATCH_BYTES`]. Before a hash is answered the
//! transaction is synced to the RN's journal (`storage::txjournal`), which a restarted RN
//! reads back into its pool: a crash loses nothing acknowledged.

use crate::crypto::tx::RecoveredTx;
use crate::mempool::{Mempool, MempoolError};
use crate::storage::txjournal::TxJournal;
use crate::types::ChainId;
use alloy_primitives::{Address, Bytes, B256};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Accepted transactions waiting for the forwarder; beyond this the resend tick carries them
/// (the pool holds them either way).
const FRESH_CAPACITY: usize = 16_384;
/// Bytes of one forwarded frame: far below a CN's `TxBatch` limit, and small enough that one
/// frame never holds the CN's ingress long.
pub const FORWARD_BATCH_BYTES: usize = 1 << 20;
/// The journal is rewritten with the pool's contents once it is this large and twice the
/// size the last rewrite left (a large pool is not rewritten every tick).
const JOURNAL_COMPACT_BYTES: u64 = 64 << 20;
/// How often transactions still ready and not included are forwarded again.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// Transactions forwarded again per chain and tick (a few full segments), so a large pool
/// cannot flood the CNs with copies.
const RESEND_MAX: usize = 8_192;
/// Longest the forwarder waits before it looks at its stop flag again; also how soon it tries
/// again after a forward failed (no CN link yet, e.g. just after a restart).
const POLL: Duration = Duration::from_millis(100);

/// Where forwarded transactions go (the RN's links to the CNs).
pub type Forward = dyn Fn(Vec<Bytes>) -> Result<(), String> + Send + Sync;
/// A sender's committed next nonce, `None` when it cannot be read now.
pub type CommittedNonce = dyn Fn(ChainId, Address) -> Option<u64> + Send + Sync;

/// The accepted transactions of an RN and the queue towards its forwarder.
pub struct Outbox {
    pool: Arc<Mutex<Mempool>>,
    fresh: Sender<Bytes>,
    fresh_rx: Receiver<Bytes>,
    /// Where accepted transactions are made durable before their hash is answered (none:
    /// held in memory only, as in-process test networks run).
    journal: OnceLock<TxJournal>,
    /// Held while a transaction is pooled and its record written (not synced), and while the
    /// journal is rewritten from the pool: whoever sees a transaction in the pool, a
    /// duplicate's "already known" or a rewrite's snapshot, finds its record written.
    admission: Mutex<()>,
    /// Journaled transactions the last start could not pool (see [`Outbox::attach_journal`]).
    kept: OnceLock<Vec<Bytes>>,
}

/// Why [`Outbox::submit`] did not take a transaction.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Pool(#[from] MempoolError),
    #[error("transaction journal: {0}")]
    Journal(std::io::Error),
}

impl Outbox {
    /// An outbox over `pool` (the RN's audit application's pool).
    pub fn new(pool: Arc<Mutex<Mempool>>) -> Self {
        let (fresh, fresh_rx) = crossbeam_channel::bounded(FRESH_CAPACITY);
        Self {
            pool,
            fresh,
            fresh_rx,
            journal: OnceLock::new(),
            admission: Mutex::new(()),
            kept: OnceLock::new(),
        }
    }

    /// From now on, every accepted transaction is appended to `journal` (and synced) before
    /// [`Outbox::submit`] returns; the journal is rewritten with what the pool holds now.
    /// `keep` are journaled transactions refused now for reasons that may pass (state not
    /// readable yet, a full pool): they stay in the journal, through every compaction, for
    /// the next start.
    pub fn attach_journal(&self, journal: TxJournal, keep: Vec<Bytes>) -> std::io::Result<()> {
        let _admission = self.admitting();
        let _ = self.kept.set(keep);
        journal.rewrite_with(|| self.journaled())?;
        let _ = self.journal.set(journal);
        Ok(())
    }

    /// What a rewrite of the journal holds: the pool, and what the last start kept.
    fn journaled(&self) -> Vec<Bytes> {
        let mut held = self.lock().raw_transactions();
        held.extend(self.kept.get().into_iter().flatten().cloned());
        held
    }

    /// Keeps accepted transactions of chains that move to another region, taken out of the
    /// pool, to be handed on ([`Self::take_departed`]).
    pub fn keep_departed(&self) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep_departed();
    }

    /// The kept transactions of chains that moved away, oldest first.
    pub fn take_departed(&self) -> Vec<RecoveredTx> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_departed()
    }

    /// Keeps `txs`, acknowledged before a restart for a chain that has moved away since, to
    /// be handed on like those the pool held at the move (dropped where nothing hands on).
    pub fn depart(&self, chain: ChainId, txs: Vec<RecoveredTx>) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hand_on(chain, txs);
    }

    /// Holds `tx` (whose sender's committed next nonce is `account_nonce`), makes it durable
    /// in the journal, and queues it for the CNs; a refusal leaves nothing new held (a
    /// transaction it replaced is held again).
    pub fn submit(&self, tx: RecoveredTx, account_nonce: u64) -> Result<(), Refusal> {
        let (raw, hash) = (tx.tx().raw().clone(), tx.tx().hash());
        let Some(journal) = self.journal.get() else {
            self.lock().insert(tx, account_nonce)?;
            let _ = self.fresh.try_send(raw);
            return Ok(());
        };
        let ticket = {
            let _admission = self.admitting();
            // Bound first: the pool's guard must be gone before a restore takes it again.
            let inserted = self.lock().insert(tx, account_nonce);
            match inserted {
                Ok(replaced) => {
                    self.write_or_restore(journal, (&raw, &hash), replaced, account_nonce)?
                }
                // The first copy's record is written (under this lock): "already known" is an
                // acknowledgement to many clients, so it answers once that record is durable.
                Err(MempoolError::AlreadyKnown) => {
                    let written = journal.written();
                    drop(_admission);
                    journal.wait_durable(written).map_err(Refusal::Journal)?;
                    return Err(MempoolError::AlreadyKnown.into());
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Syncs are shared: every submission whose record was written before this one's
        // `fdatasync` started is made durable by it.
        journal.wait_durable(ticket).map_err(|e| {
            tracing::error!(error = %e, "transaction journal sync failed; answering an error");
            Refusal::Journal(e)
        })?;
        // When the forwarder is behind (full) the resend tick forwards it from the pool.
        let _ = self.fresh.try_send(raw);
        Ok(())
    }

    /// Writes the record of the transaction just pooled; if the journal refuses it, takes the
    /// transaction out again and pools the one it replaced (acknowledged earlier, its record
    /// in the journal). Called under the admission lock.
    fn write_or_restore(
        &self,
        journal: &TxJournal,
        (raw, hash): (&Bytes, &B256),
        replaced: Option<RecoveredTx>,
        account_nonce: u64,
    ) -> Result<crate::storage::txjournal::Ticket, Refusal> {
        journal.write(raw).map_err(|e| {
            tracing::error!(error = %e, "transaction journal append failed; refusing");
            let mut pool = self.lock();
            pool.remove_by_hash(hash);
            if let Some(replaced) = replaced {
                let hash = replaced.tx().hash();
                if let Err(refused) = pool.insert(replaced, account_nonce) {
                    tracing::error!(%hash, error = %refused, "a replaced transaction could not be pooled again");
                }
            }
            Refusal::Journal(e)
        })
    }

    fn admitting(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sender's next nonce counting the gap-free run this RN holds (`pending`).
    pub fn pending_nonce(&self, chain: ChainId, sender: Address, account_nonce: u64) -> u64 {
        self.lock().pending_nonce(chain, sender, account_nonce)
    }

    /// Transactions held now (the pool's depth).
    pub fn pooled(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mempool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards fresh transactions in frames and resends what stays ready, until `stop`.
    /// After a forward fails (no CN link, or every CN's queue full), everything ready is sent
    /// again after [`POLL`], then after twice that, and so on up to [`RESEND_INTERVAL`], until
    /// a frame goes through: a restarted RN, or one whose CN links dropped, catches up as soon
    /// as a link is back, while CNs that stay busy get no more than the usual resend per tick.
    pub fn run(&self, forward: &Forward, committed: &CommittedNonce, stop: &AtomicBool) {
        let mut previous: HashSet<B256> = HashSet::new();
        let mut next_tick = Instant::now() + RESEND_INTERVAL;
        // While forwards fail: the wait before the next retry (doubling).
        let mut retry: Option<Duration> = None;
        while !stop.load(Ordering::Relaxed) {
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(POLL);
            match self.fresh_rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    let mut bytes = batch[0].len();
                    while bytes < FORWARD_BATCH_BYTES {
                        match self.fresh_rx.try_recv() {
                            Ok(raw) => {
                                bytes += raw.len();
                                batch.push(raw);
                            }
                            Err(_) => break,
                        }
                    }
                    if !send(forward, batch) && retry.is_none() {
                        retry = Some(POLL);
                        next_tick = next_tick.min(Instant::now() + POLL);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                let (ready, sent) = self.resend(forward, committed, &previous, retry.is_some());
                previous = ready;
                retry = match (sent, retry) {
                    (true, _) => None,
                    (false, None) => Some(POLL),
                    (false, Some(wait)) => Some((wait * 2).min(RESEND_INTERVAL)),
                };
                self.compact_journal();
                next_tick = Instant::now() + retry.unwrap_or(RESEND_INTERVAL);
            }
        }
    }

    /// Rewrites the journal with what the pool holds once it has grown past
    /// [`JOURNAL_COMPACT_BYTES`] and twice its size after the last rewrite (included
    /// transactions leave it this way).
    fn compact_journal(&self) {
        let Some(journal) = self.journal.get() else {
            return;
        };
        if !needs_compaction(journal.len_bytes(), journal.rewritten_bytes()) {
            return;
        }
        let _admission = self.admitting();
        if let Err(e) = journal.rewrite_with(|| self.journaled()) {
            // Appends go on to the old file; the next tick tries again.
            tracing::warn!(error = %e, "transaction journal rewrite failed");
        }
    }

    /// Forgets what committed state says is included, forwards again whatever was ready at
    /// the last tick and still is (everything ready, when `all`), and returns what is ready
    /// now and whether every frame was forwarded.
    fn resend(
        &self,
        forward: &Forward,
        committed: &CommittedNonce,
        previous: &HashSet<B256>,
        all: bool,
    ) -> (HashSet<B256>, bool) {
        // A block may have committed between the RPC's nonce read and its insert: the pool
        // would hold included transactions that no later commit of the sender clears.
        let senders = self.lock().senders();
        let nonces: Vec<(ChainId, Address, u64)> = senders
            .into_iter()
            .filter_map(|(c, s)| committed(c, s).map(|n| (c, s, n)))
            .collect();
        let ready: Vec<(B256, Bytes)> = {
            let mut pool = self.lock();
            for (chain, sender, next) in nonces {
                pool.caught_up(chain, sender, next);
            }
            pool.active_chains()
                .into_iter()
                .flat_map(|chain| pool.ready(chain, RESEND_MAX))
                .map(|tx| (tx.tx().hash(), tx.tx().raw().clone()))
                .collect()
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut sent = true;
        for (hash, raw) in &ready {
            if !all && !previous.contains(hash) {
                continue;
            }
            bytes += raw.len();
            batch.push(raw.clone());
            if bytes >= FORWARD_BATCH_BYTES {
                sent &= send(forward, std::mem::take(&mut batch));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            sent &= send(forward, batch);
        }
        (ready.into_iter().map(|(hash, _)| hash).collect(), sent)
    }
}

/// Whether a journal of `len` bytes, `rewritten` bytes long after its last rewrite, is
/// rewritten now.
fn needs_compaction(len: u64, rewritten: u64) -> bool {
    len >= JOURNAL_COMPACT_BYTES.max(rewritten.saturating_mul(2))
}

/// Forwards one frame; whether it went out.
fn send(forward: &Forward, batch: Vec<Bytes>) -> bool {
    let count = batch.len();
    match forward(batch) {
        Ok(()) => true,
        Err(e) => {
            // Held in the pool: the forwarder tries again shortly.
            tracing::debug!(count, error = %e, "transactions not forwarded yet");
            false
        }
    }
}

/// Runs the forwarder of `outbox` on its own thread until `stop`. It is critical: if it
/// died, the RPC would keep returning hashes for transactions nobody forwards, so a panic
/// stops the process (see [`crate::pipeline::spawn_critical`]).
pub fn spawn(
    outbox: Arc<Outbox>,
    forward: Box<Forward>,
    committed: Box<CommittedNonce>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    crate::pipeline::spawn_critical("rn-outbox", move || {
        outbox.run(&*forward, &*committed, &stop);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tx::{Eip1559Tx, Transaction, TxKind};
    use crate::mempool::MempoolConfig;
    use alloy_primitives::U256;

    const CHAIN: ChainId = ChainId(1001);

    fn transfer(nonce: u64, fee: u128, input: usize) -> RecoveredTx {
        let tx = Transaction::Eip1559(Eip1559Tx {
            chain_id: CHAIN,
            nonce,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: fee,
            gas_limit: 30_000_000,
            to: TxKind::Call(Address::repeat_byte(0x42)),
            value: U256::ZERO,
            input: Bytes::from(vec![1u8; input]),
            access_list: Default::default(),
        });
        RecoveredTx::recover(tx.sign(&[7; 32]).expect("valid secret")).expect("recoverable")
    }

    fn journaled_outbox(dir: &std::path::Path) -> Outbox {
        let pool = Mempool::new(MempoolConfig::default(), [CHAIN]);
        let outbox = Outbox::new(Arc::new(Mutex::new(pool)));
        let (journal, _) = TxJournal::open(&dir.join("txs.journal")).unwrap();
        outbox.attach_journal(journal, Vec::new()).unwrap();
        outbox
    }

    #[test]
    fn a_replacement_the_journal_refuses_leaves_the_replaced_transaction_held() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = journaled_outbox(dir.path());
        let first = transfer(0, 10, 0);
        outbox.submit(first.clone(), 0).unwrap();
        // A replacement that pays more but is over the journal's record limit: the pool takes
        // it, the journal refuses it.
        let replacement = transfer(0, 100, crate::storage::txjournal::MAX_RECORD_BYTES);
        let refused = outbox.submit(replacement.clone(), 0);
        assert!(matches!(refused, Err(Refusal::Journal(_))), "{refused:?}");
        let pool = outbox.lock();
        assert!(pool.get(&replacement.tx().hash()).is_none());
        assert!(
            pool.get(&first.tx().hash()).is_some(),
            "the acknowledged one is held"
        );
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn already_known_answers_with_the_journal_holding_the_first_copy() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = journaled_outbox(dir.path());
        let tx = transfer(0, 10, 0);
        outbox.submit(tx.clone(), 0).unwrap();
        let again = outbox.submit(tx.clone(), 0);
        assert!(
            matches!(again, Err(Refusal::Pool(MempoolError::AlreadyKnown))),
            "{again:?}"
        );
        let (_, recovered) = TxJournal::open(&dir.path().join("txs.journal")).unwrap();
        assert_eq!(recovered.transactions, vec![tx.tx().raw().clone()]);
    }

    #[test]
    fn after_a_failed_forward_everything_ready_goes_again_at_once() {
        let pool = Mempool::new(MempoolConfig::default(), [CHAIN]);
        let outbox = Outbox::new(Arc::new(Mutex::new(pool)));
        let tx = transfer(0, 10, 0);
        outbox.submit(tx.clone(), 0).unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        let forward = move |batch: Vec<Bytes>| -> Result<(), String> {
            log.lock().unwrap().extend(batch);
            Ok(())
        };
        let committed = |_: ChainId, _: Address| Some(0);
        // A normal tick resends only what was already ready at the previous one...
        let (ready, ok) = outbox.resend(&forward, &committed, &HashSet::new(), false);
        assert!(ok && sent.lock().unwrap().is_empty());
        assert!(ready.contains(&tx.tx().hash()));
        // ... while a retry after a failure sends everything ready.
        let (_, ok) = outbox.resend(&forward, &committed, &HashSet::new(), true);
        assert!(ok);
        assert_eq!(*sent.lock().unwrap(), vec![tx.tx().raw().clone()]);
        let failing = |_: Vec<Bytes>| -> Result<(), String> { Err("no CN link".into()) };
        let (_, ok) = outbox.resend(&failing, &committed, &HashSet::new(), true);
        assert!(
            !ok,
            "a failed frame is reported, so the forwarder keeps retrying"
        );
    }

    #[test]
    fn a_large_journal_is_compacted_at_twice_what_its_last_rewrite_left() {
        assert!(!needs_compaction(JOURNAL_COMPACT_BYTES - 1, 0));
        assert!(needs_compaction(JOURNAL_COMPACT_BYTES, 0));
        assert!(needs_compaction(
            JOURNAL_COMPACT_BYTES,
            JOURNAL_COMPACT_BYTES / 2
        ));
        // A pool of 100 MiB is not rewritten again until 200 MiB have accumulated.
        assert!(!needs_compaction(150 << 20, 100 << 20));
        assert!(needs_compaction(200 << 20, 100 << 20));
        assert!(!needs_compaction(u64::MAX - 1, u64::MAX));
    }
}
