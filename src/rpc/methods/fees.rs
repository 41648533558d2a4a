//! Fee suggestions and history.

use super::chain::{head, tag_number};
use super::{Cx, MethodResult};
use crate::rpc::error::RpcError;
use crate::rpc::json::{self, Quantity};
use crate::rpc::jsonrpc::to_raw;
use crate::rpc::params::{BlockTag, CountArg, Params};
use crate::rpc::types::RpcFeeHistory;

/// Most reward percentiles one `eth_feeHistory` may ask for.
const MAX_PERCENTILES: usize = 100;

pub(super) fn gas_price(cx: &Cx<'_>) -> MethodResult {
    to_raw(&Quantity(cx.shared.backend.gas_price(cx.chain)?))
}

pub(super) fn max_priority_fee(cx: &Cx<'_>) -> MethodResult {
    to_raw(&Quantity(cx.shared.backend.max_priority_fee(cx.chain)?))
}

/// `eth_feeHistory(blockCount, newestBlock, rewardPercentiles?)`, clamped to the chain and to
/// the configured block cap as geth does.
pub(super) fn fee_history(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let CountArg(count) = p.required(0)?;
    let newest_tag: BlockTag = p.required(1)?;
    let percentiles: Vec<f64> = p.optional(2)?.unwrap_or_default();
    check_percentiles(&percentiles)?;
    if count == 0 {
        let empty = RpcFeeHistory {
            oldest_block: 0,
            base_fee_per_gas: Vec::new(),
            gas_used_ratio: Vec::new(),
            reward: None,
        };
        return to_raw(&json::fee_history(&empty));
    }
    let head = head(cx)?;
    let newest = tag_number(cx, newest_tag)?;
    if newest > head {
        return Err(RpcError::server(format!(
            "request beyond head block: requested {newest}, head {head}"
        )));
    }
    let count = count
        .min(cx.shared.config.max_fee_history_blocks.max(1))
        .min(newest + 1);
    let history = cx
        .shared
        .backend
        .fee_history(cx.chain, count, newest, &percentiles)?;
    to_raw(&json::fee_history(&history))
}

fn check_percentiles(percentiles: &[f64]) -> Result<(), RpcError> {
    if percentiles.len() > MAX_PERCENTILES {
        return Err(RpcError::invalid_params(format!(
            "too many reward percentiles: {}, the limit is {MAX_PERCENTILES}",
            percentiles.len()
        )));
    }
    let mut previous = 0.0;
    for (i, &pct) in percentiles.iter().enumerate() {
        if !(0.0..=100.0).contains(&pct) || pct < previous {
            return Err(RpcError::invalid_params(format!(
                "invalid reward percentile #{i}: {pct}"
            )));
        }
        previous = pct;
    }
    Ok(())
}
