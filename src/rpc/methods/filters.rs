//! Polling filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`): what ethers'
//! `contract.on` and viem's `watchContractEvent` use over HTTP. A filter is a cursor (the last
//! block it delivered) kept on the server, never a buffer: changes are read from the chain when
//! polled, so a filter costs the same whether it is polled every second or once a minute.
//! Filters are bounded in number and expire when not polled for the filter timeout, as geth's
//! do.
//!
//! Pending-transaction filters are cursors too, into one bounded window per chain of the
//! hashes this server's `eth_sendRawTransaction` accepted, numbered in order: a filter polled
//! after more than the window's worth of acceptances has lost the oldest of them.

use super::chain::{head, log_range_within, logs_json};
use super::{Cx, MethodResult};
use crate::rpc::backend::LogFilter;
use crate::rpc::error::{RpcError, LIMIT_EXCEEDED};
use crate::rpc::json::{random_id, Data};
use crate::rpc::jsonrpc::to_raw;
use crate::rpc::params::{BlockTag, FilterArgs, Params};
use crate::types::ChainId;
use alloy_primitives::B256;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most block hashes one `eth_getFilterChanges` of a block filter returns; a filter further
/// behind catches up over several polls.
const MAX_BLOCK_HASHES_PER_POLL: u64 = 1024;

/// What a filter reports.
#[derive(Debug, Clone)]
enum Kind {
    /// Logs passing `filter` in blocks within `[from, to]` (bounds as the client gave them).
    Logs {
        filter: LogFilter,
        from: Option<BlockTag>,
        to: Option<BlockTag>,
    },
    /// Hashes of new blocks.
    Blocks,
    /// Transactions accepted since the last poll: hashes, or whole transactions (`fullTx`).
    Pending { full: bool },
}

/// The hashes of one chain's accepted transactions, the newest `max`, numbered from 0 in
/// order of acceptance.
#[derive(Debug, Default)]
struct Accepted {
    /// Number of `hashes[0]`.
    first: u64,
    hashes: VecDeque<B256>,
}

impl Accepted {
    /// The number the next accepted transaction gets.
    fn end(&self) -> u64 {
        self.first + self.hashes.len() as u64
    }

    fn push(&mut self, hash: B256, max: usize) {
        while self.hashes.len() >= max {
            self.hashes.pop_front();
            self.first += 1;
        }
        self.hashes.push_back(hash);
    }

    /// Hashes numbered `cursor` and after (from the oldest kept, if older ones were dropped).
    fn since(&self, cursor: u64) -> Vec<B256> {
        let skip = usize::try_from(cursor.saturating_sub(self.first)).unwrap_or(usize::MAX);
        self.hashes.iter().skip(skip).copied().collect()
    }
}

#[derive(Debug, Clone)]
struct Filter {
    chain: ChainId,
    kind: Kind,
    /// The last block whose changes were delivered.
    cursor: u64,
    last_poll: Instant,
}

/// Every installed filter of the server.
pub(crate) struct Filters {
    max: usize,
    timeout: Duration,
    installed: Mutex<HashMap<String, Filter>>,
    /// Most hashes kept per chain for pending-transaction filters.
    max_pending: usize,
    accepted: Mutex<HashMap<ChainId, Accepted>>,
}

impl Filters {
    pub(crate) fn new(max: usize, timeout: Duration, max_pending: usize) -> Self {
        Self {
            max,
            timeout,
            installed: Mutex::new(HashMap::new()),
            max_pending: max_pending.max(1),
            accepted: Mutex::new(HashMap::new()),
        }
    }

    fn lock_accepted(&self) -> std::sync::MutexGuard<'_, HashMap<ChainId, Accepted>> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `chain` accepted the transaction `hash` (pending filters report it).
    pub(crate) fn accepted(&self, chain: ChainId, hash: B256) {
        self.lock_accepted()
            .entry(chain)
            .or_default()
            .push(hash, self.max_pending);
    }

    /// The number the next transaction accepted on `chain` gets.
    fn accepted_end(&self, chain: ChainId) -> u64 {
        self.lock_accepted().get(&chain).map_or(0, Accepted::end)
    }

    /// The hashes accepted since the cursor of pending filter `id`, moving the cursor past
    /// them in the same critical section: concurrent polls of one filter never both report
    /// a hash. Lock order: filters, then accepted hashes.
    fn take_accepted(&self, id: &str) -> Vec<B256> {
        let mut installed = self.lock();
        let Some(filter) = installed.get_mut(id) else {
            return Vec::new();
        };
        let accepted = self.lock_accepted();
        match accepted.get(&filter.chain) {
            Some(a) => {
                let hashes = a.since(filter.cursor);
                filter.cursor = a.end();
                hashes
            }
            None => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Filter>> {
        self.installed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn install(&self, filter: Filter) -> Result<String, RpcError> {
        let mut installed = self.lock();
        let timeout = self.timeout;
        installed.retain(|_, f| f.last_poll.elapsed() < timeout);
        if installed.len() >= self.max {
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!("too many filters: the limit is {}", self.max),
            ));
        }
        let id = random_id();
        installed.insert(id.clone(), filter);
        Ok(id)
    }

    /// The filter `id` of `chain`, marked as polled now.
    fn touch(&self, chain: ChainId, id: &str) -> Result<Filter, RpcError> {
        let mut installed = self.lock();
        match installed.get_mut(id) {
            Some(f) if f.chain == chain && f.last_poll.elapsed() < self.timeout => {
                f.last_poll = Instant::now();
                Ok(f.clone())
            }
            _ => Err(RpcError::server("filter not found")),
        }
    }

    /// Moves the cursor of `id` forward (never back: concurrent polls deliver each block once
    /// at least).
    fn advance(&self, id: &str, cursor: u64) {
        if let Some(f) = self.lock().get_mut(id) {
            f.cursor = f.cursor.max(cursor);
        }
    }

    fn remove(&self, chain: ChainId, id: &str) -> bool {
        let mut installed = self.lock();
        match installed.get(id) {
            Some(f) if f.chain == chain => installed.remove(id).is_some(),
            _ => false,
        }
    }
}

pub(super) fn new_filter(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let args: FilterArgs = p.required(0)?;
    if args.block_hash.is_some() {
        return Err(RpcError::invalid_params(
            "blockHash is not supported by eth_newFilter; use eth_getLogs",
        ));
    }
    let kind = Kind::Logs {
        filter: args.log_filter()?,
        from: args.from_block,
        to: args.to_block,
    };
    install(cx, kind, head(cx)?)
}

pub(super) fn new_block_filter(cx: &Cx<'_>) -> MethodResult {
    install(cx, Kind::Blocks, head(cx)?)
}

/// `eth_newPendingTransactionFilter(fullTx?)`: transactions accepted from now on.
pub(super) fn new_pending_transaction_filter(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let full = p.optional::<bool>(0)?.unwrap_or(false);
    let cursor = cx.shared.filters.accepted_end(cx.chain);
    install(cx, Kind::Pending { full }, cursor)
}

fn install(cx: &Cx<'_>, kind: Kind, cursor: u64) -> MethodResult {
    let filter = Filter {
        chain: cx.chain,
        kind,
        cursor,
        last_poll: Instant::now(),
    };
    to_raw(&cx.shared.filters.install(filter)?)
}

/// A pending filter's changes: what was accepted since its cursor, as hashes or as the
/// transactions (those the node no longer knows are left out).
fn pending_changes(cx: &Cx<'_>, id: &str, full: bool) -> MethodResult {
    let hashes = cx.shared.filters.take_accepted(id);
    if !full {
        let encoded: Vec<_> = hashes.iter().map(|h| Data(h.as_slice())).collect();
        return to_raw(&encoded);
    }
    let mut txs = Vec::with_capacity(hashes.len());
    for hash in hashes {
        if let Some(tx) = cx.shared.backend.transaction(cx.chain, hash)? {
            txs.push(tx);
        }
    }
    let encoded: Vec<_> = txs.iter().map(crate::rpc::json::transaction).collect();
    to_raw(&encoded)
}

pub(super) fn uninstall(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let id: String = p.required(0)?;
    to_raw(&cx.shared.filters.remove(cx.chain, &id))
}

/// What happened since the last poll: new block hashes, or new matching logs.
pub(super) fn changes(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let id: String = p.required(0)?;
    let filter = cx.shared.filters.touch(cx.chain, &id)?;
    if let Kind::Pending { full } = filter.kind {
        return pending_changes(cx, &id, full);
    }
    let head = head(cx)?;
    if head <= filter.cursor {
        return to_raw(&[(); 0]);
    }
    match &filter.kind {
        Kind::Pending { .. } => to_raw(&[(); 0]),
        Kind::Blocks => {
            let last = head.min(filter.cursor + MAX_BLOCK_HASHES_PER_POLL);
            let mut hashes = Vec::new();
            for number in filter.cursor + 1..=last {
                if let Some(block) = cx.shared.backend.block_by_number(cx.chain, number, false)? {
                    hashes.push(block.hash);
                }
            }
            cx.shared.filters.advance(&id, last);
            let encoded: Vec<_> = hashes.iter().map(|h| Data(h.as_slice())).collect();
            to_raw(&encoded)
        }
        Kind::Logs {
            filter: f,
            from,
            to,
        } => {
            let max = cx.shared.config.max_log_block_range.max(1);
            let last = head.min(filter.cursor.saturating_add(max));
            let range = log_range_within(*from, *to, filter.cursor + 1, last);
            let result = match range {
                Some((lo, hi)) => logs_json(cx, lo, hi, f.clone())?,
                None => to_raw(&[(); 0])?,
            };
            cx.shared.filters.advance(&id, last);
            Ok(result)
        }
    }
}

/// Every log the filter matches, like `eth_getLogs` with its criteria.
pub(super) fn logs(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let id: String = p.required(0)?;
    let filter = cx.shared.filters.touch(cx.chain, &id)?;
    let Kind::Logs {
        filter: f,
        from,
        to,
    } = filter.kind
    else {
        return Err(RpcError::server("filter not found"));
    };
    let args = FilterArgs {
        from_block: from,
        to_block: to,
        ..FilterArgs::default()
    };
    match super::chain::log_range(cx, &args)? {
        Some((lo, hi)) => logs_json(cx, lo, hi, f),
        None => to_raw(&[(); 0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_filter(filters: &Filters, chain: ChainId) -> String {
        let filter = Filter {
            chain,
            kind: Kind::Pending { full: false },
            cursor: filters.accepted_end(chain),
            last_poll: Instant::now(),
        };
        filters.install(filter).unwrap()
    }

    #[test]
    fn each_accepted_hash_is_reported_once_per_filter() {
        let filters = Filters::new(8, Duration::from_secs(60), 4);
        let chain = ChainId(1001);
        filters.accepted(chain, B256::repeat_byte(1));
        let id = pending_filter(&filters, chain);
        assert!(
            filters.take_accepted(&id).is_empty(),
            "only what comes after"
        );
        filters.accepted(chain, B256::repeat_byte(2));
        filters.accepted(ChainId(1002), B256::repeat_byte(9));
        filters.accepted(chain, B256::repeat_byte(3));
        let polls: Vec<Vec<B256>> = std::thread::scope(|s| {
            let polls: Vec<_> = (0..4)
                .map(|_| s.spawn(|| filters.take_accepted(&id)))
                .collect();
            polls.into_iter().map(|p| p.join().unwrap()).collect()
        });
        let mut seen: Vec<B256> = polls.into_iter().flatten().collect();
        seen.sort();
        assert_eq!(seen, vec![B256::repeat_byte(2), B256::repeat_byte(3)]);
    }

    #[test]
    fn a_pending_filter_that_fell_behind_resumes_at_the_oldest_kept_hash() {
        let filters = Filters::new(8, Duration::from_secs(60), 2);
        let chain = ChainId(1001);
        let id = pending_filter(&filters, chain);
        for b in 1..=5 {
            filters.accepted(chain, B256::repeat_byte(b));
        }
        let kept = vec![B256::repeat_byte(4), B256::repeat_byte(5)];
        assert_eq!(filters.take_accepted(&id), kept);
        assert!(filters.take_accepted("0xunknown").is_empty());
    }
}
