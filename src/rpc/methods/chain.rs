//! Blocks, transactions, receipts and logs.

use super::{Cx, MethodResult};
use crate::rpc::backend::{LogFilter, LogQuery};
use crate::rpc::error::{RpcError, LIMIT_EXCEEDED};
use crate::rpc::json::{self, Quantity};
use crate::rpc::jsonrpc::to_raw;
use crate::rpc::params::{BlockId, BlockTag, FilterArgs, Params, U64Arg};
use crate::rpc::types::{BlockTransactions, RpcBlock};
use alloy_primitives::B256;

/// The newest block number of the routed chain.
pub(super) fn head(cx: &Cx<'_>) -> Result<u64, RpcError> {
    Ok(cx.shared.backend.head(cx.chain)?)
}

/// The number a tag names; `latest`, `safe`, `finalized` and `pending` are all the head
/// (finality is instant and the pending block is not built ahead).
pub(super) fn tag_number(cx: &Cx<'_>, tag: BlockTag) -> Result<u64, RpcError> {
    match tag {
        BlockTag::Earliest => Ok(0),
        BlockTag::Number(n) => Ok(n),
        BlockTag::Latest | BlockTag::Safe | BlockTag::Finalized | BlockTag::Pending => head(cx),
    }
}

pub(super) fn block_number(cx: &Cx<'_>) -> MethodResult {
    to_raw(&Quantity(head(cx)?.into()))
}

pub(super) fn syncing(cx: &Cx<'_>) -> MethodResult {
    match cx.shared.backend.syncing(cx.chain)? {
        None => to_raw(&false),
        Some(progress) => to_raw(&json::sync_progress(&progress)),
    }
}

fn block_json(block: Option<RpcBlock>) -> MethodResult {
    match block {
        Some(b) => to_raw(&json::block(&b, true)),
        None => to_raw(&()),
    }
}

fn by_number(cx: &Cx<'_>, p: &Params<'_>, full: bool) -> Result<Option<RpcBlock>, RpcError> {
    let number = tag_number(cx, p.required(0)?)?;
    Ok(cx.shared.backend.block_by_number(cx.chain, number, full)?)
}

fn by_hash(cx: &Cx<'_>, p: &Params<'_>, full: bool) -> Result<Option<RpcBlock>, RpcError> {
    let hash: B256 = p.required(0)?;
    Ok(cx.shared.backend.block_by_hash(cx.chain, hash, full)?)
}

fn full_flag(p: &Params<'_>) -> Result<bool, RpcError> {
    Ok(p.optional(1)?.unwrap_or(false))
}

pub(super) fn block_by_number(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    block_json(by_number(cx, p, full_flag(p)?)?)
}

pub(super) fn block_by_hash(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    block_json(by_hash(cx, p, full_flag(p)?)?)
}

fn tx_count(block: Option<RpcBlock>) -> MethodResult {
    match block {
        Some(b) => to_raw(&Quantity(b.transactions.len() as u128)),
        None => to_raw(&()),
    }
}

pub(super) fn tx_count_by_number(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    tx_count(by_number(cx, p, false)?)
}

pub(super) fn tx_count_by_hash(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    tx_count(by_hash(cx, p, false)?)
}

/// The block an EIP-1898 id names (a number, a tag or a hash).
fn by_id(cx: &Cx<'_>, id: BlockId, full: bool) -> Result<Option<RpcBlock>, RpcError> {
    Ok(match id {
        BlockId::Tag(tag) => {
            let number = tag_number(cx, tag)?;
            cx.shared.backend.block_by_number(cx.chain, number, full)?
        }
        BlockId::Hash(hash) => cx.shared.backend.block_by_hash(cx.chain, hash, full)?,
    })
}

/// The transaction at argument 1's index of `block` (`null` for an unknown block or index):
/// found by its hash, so only that transaction's sender is recovered.
fn transaction_at(cx: &Cx<'_>, block: Option<RpcBlock>, p: &Params<'_>) -> MethodResult {
    let U64Arg(index) = p.required(1)?;
    let hash = match block.map(|b| b.transactions) {
        Some(BlockTransactions::Hashes(hashes)) => usize::try_from(index)
            .ok()
            .and_then(|i| hashes.get(i).copied()),
        Some(BlockTransactions::Full(txs)) => usize::try_from(index)
            .ok()
            .and_then(|i| txs.get(i).map(|t| t.tx.hash())),
        None => None,
    };
    match hash {
        Some(hash) => match cx.shared.backend.transaction(cx.chain, hash)? {
            Some(t) => to_raw(&json::transaction(&t)),
            None => to_raw(&()),
        },
        None => to_raw(&()),
    }
}

pub(super) fn transaction_by_number_and_index(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    transaction_at(cx, by_number(cx, p, false)?, p)
}

pub(super) fn transaction_by_hash_and_index(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    transaction_at(cx, by_hash(cx, p, false)?, p)
}

/// `eth_getBlockReceipts(blockId)`: every receipt of the block in order, `null` for an
/// unknown block.
pub(super) fn block_receipts(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let Some(block) = by_id(cx, p.required(0)?, false)? else {
        return to_raw(&());
    };
    match cx.shared.backend.block_receipts(cx.chain, block.number)? {
        Some(receipts) => {
            let encoded: Vec<_> = receipts.iter().map(json::receipt).collect();
            to_raw(&encoded)
        }
        None => to_raw(&()),
    }
}

/// Kaon blocks have no uncles: 0 for a known block, `null` for an unknown one (as geth).
fn uncle_count(block: Option<RpcBlock>) -> MethodResult {
    match block {
        Some(_) => to_raw(&Quantity(0)),
        None => to_raw(&()),
    }
}

pub(super) fn uncle_count_by_number(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    uncle_count(by_number(cx, p, false)?)
}

pub(super) fn uncle_count_by_hash(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    uncle_count(by_hash(cx, p, false)?)
}

/// There is never an uncle at any index: `null`, once the arguments parse.
pub(super) fn uncle(p: &Params<'_>) -> MethodResult {
    let _: serde_json::Value = p.required(0)?;
    let U64Arg(_) = p.required(1)?;
    to_raw(&())
}

pub(super) fn transaction(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    match cx.shared.backend.transaction(cx.chain, p.required(0)?)? {
        Some(t) => to_raw(&json::transaction(&t)),
        None => to_raw(&()),
    }
}

pub(super) fn receipt(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    match cx.shared.backend.receipt(cx.chain, p.required(0)?)? {
        Some(r) => to_raw(&json::receipt(&r)),
        None => to_raw(&()),
    }
}

/// `eth_getLogs`: the range is resolved against the head and capped.
pub(super) fn logs(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let args: FilterArgs = p.required(0)?;
    let filter = args.log_filter()?;
    match log_range(cx, &args)? {
        Some((from, to)) => logs_json(cx, from, to, filter),
        None => to_raw(&[(); 0]),
    }
}

/// The logs of blocks `from..=to` passing `filter`, as JSON. The backend is asked for one log
/// more than the cap, so an over-wide answer is an error, never a silent cut.
pub(super) fn logs_json(cx: &Cx<'_>, from: u64, to: u64, filter: LogFilter) -> MethodResult {
    let max_logs = cx.shared.config.max_logs;
    let query = LogQuery {
        from_block: from,
        to_block: to,
        filter,
        limit: max_logs.saturating_add(1),
    };
    let logs = cx.shared.backend.logs(cx.chain, &query)?;
    if logs.len() > max_logs {
        return Err(RpcError::new(
            LIMIT_EXCEEDED,
            format!("query returned more than {max_logs} results"),
        ));
    }
    let encoded: Vec<_> = logs.iter().map(json::log).collect();
    to_raw(&encoded)
}

/// The inclusive block range of a filter; `None` when it lies wholly beyond the head.
pub(super) fn log_range(cx: &Cx<'_>, args: &FilterArgs) -> Result<Option<(u64, u64)>, RpcError> {
    if let Some(hash) = args.block_hash {
        if args.from_block.is_some() || args.to_block.is_some() {
            return Err(RpcError::invalid_params(
                "cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other",
            ));
        }
        let block = cx
            .shared
            .backend
            .block_by_hash(cx.chain, hash, false)?
            .ok_or_else(|| RpcError::server("unknown block"))?;
        return Ok(Some((block.number, block.number)));
    }
    let head = head(cx)?;
    let resolve = |tag: Option<BlockTag>| match tag {
        None => head,
        Some(BlockTag::Number(n)) => n,
        Some(BlockTag::Earliest) => 0,
        Some(_) => head,
    };
    let from = resolve(args.from_block);
    let to = resolve(args.to_block).min(head);
    if from > head {
        return Ok(None);
    }
    if from > to {
        return Err(RpcError::invalid_params("invalid block range params"));
    }
    let width = to - from + 1;
    let max = cx.shared.config.max_log_block_range;
    if width > max {
        return Err(RpcError::new(
            LIMIT_EXCEEDED,
            format!("block range too large: {width} blocks, the limit is {max}"),
        ));
    }
    Ok(Some((from, to)))
}

/// `lo..=hi` narrowed by a filter's explicit block numbers (tags such as `latest` bound
/// nothing for a polling filter, as in geth); `None` if nothing is left.
pub(super) fn log_range_within(
    from: Option<BlockTag>,
    to: Option<BlockTag>,
    lo: u64,
    hi: u64,
) -> Option<(u64, u64)> {
    let lo = match from {
        Some(BlockTag::Number(n)) => lo.max(n),
        _ => lo,
    };
    let hi = match to {
        Some(BlockTag::Number(n)) => hi.min(n),
        _ => hi,
    };
    (lo <= hi).then_some((lo, hi))
}
