//! Read-only execution for JSON-RPC: `eth_call` and `eth_estimateGas` against committed state.
//! Nothing is written. As in geth, a request without a fee runs with a zero gas price and a
//! zero base fee, so it needs no balance for gas; the nonce is not checked.

use super::evm::{block_env, build_evm, finish_evm, transact, Ran, SegmentDb};
use super::receipt::{Halt, InvalidReason, Log, TxOutcome};
use super::state::{StateError, StateRead};
use super::{BlockContext, EvmExecutor};
use crate::crypto::tx::{AccessList, TxKind};
use crate::types::ChainId;
use alloy_primitives::{Address, Bytes, U256};
use revm::context::{BlockEnv, TxEnv};

/// Gas a call with value always forwards (EIP-150 stipend); estimates start above it.
const CALL_STIPEND: u64 = 2_300;

/// A call as `eth_call`/`eth_estimateGas` describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRequest {
    /// Caller; the zero address when absent.
    pub from: Option<Address>,
    /// Callee; contract creation (with `input` as init code) when absent.
    pub to: Option<Address>,
    /// Gas limit; the segment gas limit when absent (and never above it).
    pub gas: Option<u64>,
    /// Legacy gas price.
    pub gas_price: Option<u128>,
    /// EIP-1559 fee cap (takes precedence over `gas_price`).
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub value: Option<U256>,
    pub input: Bytes,
    pub nonce: Option<u64>,
    /// EIP-2930 access list (warms the listed accounts and slots).
    pub access_list: AccessList,
}

impl CallRequest {
    /// The fee cap per gas the request offers, if it offers one.
    fn fee_cap(&self) -> Option<u128> {
        self.max_fee_per_gas.or(self.gas_price)
    }
}

/// What a read-only call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub success: bool,
    pub outcome: TxOutcome,
    /// Return data on success, revert data on revert.
    pub output: Bytes,
    /// Gas the call would be charged (after refunds).
    pub gas_used: u64,
    pub logs: Vec<Log>,
    /// Why it failed, in words (`execution reverted: <message>`, the halt, or why it is
    /// invalid).
    pub reason: Option<String>,
}

impl CallOutcome {
    pub(super) fn from_run(run: Result<Ran, InvalidReason>) -> Self {
        match run {
            Ok(ran) => Self {
                success: ran.outcome.status(),
                outcome: ran.outcome,
                gas_used: ran.gas.tx_gas_used(),
                reason: failure_reason(ran.outcome, &ran.output),
                output: ran.output,
                logs: ran.logs,
            },
            Err(reason) => Self {
                success: false,
                outcome: TxOutcome::Invalid(reason),
                output: Bytes::new(),
                gas_used: 0,
                logs: Vec::new(),
                reason: Some(reason.to_string()),
            },
        }
    }
}

/// Why `eth_estimateGas` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{}", reason.as_deref().unwrap_or("execution reverted"))]
    Reverted {
        reason: Option<String>,
        output: Bytes,
    },
    #[error("execution halted: {0}")]
    Halted(Halt),
    #[error("invalid transaction: {0}")]
    Invalid(InvalidReason),
}

/// The words of a failure: the revert message when the data is `Error(string)` or
/// `Panic(uint256)`, else the kind of failure.
fn failure_reason(outcome: TxOutcome, output: &[u8]) -> Option<String> {
    match outcome {
        TxOutcome::Success => None,
        TxOutcome::Reverted => Some(match revert_reason(output) {
            Some(msg) => format!("execution reverted: {msg}"),
            None => "execution reverted".to_string(),
        }),
        TxOutcome::Halted(h) => Some(h.to_string()),
        TxOutcome::Invalid(r) => Some(r.to_string()),
    }
}

/// The reason in revert data: the message of Solidity's `Error(string)`, or for `Panic(uint256)`
/// `panic: <meaning> (0x..)` (`panic code 0x..` for a code Solidity does not define); `None`
/// for anything else, including truncated data and offsets that
/// point outside it (the data comes from arbitrary contracts).
pub fn revert_reason(data: &[u8]) -> Option<String> {
    const ERROR: [u8; 4] = [0x08, 0xc3, 0x79, 0xa0];
    const PANIC: [u8; 4] = [0x4e, 0x48, 0x7b, 0x71];
    let (selector, args) = data.split_at_checked(4)?;
    let word = |i: usize| args.get(i * 32..(i + 1) * 32).map(U256::from_be_slice);
    match <[u8; 4]>::try_from(selector).ok()? {
        ERROR => {
            let offset = usize::try_from(word(0)?).ok()?;
            let len_at = offset.checked_add(32)?;
            let len = usize::try_from(U256::from_be_slice(args.get(offset..len_at)?)).ok()?;
            let text = args.get(len_at..len_at.checked_add(len)?)?;
            Some(String::from_utf8_lossy(text).into_owned())
        }
        PANIC => {
            let code = word(0)?;
            Some(match panic_meaning(code) {
                Some(meaning) => format!("panic: {meaning} ({code:#x})"),
                None => format!("panic code {code:#x}"),
            })
        }
        _ => None,
    }
}

/// What a Solidity `Panic(uint256)` code means, as the compiler documents it (the words
/// Foundry prints).
fn panic_meaning(code: U256) -> Option<&'static str> {
    Some(match u8::try_from(code).ok()? {
        0x00 => "generic/unspecified error",
        0x01 => "assertion failed",
        0x11 => "arithmetic underflow or overflow",
        0x12 => "division or modulo by zero",
        0x21 => "enum overflow",
        0x22 => "invalid encoded storage byte array accessed",
        0x31 => "out-of-bounds array access; popping on an empty array",
        0x32 => "out-of-bounds access of an array or bytesN",
        0x41 => "out of memory",
        0x51 => "uninitialized function",
        _ => return None,
    })
}

impl EvmExecutor {
    /// Runs `req` on `chain` in block `ctx` over `state` without changing anything.
    pub fn call(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        chain: ChainId,
        req: &CallRequest,
    ) -> Result<CallOutcome, StateError> {
        let gas = req.gas.unwrap_or(ctx.gas_limit).min(ctx.gas_limit);
        Ok(CallOutcome::from_run(simulate(
            state, ctx, chain, req, gas,
        )?))
    }

    /// The smallest gas limit with which `req` succeeds (binary search, starting from the gas
    /// it spends with the most gas it may have, plus the 63/64 margin of nested calls).
    pub fn estimate_gas(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        chain: ChainId,
        req: &CallRequest,
    ) -> Result<u64, EstimateError> {
        let mut hi = req.gas.unwrap_or(ctx.gas_limit).min(ctx.gas_limit);
        if let (Some(from), Some(price)) = (req.from, req.fee_cap().filter(|p| *p > 0)) {
            let balance = state
                .account(chain, &from)?
                .map_or(U256::ZERO, |a| a.balance);
            let allowance =
                balance.saturating_sub(req.value.unwrap_or_default()) / U256::from(price);
            hi = hi.min(allowance.saturating_to::<u64>());
        }
        let ran = match simulate(state, ctx, chain, req, hi)? {
            Ok(ran) if ran.outcome == TxOutcome::Success => ran,
            Ok(ran) => return Err(estimate_failure(ran)),
            Err(reason) => return Err(EstimateError::Invalid(reason)),
        };
        let succeeds = |gas: u64| -> Result<bool, StateError> {
            Ok(matches!(simulate(state, ctx, chain, req, gas)?,
                Ok(ran) if ran.outcome == TxOutcome::Success))
        };
        let spent = ran.gas.total_gas_spent();
        let mut lo = spent.saturating_sub(1);
        let optimistic = spent.saturating_add(CALL_STIPEND).saturating_mul(64) / 63;
        if optimistic < hi {
            match succeeds(optimistic)? {
                true => hi = optimistic,
                false => lo = optimistic,
            }
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            match succeeds(mid)? {
                true => hi = mid,
                false => lo = mid,
            }
        }
        Ok(hi)
    }
}

fn estimate_failure(ran: Ran) -> EstimateError {
    match ran.outcome {
        TxOutcome::Halted(h) => EstimateError::Halted(h),
        outcome => EstimateError::Reverted {
            reason: failure_reason(outcome, &ran.output),
            output: ran.output,
        },
    }
}

/// Runs `req` with `gas_limit` on a throwaway view of `state`.
fn simulate(
    state: &dyn StateRead,
    ctx: &BlockContext,
    chain: ChainId,
    req: &CallRequest,
    gas_limit: u64,
) -> Result<Result<Ran, InvalidReason>, StateError> {
    let (block, env) = call_env(ctx, chain, req, gas_limit);
    let db = SegmentDb::new(chain, state, ctx);
    let mut evm = build_evm(db, chain, block);
    evm.ctx.cfg.disable_nonce_check = true;
    let ran = transact(&mut evm, env);
    finish_evm(evm);
    Ok(ran?.map(|(ran, _)| ran))
}

/// The block and transaction a read-only run of `req` with `gas_limit` sees (a request without
/// a fee runs at a zero base fee).
pub(super) fn call_env(
    ctx: &BlockContext,
    chain: ChainId,
    req: &CallRequest,
    gas_limit: u64,
) -> (BlockEnv, TxEnv) {
    let mut block = block_env(ctx, chain);
    if req.fee_cap().is_none() {
        block.basefee = 0;
    }
    let dynamic = req.max_fee_per_gas.is_some();
    let tx_type = match (dynamic, req.access_list.0.is_empty()) {
        (true, _) => 2,
        (false, false) => 1,
        (false, true) => 0,
    };
    let env = TxEnv {
        tx_type,
        caller: req.from.unwrap_or(Address::ZERO),
        gas_limit,
        gas_price: req.fee_cap().unwrap_or(0),
        kind: req.to.map_or(TxKind::Create, TxKind::Call),
        value: req.value.unwrap_or_default(),
        data: req.input.clone(),
        nonce: req.nonce.unwrap_or(0),
        chain_id: Some(chain.0),
        access_list: req.access_list.clone(),
        gas_priority_fee: dynamic.then(|| req.max_priority_fee_per_gas.unwrap_or(0)),
        ..TxEnv::default()
    };
    (block, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_reasons_decode_and_garbage_does_not() {
        let mut error = vec![0x08, 0xc3, 0x79, 0xa0];
        error.extend_from_slice(&U256::from(32).to_be_bytes::<32>());
        error.extend_from_slice(&U256::from(5).to_be_bytes::<32>());
        error.extend_from_slice(b"hello");
        error.extend_from_slice(&[0; 27]);
        assert_eq!(revert_reason(&error).as_deref(), Some("hello"));
        let mut panic = vec![0x4e, 0x48, 0x7b, 0x71];
        panic.extend_from_slice(&U256::from(0x11).to_be_bytes::<32>());
        assert_eq!(
            revert_reason(&panic).as_deref(),
            Some("panic: arithmetic underflow or overflow (0x11)")
        );
        let mut unknown = vec![0x4e, 0x48, 0x7b, 0x71];
        unknown.extend_from_slice(&U256::from(0x99).to_be_bytes::<32>());
        assert_eq!(revert_reason(&unknown).as_deref(), Some("panic code 0x99"));
        assert_eq!(revert_reason(&error[..40]), None);
        let mut huge = error.clone();
        huge[4..36].copy_from_slice(&U256::MAX.to_be_bytes::<32>());
        assert_eq!(revert_reason(&huge), None);
        assert_eq!(revert_reason(&[1, 2]), None);
    }

    #[test]
    fn revert_reason_rejects_every_truncation_and_foreign_selectors() {
        let mut full = vec![0x08, 0xc3, 0x79, 0xa0];
        full.extend_from_slice(&U256::from(32).to_be_bytes::<32>());
        full.extend_from_slice(&U256::from(3).to_be_bytes::<32>());
        full.extend_from_slice(b"abc");
        full.extend_from_slice(&[0; 29]);
        assert_eq!(revert_reason(&full).as_deref(), Some("abc"));
        for cut in 0..full.len() - 29 {
            assert_eq!(revert_reason(&full[..cut]), None, "cut at {cut}");
        }
        assert_eq!(revert_reason(&[0xde, 0xad, 0xbe, 0xef]), None);
        let mut huge_offset = full.clone();
        huge_offset[4] = 0xff;
        assert_eq!(revert_reason(&huge_offset), None);
    }
}
