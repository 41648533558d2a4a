//! `eth_createAccessList`: the EIP-2930 access list a call needs, found as geth finds it, by
//! running the call read-only with a tracer that records what its opcodes touch.
//!
//! `SLOAD`/`SSTORE` add the slot of the contract running; `BALANCE`, `EXTCODE*` and
//! `SELFDESTRUCT` add their address operand, the `CALL` family its callee. The sender, the
//! recipient (or the contract a creation makes) and the precompiles are left out as accounts
//! (they are warm anyway), though slots of the recipient are listed. The list changes the
//! gas, and the gas may change the path taken, so the call is run again with the list found
//! until a run adds nothing.

use super::call::{call_env, CallOutcome, CallRequest};
use super::evm::{build_inspected_evm, finish_evm, ran_of, SegmentDb, SPEC};
use super::state::{StateError, StateRead};
use super::{BlockContext, EvmExecutor};
use crate::crypto::tx::{AccessList, AccessListItem};
use crate::types::ChainId;
use alloy_primitives::{Address, B256, U256};
use revm::bytecode::opcode;
use revm::handler::EthPrecompiles;
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::interpreter_types::{InputsTr, Jumps};
use revm::interpreter::Interpreter;
use revm::{InspectEvm, Inspector};
use std::collections::{BTreeMap, BTreeSet};

/// Most runs before the list must have settled. Each run only adds to the list; a call whose
/// path keeps changing with its gas (one that keys storage on `GAS`, say) gets no answer.
pub const MAX_ACCESS_LIST_RUNS: usize = 16;

/// What `eth_createAccessList` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessListOutcome {
    /// Accounts and slots the call touches, in address and slot order.
    pub access_list: AccessList,
    /// The call run with that list: its gas used and, if it failed, why.
    pub call: CallOutcome,
}

/// Why there is no access list.
#[derive(Debug, thiserror::Error)]
pub enum AccessListError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("access list did not settle within {MAX_ACCESS_LIST_RUNS} runs")]
    Unsettled,
}

/// Accounts and their slots, as the tracer collects them.
type Touched = BTreeMap<Address, BTreeSet<B256>>;

/// Records what a run touches, on top of the list the run was given.
struct Tracer {
    excluded: BTreeSet<Address>,
    touched: Touched,
}

impl Tracer {
    /// A tracer starting from `list`: its accounts (unless excluded) and all its slots.
    fn new(excluded: BTreeSet<Address>, list: &AccessList) -> Self {
        let mut tracer = Self {
            excluded,
            touched: Touched::new(),
        };
        for item in &list.0 {
            tracer.account(item.address);
            for slot in &item.storage_keys {
                tracer.slot(item.address, *slot);
            }
        }
        tracer
    }

    fn account(&mut self, address: Address) {
        if !self.excluded.contains(&address) {
            self.touched.entry(address).or_default();
        }
    }

    fn slot(&mut self, address: Address, slot: B256) {
        self.touched.entry(address).or_default().insert(slot);
    }
}

impl<CTX> Inspector<CTX, EthInterpreter> for Tracer {
    fn step(&mut self, interp: &mut Interpreter<EthInterpreter>, _context: &mut CTX) {
        // A missing operand means the instruction is about to fail on stack underflow.
        let operand = |n: usize| interp.stack.peek(n).ok();
        let address = |word: U256| Address::from_word(B256::from(word));
        match interp.bytecode.opcode() {
            opcode::SLOAD | opcode::SSTORE => {
                if let Some(slot) = operand(0) {
                    self.slot(interp.input.target_address(), B256::from(slot));
                }
            }
            opcode::BALANCE
            | opcode::EXTCODESIZE
            | opcode::EXTCODECOPY
            | opcode::EXTCODEHASH
            | opcode::SELFDESTRUCT => {
                if let Some(word) = operand(0) {
                    self.account(address(word));
                }
            }
            opcode::CALL | opcode::CALLCODE | opcode::DELEGATECALL | opcode::STATICCALL => {
                if let Some(word) = operand(1) {
                    self.account(address(word));
                }
            }
            _ => {}
        }
    }
}

fn to_access_list(touched: &Touched) -> AccessList {
    AccessList(
        touched
            .iter()
            .map(|(address, slots)| AccessListItem {
                address: *address,
                storage_keys: slots.iter().copied().collect(),
            })
            .collect(),
    )
}

impl EvmExecutor {
    /// The access list of `req` on `chain` in block `ctx` over `state`, and the call run with
    /// it. Nothing is written.
    pub fn create_access_list(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        chain: ChainId,
        req: &CallRequest,
    ) -> Result<AccessListOutcome, AccessListError> {
        let from = req.from.unwrap_or(Address::ZERO);
        let to = match req.to {
            Some(to) => to,
            None => {
                let nonce = match req.nonce {
                    Some(n) => n,
                    None => state.account(chain, &from)?.map_or(0, |a| a.nonce),
                };
                from.create(nonce)
            }
        };
        let mut excluded: BTreeSet<Address> = EthPrecompiles::new(SPEC)
            .warm_addresses()
            .iter()
            .copied()
            .collect();
        excluded.extend([from, to]);
        let gas = req.gas.unwrap_or(ctx.gas_limit).min(ctx.gas_limit);
        let mut list = to_access_list(&Tracer::new(excluded.clone(), &req.access_list).touched);
        for _ in 0..MAX_ACCESS_LIST_RUNS {
            let tried = CallRequest {
                access_list: list.clone(),
                ..req.clone()
            };
            let (ran, touched) = trace(state, ctx, chain, &tried, gas, excluded.clone())?;
            let found = to_access_list(&touched);
            if found == list {
                return Ok(AccessListOutcome {
                    access_list: list,
                    call: CallOutcome::from_run(ran),
                });
            }
            list = found;
        }
        Err(AccessListError::Unsettled)
    }
}

/// One traced read-only run of `req`: what it did and what it touched.
fn trace(
    state: &dyn StateRead,
    ctx: &BlockContext,
    chain: ChainId,
    req: &CallRequest,
    gas_limit: u64,
    excluded: BTreeSet<Address>,
) -> Result<
    (
        Result<super::evm::Ran, super::receipt::InvalidReason>,
        Touched,
    ),
    StateError,
> {
    let (block, env) = call_env(ctx, chain, req, gas_limit);
    let db = SegmentDb::new(chain, state, ctx);
    let tracer = Tracer::new(excluded, &req.access_list);
    let mut evm = build_inspected_evm(db, chain, block, tracer);
    evm.ctx.cfg.disable_nonce_check = true;
    let ran = ran_of(evm.inspect_tx(env));
    let touched = std::mem::take(&mut evm.inspector.touched);
    finish_evm(evm);
    Ok((ran?.map(|(ran, _)| ran), touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::state::{Account, MemoryState, SegmentDiff};
    use crate::exec::TxOutcome;
    use crate::types::Height;
    use alloy_primitives::{keccak256, Bytes};

    const CHAIN: ChainId = ChainId(1001);
    const CONTRACT: Address = Address::repeat_byte(0xcc);
    const OTHER: Address = Address::repeat_byte(0x0e);
    const CALLER: Address = Address::repeat_byte(0xca);

    /// A state where `CONTRACT` runs `code` and slot 5 of it holds 42.
    fn state_with(code: &[u8]) -> MemoryState {
        let code = Bytes::copy_from_slice(code);
        let hash = keccak256(&code);
        let mut diff = SegmentDiff {
            chain_id: CHAIN,
            accounts: BTreeMap::new(),
            storage: BTreeMap::new(),
            code: BTreeMap::new(),
            state_root: B256::ZERO,
            prior: None,
        };
        let account = Account {
            nonce: 1,
            balance: U256::ZERO,
            code_hash: hash,
        };
        diff.accounts.insert(CONTRACT, Some(account));
        diff.storage
            .insert((CONTRACT, U256::from(5)), U256::from(42));
        diff.code.insert(hash, code);
        let mut state = MemoryState::default();
        state.apply(&diff);
        state
    }

    fn request() -> CallRequest {
        CallRequest {
            from: Some(CALLER),
            to: Some(CONTRACT),
            ..CallRequest::default()
        }
    }

    fn context() -> BlockContext {
        BlockContext::new(Height(2), 1_000, B256::ZERO)
    }

    fn run(code: &[u8]) -> AccessListOutcome {
        EvmExecutor
            .create_access_list(&state_with(code), &context(), CHAIN, &request())
            .unwrap()
    }

    fn slot(n: u8) -> B256 {
        B256::from(U256::from(n))
    }

    #[test]
    fn a_slot_read_and_an_account_queried_are_listed_the_caller_and_precompiles_are_not() {
        // SLOAD(5); BALANCE(OTHER); BALANCE(CALLER); STATICCALL(gas, 0x01, 0, 0, 0, 0); STOP
        let mut code = vec![0x60, 5, 0x54, 0x50, 0x73];
        code.extend_from_slice(OTHER.as_slice());
        code.extend_from_slice(&[0x31, 0x50, 0x73]);
        code.extend_from_slice(CALLER.as_slice());
        code.extend_from_slice(&[0x31, 0x50]);
        code.extend_from_slice(&[
            0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x60, 1, 0x5a, 0xfa, 0x50,
        ]);
        code.push(0x00);
        let out = run(&code);
        assert_eq!(out.call.outcome, TxOutcome::Success, "{:?}", out.call);
        assert_eq!(
            out.access_list.0,
            vec![
                AccessListItem {
                    address: OTHER,
                    storage_keys: vec![],
                },
                AccessListItem {
                    address: CONTRACT,
                    storage_keys: vec![slot(5)],
                },
            ]
        );
        // The gas is that of the call run with the list: 2 400 per account and 1 900 per slot
        // up front, then warm accesses (100), instead of 2 600 and 2 100 for cold ones; the
        // recipient, warm anyway, is listed for its slot as geth lists it (2 400 more).
        let with = |list: AccessList| {
            let req = CallRequest {
                access_list: list,
                ..request()
            };
            EvmExecutor
                .call(&state_with(&code), &context(), CHAIN, &req)
                .unwrap()
                .gas_used
        };
        assert_eq!(out.call.gas_used, with(out.access_list.clone()));
        assert_eq!(out.call.gas_used + 200, with(AccessList::default()) + 2_400);
    }

    #[test]
    fn a_revert_still_lists_what_was_touched_and_says_why() {
        // SSTORE(7, 1); REVERT(0, 0)
        let out = run(&[0x60, 1, 0x60, 7, 0x55, 0x60, 0, 0x60, 0, 0xfd]);
        assert_eq!(out.call.outcome, TxOutcome::Reverted);
        assert_eq!(out.call.reason.as_deref(), Some("execution reverted"));
        assert_eq!(
            out.access_list.0,
            vec![AccessListItem {
                address: CONTRACT,
                storage_keys: vec![slot(7)],
            }]
        );
        assert!(out.call.gas_used > 21_000);
    }
}
