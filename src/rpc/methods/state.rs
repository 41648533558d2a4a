//! Account state, calls, gas estimation and transaction submission.

use super::chain::head;
use super::{Cx, MethodResult};
use crate::crypto::tx::{DecodeRules, SignedTransaction};
use crate::rpc::backend::{CallRequest, StateAt};
use crate::rpc::error::RpcError;
use crate::rpc::json::{self, BigQuantity, Data, Quantity};
use crate::rpc::jsonrpc::to_raw;
use crate::rpc::params::{BlockId, BlockTag, CallArgs, Params, SlotArg};
use alloy_primitives::{Address, Bytes};
use std::cmp::Ordering;

/// The state a block id names. Missing means `latest`; a number equal to the head is the
/// latest state; older numbers are historical (the backend may refuse them).
fn state_at(cx: &Cx<'_>, id: Option<BlockId>) -> Result<StateAt, RpcError> {
    let number = match id.unwrap_or(BlockId::Tag(BlockTag::Latest)) {
        BlockId::Tag(BlockTag::Latest | BlockTag::Safe | BlockTag::Finalized) => {
            return Ok(StateAt::Latest)
        }
        BlockId::Tag(BlockTag::Pending) => return Ok(StateAt::Pending),
        BlockId::Tag(BlockTag::Earliest) => 0,
        BlockId::Tag(BlockTag::Number(n)) => n,
        BlockId::Hash(hash) => {
            cx.shared
                .backend
                .block_by_hash(cx.chain, hash, false)?
                .ok_or_else(|| RpcError::server("header for hash not found"))?
                .number
        }
    };
    match number.cmp(&head(cx)?) {
        Ordering::Equal => Ok(StateAt::Latest),
        Ordering::Less => Ok(StateAt::Historical(number)),
        Ordering::Greater => Err(RpcError::server("header not found")),
    }
}

/// `(address, block?)`, the parameters of the account reads.
fn account_params(cx: &Cx<'_>, p: &Params<'_>) -> Result<(Address, StateAt), RpcError> {
    Ok((p.required(0)?, state_at(cx, p.optional(1)?)?))
}

pub(super) fn balance(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (address, at) = account_params(cx, p)?;
    to_raw(&BigQuantity(
        cx.shared.backend.balance(cx.chain, address, at)?,
    ))
}

pub(super) fn nonce(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (address, at) = account_params(cx, p)?;
    to_raw(&Quantity(
        cx.shared.backend.nonce(cx.chain, address, at)?.into(),
    ))
}

pub(super) fn code(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (address, at) = account_params(cx, p)?;
    to_raw(&Data(&cx.shared.backend.code(cx.chain, address, at)?))
}

pub(super) fn storage(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let address: Address = p.required(0)?;
    let SlotArg(slot) = p.required(1)?;
    let at = state_at(cx, p.optional(2)?)?;
    let value = cx.shared.backend.storage(cx.chain, address, slot, at)?;
    to_raw(&Data(value.as_slice()))
}

/// `(request, block?, overrides?)`, the parameters of `eth_call` and `eth_estimateGas`.
fn call_params(cx: &Cx<'_>, p: &Params<'_>) -> Result<(CallRequest, StateAt), RpcError> {
    let args: CallArgs = p.required(0)?;
    let at = state_at(cx, p.optional(1)?)?;
    if p.has(2) {
        return Err(RpcError::invalid_params(
            "state overrides are not supported",
        ));
    }
    Ok((call_request(cx, &args)?, at))
}

/// Checks a call object and caps its gas.
fn call_request(cx: &Cx<'_>, args: &CallArgs) -> Result<CallRequest, RpcError> {
    if let Some(id) = args.chain_id {
        if id.0 != cx.chain.get() {
            return Err(RpcError::server(format!(
                "invalid chain id {}, expected {}",
                id.0, cx.chain
            )));
        }
    }
    if args.gas_price.is_some()
        && (args.max_fee_per_gas.is_some() || args.max_priority_fee_per_gas.is_some())
    {
        return Err(RpcError::invalid_params(
            "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) specified",
        ));
    }
    let cap = cx.shared.config.gas_cap;
    Ok(CallRequest {
        from: args.from,
        to: args.to,
        gas: args.gas.map_or(cap, |g| g.0.min(cap)),
        gas_price: args.gas_price.map(|g| g.0),
        max_fee_per_gas: args.max_fee_per_gas.map(|g| g.0),
        max_priority_fee_per_gas: args.max_priority_fee_per_gas.map(|g| g.0),
        value: args.value.map(|v| v.0).unwrap_or_default(),
        input: args.call_data()?,
        nonce: args.nonce.map(|n| n.0),
        access_list: args.access_list(),
    })
}

pub(super) fn call(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (request, at) = call_params(cx, p)?;
    to_raw(&Data(&cx.shared.backend.call(cx.chain, &request, at)?))
}

pub(super) fn estimate_gas(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (request, at) = call_params(cx, p)?;
    let gas = cx.shared.backend.estimate_gas(cx.chain, &request, at)?;
    to_raw(&Quantity(gas.into()))
}

pub(super) fn create_access_list(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let (request, at) = call_params(cx, p)?;
    let answer = cx
        .shared
        .backend
        .create_access_list(cx.chain, &request, at)?;
    to_raw(&json::access_list_result(&answer))
}

/// Decodes (with the transaction size limit), checks the chain id against the routed chain,
/// and submits.
pub(super) fn send_raw_transaction(cx: &Cx<'_>, p: &Params<'_>) -> MethodResult {
    let raw: Bytes = p.required(0)?;
    let tx = SignedTransaction::decode_bytes(raw, &DecodeRules::default())?;
    if tx.chain_id() != Some(cx.chain) {
        let have = tx.chain_id().map_or(0, |c| c.get());
        return Err(RpcError::server(format!(
            "invalid chain id for signer: have {have} want {}",
            cx.chain
        )));
    }
    let hash = cx.shared.backend.send_raw_transaction(cx.chain, tx)?;
    cx.shared.filters.accepted(cx.chain, hash);
    to_raw(&Data(hash.as_slice()))
}
