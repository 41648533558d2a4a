//! One JSON-RPC endpoint for several regions: [`RegionRouter`] answers each request from the
//! region that holds the chain it names (`/chain/<id>`), so a client of a platform of regions
//! keeps one URL scheme; a chain no region holds is answered as unknown by the server.
//!
//! Region-wide `kaon_*` methods (servicechains, evidence, PoP state, PoR work and shares,
//! system transactions) answer for the region of the endpoint's chain; `kaon_regions` lists
//! every region served. Writes go to the holding region's pool and from there to its CNs.
//!
//! May import: `rpc` (the backend trait and its types) and [`super::rpc::ChainRpc`].

use super::miner::RnClient;
use super::rpc::ChainRpc;
use crate::crypto::tx::{RecoveredTx, SignedTransaction};
use crate::rpc::{
    BackendError, CallRequest, LogQuery, RpcAccessList, RpcBackend, RpcBlock, RpcFeeHistory,
    RpcLog, RpcReceipt, RpcTransaction, StateAt, SubmitError, SyncProgress, Upstream,
};
use crate::types::ChainId;
use alloy_primitives::{hex, Address, Bytes, B256, U256};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The regions one endpoint serves, each through its own RN's backend.
pub struct RegionRouter {
    regions: Vec<Arc<ChainRpc>>,
}

impl RegionRouter {
    /// A router over `regions` (at least one; their chain ids are disjoint by construction:
    /// each region numbers its chains after its own id).
    pub fn new(regions: Vec<Arc<ChainRpc>>) -> anyhow::Result<Self> {
        anyhow::ensure!(!regions.is_empty(), "a router needs at least one region");
        Ok(Self { regions })
    }

    /// The region holding `chain`. Registrations are not yet confined to a region's id span
    /// (`docs/regions.md`), so two regions may both hold an id: that is answered as an error
    /// naming both, never from whichever region comes first.
    /// A chain moved from one region to another is held by both: the one serving it now
    /// answers, the one it left is asked only for what the other does not have (its history,
    /// [`Self::with_history`]).
    fn of(&self, chain: ChainId) -> Result<&ChainRpc, BackendError> {
        let serving = self.regions.iter().any(|r| r.serves(chain));
        let mut holders = self
            .regions
            .iter()
            .filter(|r| r.has_chain(chain) && (!serving || r.serves(chain)));
        match (holders.next(), holders.next()) {
            (Some(only), None) => Ok(only),
            // The region it moved to has adopted it while this node has not applied the
            // freeze in the region it left yet: the adopting one answers.
            (Some(a), Some(b)) if a.adopted(chain) != b.adopted(chain) => {
                Ok(if a.adopted(chain) { a } else { b })
            }
            (Some(a), Some(b)) => Err(BackendError::Execution(format!(
                "chain {chain} is held by regions {} and {}",
                a.region(),
                b.region()
            ))),
            (None, _) => Err(BackendError::Execution(format!(
                "no region holds chain {chain}"
            ))),
        }
    }
}

/// How often accepted transactions of moved chains are looked for and handed on.
const HAND_OFF_INTERVAL: Duration = Duration::from_millis(250);
/// How long a moved chain's transaction waits for a region to serve the chain (its adoption)
/// before it is dropped.
const HAND_OFF_PATIENCE: Duration = Duration::from_secs(600);

/// How often a transaction waiting for a remote endpoint's region to adopt its chain is sent
/// there again.
const REMOTE_RETRY: Duration = Duration::from_secs(2);
/// Longest one request to a remote endpoint may take, and how long one pass goes on sending
/// to remote endpoints: an unreachable or slow endpoint delays the local hand-offs by at most
/// their sum a pass.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(2);
const REMOTE_PASS_BUDGET: Duration = Duration::from_millis(500);

/// A moved chain's transaction waiting to be handed on.
struct Departing {
    tx: RecoveredTx,
    since: Instant,
    /// Not sent to a remote endpoint before this.
    next_try: Instant,
}

/// What became of one attempt to hand a transaction on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandedOn {
    Taken,
    /// Not yet (the chain's state still arriving, a full pool, the remote endpoint
    /// unreachable or not serving the chain yet): tried again until the patience runs out.
    Later,
    Refused,
}

/// Hands what each region's RN accepted for a chain that moved away, and did not include
/// before the move, to the region that serves the chain now, until `stop`: through that
/// region's own admission (its pool, journal and CNs) when this process follows it, else to
/// the `[rn] remote` endpoint serving the move's target region (`remotes`) as
/// `eth_sendRawTransaction`. So a move loses no acknowledged transaction, and none runs twice
/// (the nonces moved with the state). A transaction waits [`HAND_OFF_PATIENCE`] for the
/// chain's adoption; at most [`crate::mempool::MAX_DEPARTED`] per region wait at once.
pub fn hand_off(
    regions: &[Arc<ChainRpc>],
    remotes: &[Upstream],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    for region in regions {
        region.keep_departed();
    }
    let client = RnClient::with_timeout("", REMOTE_TIMEOUT);
    let mut waiting: Vec<Departing> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for region in regions {
            let room = (crate::mempool::MAX_DEPARTED * regions.len()).saturating_sub(waiting.len());
            let now = Instant::now();
            let departed = region.take_departed();
            if departed.len() > room {
                tracing::warn!(dropped = departed.len() - room, region = %region.region(), "moved chains' transactions dropped: the hand-off holds as many as it may");
            }
            waiting.extend(departed.into_iter().take(room).map(|tx| Departing {
                tx,
                since: now,
                next_try: now,
            }));
        }
        // The least recently tried first, so none waits behind others that keep waiting.
        waiting.sort_by_key(|d| d.next_try);
        let mut remote = Remote {
            upstreams: remotes,
            client: &client,
            until: Instant::now() + REMOTE_PASS_BUDGET,
            serving: HashMap::new(),
        };
        let before = waiting.len();
        let mut expired = 0;
        waiting.retain_mut(|departing| {
            let outcome = match departing.tx.tx().chain_id() {
                None => HandedOn::Refused,
                Some(chain) => match regions.iter().find(|r| r.serves(chain)) {
                    Some(serving) => hand_to(serving, chain, &departing.tx),
                    None => remote.hand_to(regions, chain, departing),
                },
            };
            let keep = match outcome {
                HandedOn::Taken | HandedOn::Refused => false,
                HandedOn::Later => departing.since.elapsed() < HAND_OFF_PATIENCE,
            };
            expired += usize::from(!keep && outcome == HandedOn::Later);
            keep
        });
        if expired > 0 {
            tracing::warn!(expired, waiting = before - expired, "moved chains' transactions dropped: not taken by their new region within the hand-off's patience");
        }
        std::thread::sleep(HAND_OFF_INTERVAL);
    }
    Ok(())
}

/// Hands `tx` to `serving`, a region this process follows that serves `chain` now.
fn hand_to(serving: &ChainRpc, chain: ChainId, tx: &RecoveredTx) -> HandedOn {
    match serving.send_raw_transaction(chain, tx.tx().clone()) {
        Ok(hash) => {
            tracing::debug!(%chain, %hash, region = %serving.region(), "moved chain's transaction handed to its new region");
            HandedOn::Taken
        }
        // For now only (its state just arriving, a full pool): tried again next tick.
        Err(
            e @ (SubmitError::InsufficientFunds { .. }
            | SubmitError::PoolFull
            | SubmitError::Unavailable(_)),
        ) => {
            tracing::debug!(%chain, hash = %tx.tx().hash(), error = %e, "moved chain's transaction not taken yet");
            HandedOn::Later
        }
        Err(e) => {
            tracing::debug!(%chain, hash = %tx.tx().hash(), error = %e, "moved chain's transaction not taken by its new region");
            HandedOn::Refused
        }
    }
}

/// The `[rn] remote` endpoints as one hand-off pass uses them.
struct Remote<'a> {
    upstreams: &'a [Upstream],
    client: &'a RnClient,
    /// When this pass stops sending ([`REMOTE_PASS_BUDGET`]).
    until: Instant,
    /// Whether the endpoint serving a target region serves a chain, asked once a pass: before
    /// it does, a transaction sent there could be forwarded on to the region it left.
    serving: HashMap<(ChainId, ChainId), bool>,
}

impl Remote<'_> {
    /// Sends `departing` to the remote endpoint serving the region `chain` moved to (from the
    /// move record of the followed region it left), at most every [`REMOTE_RETRY`]; waits
    /// while no followed region records the move yet, while the target is a followed region
    /// (which takes it once it serves the chain), and while the endpoint does not serve the
    /// chain yet.
    fn hand_to(
        &mut self,
        regions: &[Arc<ChainRpc>],
        chain: ChainId,
        departing: &mut Departing,
    ) -> HandedOn {
        let hash = departing.tx.tx().hash();
        let Some(target) = regions
            .iter()
            .find_map(|r| r.moved(chain))
            .map(|m| m.target)
        else {
            return HandedOn::Later;
        };
        // A followed region adopts it: handed on there once it serves the chain.
        if regions.iter().any(|r| r.region() == target) {
            return HandedOn::Later;
        }
        let Some(upstream) = self.upstreams.iter().find(|u| u.holds(target)) else {
            // Nowhere to send it: dropped, the wallet sends again (`docs/regions.md`).
            tracing::warn!(%chain, %target, %hash, "moved chain's transaction dropped: no [rn] remote serves its new region");
            return HandedOn::Refused;
        };
        let now = Instant::now();
        if now < departing.next_try || now >= self.until {
            return HandedOn::Later;
        }
        departing.next_try = now + REMOTE_RETRY;
        let client = self.client;
        let serves = *self.serving.entry((target, chain)).or_insert_with(|| {
            let regionchain = client.at(&upstream.chain_url(target));
            // Unanswered counts as not yet.
            super::region_move::serves(&regionchain, chain).unwrap_or(false)
        });
        if !serves {
            return HandedOn::Later;
        }
        let raw = format!("0x{}", hex::encode(departing.tx.tx().raw()));
        let endpoint = client.at(&upstream.chain_url(chain));
        match endpoint.call("eth_sendRawTransaction", serde_json::json!([raw])) {
            Ok(_) => {
                tracing::debug!(%chain, %target, %hash, "moved chain's transaction handed to its new region's endpoint");
                HandedOn::Taken
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::debug!(%chain, %target, %hash, error = %message, "moved chain's transaction not taken by the remote endpoint");
                remote_outcome(&message)
            }
        }
    }
}

/// What a remote endpoint's refusal of a handed-on transaction means: known already is taken;
/// a refusal of the transaction itself (its nonce used, its fee or gas, its encoding or
/// signature) is final; anything else — the endpoint unreachable, busy, timing out, not
/// serving the chain yet, short of the state still arriving — is tried again later.
fn remote_outcome(message: &str) -> HandedOn {
    const FINAL: [&str; 7] = [
        "nonce too low",
        "underpriced",
        "intrinsic gas too low",
        "exceeds block gas limit",
        "invalid transaction",
        "invalid sender",
        "signature",
    ];
    if message.contains("already known") {
        HandedOn::Taken
    } else if FINAL.iter().any(|m| message.contains(m)) {
        HandedOn::Refused
    } else {
        HandedOn::Later
    }
}

impl RegionRouter {
    /// The region `chain` moved away from, and the first of its numbers it does not hold
    /// (the freezing block's height: the region serving the chain now numbers on from it).
    fn left(&self, chain: ChainId) -> Option<(&ChainRpc, u64)> {
        self.regions
            .iter()
            .find_map(|r| Some((&**r, r.moved(chain)?.height.0)))
    }

    /// The region holding `chain`'s block `number`: the one it moved away from for a block
    /// before its move, the one serving it for every later block.
    fn at_number(&self, chain: ChainId, number: u64) -> Result<&ChainRpc, BackendError> {
        match self.left(chain) {
            Some((left, moved_at)) if number < moved_at => Ok(left),
            _ => self.of(chain),
        }
    }

    /// The region holding the state of `chain` that `at` names.
    fn at_state(&self, chain: ChainId, at: StateAt) -> Result<&ChainRpc, BackendError> {
        match at {
            StateAt::Historical(number) => self.at_number(chain, number),
            _ => self.of(chain),
        }
    }

    /// `read` from the region serving `chain`, and where that finds nothing, from the regions
    /// `chain` moved away from (its blocks, transactions and receipts before the move).
    fn with_history<T>(
        &self,
        chain: ChainId,
        read: impl Fn(&ChainRpc) -> Result<Option<T>, BackendError>,
    ) -> Result<Option<T>, BackendError> {
        if let Some(found) = read(self.of(chain)?)? {
            return Ok(Some(found));
        }
        for left in self.regions.iter().filter(|r| r.moved(chain).is_some()) {
            if let Some(found) = read(left)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

impl RpcBackend for RegionRouter {
    fn has_chain(&self, chain: ChainId) -> bool {
        self.regions.iter().any(|r| r.has_chain(chain))
    }

    fn head(&self, chain: ChainId) -> Result<u64, BackendError> {
        self.of(chain)?.head(chain)
    }

    fn block_by_number(
        &self,
        chain: ChainId,
        number: u64,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        self.at_number(chain, number)?
            .block_by_number(chain, number, full)
    }

    fn block_by_hash(
        &self,
        chain: ChainId,
        hash: B256,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        self.with_history(chain, |r| r.block_by_hash(chain, hash, full))
    }

    fn transaction(
        &self,
        chain: ChainId,
        hash: B256,
    ) -> Result<Option<RpcTransaction>, BackendError> {
        self.with_history(chain, |r| r.transaction(chain, hash))
    }

    fn receipt(&self, chain: ChainId, hash: B256) -> Result<Option<RpcReceipt>, BackendError> {
        self.with_history(chain, |r| r.receipt(chain, hash))
    }

    fn block_receipts(
        &self,
        chain: ChainId,
        number: u64,
    ) -> Result<Option<Vec<RpcReceipt>>, BackendError> {
        self.at_number(chain, number)?.block_receipts(chain, number)
    }

    fn balance(&self, chain: ChainId, address: Address, at: StateAt) -> Result<U256, BackendError> {
        self.at_state(chain, at)?.balance(chain, address, at)
    }

    fn nonce(&self, chain: ChainId, address: Address, at: StateAt) -> Result<u64, BackendError> {
        self.at_state(chain, at)?.nonce(chain, address, at)
    }

    fn code(&self, chain: ChainId, address: Address, at: StateAt) -> Result<Bytes, BackendError> {
        self.at_state(chain, at)?.code(chain, address, at)
    }

    fn storage(
        &self,
        chain: ChainId,
        address: Address,
        slot: B256,
        at: StateAt,
    ) -> Result<B256, BackendError> {
        self.at_state(chain, at)?.storage(chain, address, slot, at)
    }

    fn call(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<Bytes, BackendError> {
        self.at_state(chain, at)?.call(chain, request, at)
    }

    fn estimate_gas(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<u64, BackendError> {
        self.at_state(chain, at)?.estimate_gas(chain, request, at)
    }

    fn create_access_list(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<RpcAccessList, BackendError> {
        self.at_state(chain, at)?
            .create_access_list(chain, request, at)
    }

    fn send_raw_transaction(
        &self,
        chain: ChainId,
        tx: SignedTransaction,
    ) -> Result<B256, SubmitError> {
        self.of(chain)
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?
            .send_raw_transaction(chain, tx)
    }

    /// A range across a move is read in two parts: before it from the region the chain left,
    /// from it on from the region serving it.
    fn logs(&self, chain: ChainId, query: &LogQuery) -> Result<Vec<RpcLog>, BackendError> {
        let Some((left, moved_at)) = self.left(chain) else {
            return self.of(chain)?.logs(chain, query);
        };
        let mut logs = Vec::new();
        if query.from_block < moved_at {
            let before = LogQuery {
                to_block: query.to_block.min(moved_at - 1),
                ..query.clone()
            };
            logs = left.logs(chain, &before)?;
        }
        if query.to_block >= moved_at && logs.len() < query.limit {
            let after = LogQuery {
                from_block: query.from_block.max(moved_at),
                limit: query.limit - logs.len(),
                ..query.clone()
            };
            logs.extend(self.of(chain)?.logs(chain, &after)?);
        }
        Ok(logs)
    }

    fn gas_price(&self, chain: ChainId) -> Result<u128, BackendError> {
        self.of(chain)?.gas_price(chain)
    }

    fn max_priority_fee(&self, chain: ChainId) -> Result<u128, BackendError> {
        self.of(chain)?.max_priority_fee(chain)
    }

    fn fee_history(
        &self,
        chain: ChainId,
        block_count: u64,
        newest: u64,
        percentiles: &[f64],
    ) -> Result<RpcFeeHistory, BackendError> {
        self.at_number(chain, newest)?
            .fee_history(chain, block_count, newest, percentiles)
    }

    fn syncing(&self, chain: ChainId) -> Result<Option<SyncProgress>, BackendError> {
        self.of(chain)?.syncing(chain)
    }

    fn peer_count(&self) -> u64 {
        self.regions.iter().map(|r| r.peer_count()).sum()
    }

    fn servicechains(&self, chain: ChainId) -> Result<Value, BackendError> {
        self.of(chain)?.servicechains(chain)
    }

    fn regions(&self) -> Result<Value, BackendError> {
        self.regions
            .iter()
            .map(|r| r.region_summary())
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    fn checkpoint_proof(
        &self,
        chain: ChainId,
        block_hash: B256,
    ) -> Result<Option<Value>, BackendError> {
        self.with_history(chain, |r| r.checkpoint_proof(chain, block_hash))
    }

    fn evidence(
        &self,
        chain: ChainId,
        from_height: u64,
        limit: usize,
    ) -> Result<Value, BackendError> {
        self.of(chain)?.evidence(chain, from_height, limit)
    }

    fn pop_state(&self, chain: ChainId, rn: Option<Address>) -> Result<Value, BackendError> {
        self.of(chain)?.pop_state(chain, rn)
    }

    fn por_work(&self, chain: ChainId) -> Result<Value, BackendError> {
        self.of(chain)?.por_work(chain)
    }

    fn submit_share(
        &self,
        chain: ChainId,
        height: u64,
        miner: Address,
        counter: u64,
    ) -> Result<Value, BackendError> {
        self.of(chain)?.submit_share(chain, height, miner, counter)
    }

    fn adoption(&self, chain: ChainId, chunk: Option<u64>) -> Result<Option<Value>, BackendError> {
        match self.regions.iter().find(|r| r.moved(chain).is_some()) {
            Some(source) => source.adoption(chain, chunk),
            None => Ok(None),
        }
    }

    fn send_system_transaction(&self, chain: ChainId, raw: Bytes) -> Result<Value, BackendError> {
        self.of(chain)?.send_system_transaction(chain, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_refusal_is_final_only_when_it_can_never_be_taken() {
        let outcome = |message: &str| remote_outcome(&format!("eth_sendRawTransaction: {message}"));
        assert_eq!(outcome("already known"), HandedOn::Taken);
        for later in [
            "unknown chain 1001",
            "chain 1001 moved to region 1001000",
            "insufficient funds for gas * price + value: have 0 want 1",
            "txpool is full",
        ] {
            assert_eq!(outcome(later), HandedOn::Later, "{later}");
        }
        let unreachable = "eth_sendRawTransaction to http://127.0.0.1:9/chain/1001: io: refused";
        assert_eq!(remote_outcome(unreachable), HandedOn::Later);
        for busy in [
            "busy: 16 requests are being forwarded; try again",
            "request timed out",
            "state backend: closed",
        ] {
            assert_eq!(outcome(busy), HandedOn::Later, "{busy}");
        }
        let html = "eth_sendRawTransaction: the answer is not JSON";
        assert_eq!(remote_outcome(html), HandedOn::Later);
        for refused in [
            "nonce too low: next nonce 2, tx nonce 1",
            "replacement transaction underpriced",
            "intrinsic gas too low: gas 1, minimum needed 21000",
        ] {
            assert_eq!(outcome(refused), HandedOn::Refused, "{refused}");
        }
    }
}
