//! Polling filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_getFilterChanges`,
//! `eth_getFilterLogs`, `eth_uninstallFilter`): what ethers' `contract.on` and viem's
//! `watchContractEvent` use over HTTP. A filter is a cursor (the last block it delivered) kept
//! on the server, never a buffer: changes are read from the chain when polled, so a filter
//! costs the same whether it is polled every second or once a minute. Filters are bounded in
//! number and expire when not polled for the filter timeout, as geth's do.

use super::chain::{head, log_range_within, logs_json};
use super::{Cx, MethodResult};
use crate::rpc::backend::LogFilter;
use crate::rpc::error::{RpcError, LIMIT_EXCEEDED};
use crate::rpc::json::{hex_data, Data};
use crate::rpc::jsonrpc::to_raw;
use crate::rpc::params::{BlockTag, FilterArgs, Params};
use crate::types::ChainId;
use std::collections::HashMap;
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
}

impl Filters {
    pub(crate) fn new(max: usize, timeout: Duration) -> Self {
        Self {
            max,
            timeout,
            installed: Mutex::new(HashMap::new()),
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
        let id = hex_data(&rand::random::<[u8; 16]>());
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
    install(cx, kind)
}

pub(super) fn new_block_filter(cx: &Cx<'_>) -> MethodResult {
    install(cx, Kind::Blocks)
}

fn install(cx: &Cx<'_>, kind: Kind) -> MethodResult {
    let filter = Filter {
        chain: cx.chain,
        kind,
        cursor: head(cx)?,
        last_poll: Instant::now(),
    };
    to_raw(&cx.shared.filters.install(filter)?)
}

pub(super) fn uninstall(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let id: String = p.required(0)?;
    to_raw(&cx.shared.filters.remove(cx.chain, &id))
}

/// What happened since the last poll: new block hashes, or new matching logs.
pub(super) fn changes(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let id: String = p.required(0)?;
    let filter = cx.shared.filters.touch(cx.chain, &id)?;
    let head = head(cx)?;
    if head <= filter.cursor {
        return to_raw(&[(); 0]);
    }
    match &filter.kind {
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
