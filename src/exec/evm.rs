//! The EVM executor: revm under Prague rules over one segment's view of its chain's state.
//!
//! A segment gets one EVM whose database ([`SegmentDb`]) reads the chain's committed state
//! through [`StateRead`] and keeps what the segment's earlier transactions wrote; each
//! transaction's changes are folded into it before the next one runs, and what it holds at the
//! end is the segment's [`SegmentDiff`].

use super::commitment::next_state_root;
use super::receipt::{logs_bloom, Halt, InvalidReason, Log, Receipt, TxOutcome};
use super::state::{Account, Prior, SegmentDiff, StateError, StateRead, EMPTY_CODE_HASH};
use super::{segment_commitment, BlockContext, Executor, SegmentExecution};
use crate::crypto::tx::{RecoveredTx, SignedTransaction, Transaction, TxKind};
use crate::types::{ChainId, Segment};
use alloy_primitives::map::{AddressMap, B256Map, HashMap};
use alloy_primitives::{Address, Bytes, B256, U256};
use revm::context::result::{
    EVMError, ExecResultAndState, ExecutionResult, HaltReason, InvalidTransaction, Output,
    ResultGas,
};
use revm::context::{BlockEnv, Evm, TxEnv};
use revm::context_interface::local::FrameStack;
use revm::handler::instructions::EthInstructions;
use revm::handler::{EthFrame, EthPrecompiles, MainnetContext, MainnetEvm};
use revm::interpreter::interpreter::EthInterpreter;
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, Bytecode, EvmState};
use revm::{Database, ExecuteEvm};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

/// The Ethereum rules servicechains run: Prague (without blob transactions, which Kaon does not
/// accept, and without the EIP-2935/4788/7002/7251 system contracts; see `docs/execution.md`).
pub const SPEC: SpecId = SpecId::PRAGUE;

/// An EVM over one segment's database, with inspector `I` (none by default).
pub(super) type SegmentEvm<'a, I = ()> = MainnetEvm<MainnetContext<SegmentDb<'a>>, I>;

/// The EVM executor. Stateless: everything a block decides comes in its [`BlockContext`].
#[derive(Debug, Default, Clone, Copy)]
pub struct EvmExecutor;

/// One segment's view of its chain: committed state underneath, the segment's own writes on
/// top, and a read cache so each account, slot and code is fetched from the backend once.
pub(super) struct SegmentDb<'a> {
    chain: ChainId,
    state: &'a dyn StateRead,
    ctx: &'a BlockContext,
    /// Every account the segment read or wrote, as it stands now.
    accounts: AddressMap<Option<Account>>,
    storage: HashMap<(Address, U256), U256>,
    code: B256Map<Bytecode>,
    /// The committed value of each account the segment wrote, taken at its first write (the
    /// block's history); its keys are the written accounts, whose last values `accounts`
    /// holds, ordered only once at the end: the same few accounts are written by transaction
    /// after transaction.
    prior_accounts: AddressMap<Option<Account>>,
    /// What the segment wrote to storage, last value per key.
    written_storage: HashMap<(Address, U256), U256>,
    prior_storage: HashMap<(Address, U256), U256>,
    new_code: BTreeMap<B256, Bytes>,
}

/// Accounts a segment's maps are sized for per transaction, before the first one runs: a
/// transfer touches its sender and recipient (and every transaction the one coinbase), and
/// growing a map rehashes everything it holds.
const ACCOUNTS_PER_TX: usize = 2;
/// The most accounts sized for up front; a larger segment's maps grow as they go.
const PRESIZED_ACCOUNTS: usize = 512;

impl<'a> SegmentDb<'a> {
    pub(super) fn new(chain: ChainId, state: &'a dyn StateRead, ctx: &'a BlockContext) -> Self {
        Self::for_txs(chain, state, ctx, 0)
    }

    /// A database sized for a segment of `txs` transactions.
    pub(super) fn for_txs(
        chain: ChainId,
        state: &'a dyn StateRead,
        ctx: &'a BlockContext,
        txs: usize,
    ) -> Self {
        let accounts = (txs.saturating_mul(ACCOUNTS_PER_TX) + 1).min(PRESIZED_ACCOUNTS);
        Self {
            chain,
            state,
            ctx,
            accounts: AddressMap::with_capacity_and_hasher(accounts, Default::default()),
            storage: HashMap::default(),
            code: B256Map::default(),
            prior_accounts: AddressMap::with_capacity_and_hasher(accounts, Default::default()),
            written_storage: HashMap::default(),
            prior_storage: HashMap::default(),
            new_code: BTreeMap::new(),
        }
    }

    /// The account as the segment sees it now.
    pub(super) fn account(&mut self, address: Address) -> Result<Option<Account>, StateError> {
        if let Some(account) = self.accounts.get(&address) {
            return Ok(*account);
        }
        let account = self.state.account(self.chain, &address)?;
        self.accounts.insert(address, account);
        Ok(account)
    }

    /// Adds `amount` to `address`'s balance (a reward withdrawal), creating the account.
    fn credit(&mut self, address: Address, amount: U256) -> Result<(), StateError> {
        let current = self.account(address)?;
        let mut account = current.unwrap_or_default();
        account.balance = account.balance.saturating_add(amount);
        self.write_account(address, current, Some(account));
        Ok(())
    }

    /// Writes `account` over `current` (what [`Self::account`] returned just before).
    fn write_account(
        &mut self,
        address: Address,
        current: Option<Account>,
        account: Option<Account>,
    ) {
        self.accounts.insert(address, account);
        self.note_prior(address, current);
    }

    /// Keeps `current` as `address`'s committed value if this is the segment's first write
    /// of it.
    fn note_prior(&mut self, address: Address, current: Option<Account>) {
        self.prior_accounts.entry(address).or_insert(current);
    }

    /// Writes `value` to `slot` of `address`.
    fn write_slot(&mut self, address: Address, slot: U256, value: U256) {
        let key = (address, slot);
        if !self.written_storage.contains_key(&key) {
            // The read cache holds the committed value of a slot this segment has not written.
            // A slot never read (a new contract's) is not looked up here: persisting the
            // block reads what its diff does not carry.
            if let Some(committed) = self.storage.get(&key) {
                self.prior_storage.insert(key, *committed);
            }
        }
        self.storage.insert(key, value);
        self.written_storage.insert(key, value);
    }

    /// Folds one transaction's changes in. Post-EIP-161 rules: a touched account that is
    /// empty, or self-destructed, is deleted. Under EIP-6780 a self-destructed account was
    /// created by the same transaction, so it has no storage outside this transaction's changes
    /// (and EIP-7610 keeps creation away from addresses with storage), so deleting the account
    /// is all there is to do.
    fn apply_changes(&mut self, changes: EvmState) -> Result<(), StateError> {
        for (address, changed) in changes {
            if !changed.is_touched() {
                continue;
            }
            let new = if changed.is_selfdestructed() || changed.is_empty() {
                None
            } else {
                Some(Account {
                    nonce: changed.info.nonce,
                    balance: changed.info.balance,
                    code_hash: changed.info.code_hash,
                })
            };
            if changed.is_created() {
                if let Some(code) = changed.info.code.as_ref().filter(|c| !c.is_empty()) {
                    self.code.insert(changed.info.code_hash, code.clone());
                    self.new_code
                        .insert(changed.info.code_hash, code.original_bytes());
                }
            }
            // The account is cached (the EVM loaded it): replace it in place, one lookup.
            if let Some(cached) = self.accounts.get_mut(&address) {
                let current = std::mem::replace(cached, new);
                if current != new {
                    self.note_prior(address, current);
                }
            } else {
                let current = self.account(address)?;
                if current != new {
                    self.write_account(address, current, new);
                }
            }
            if new.is_none() {
                continue;
            }
            for (slot, value) in changed.changed_storage_slots() {
                self.write_slot(address, *slot, value.present_value);
            }
        }
        Ok(())
    }

    /// What the segment wrote, with the commitment that follows `previous_root`.
    fn into_diff(self, previous_root: B256) -> SegmentDiff {
        let accounts: BTreeMap<_, _> = self
            .prior_accounts
            .keys()
            .map(|address| (*address, self.accounts[address]))
            .collect();
        let storage: BTreeMap<_, _> = self.written_storage.into_iter().collect();
        let state_root = next_state_root(previous_root, &accounts, &storage);
        SegmentDiff {
            chain_id: self.chain,
            accounts,
            storage,
            code: self.new_code,
            state_root,
            prior: Some(Prior {
                accounts: self.prior_accounts,
                storage: self.prior_storage,
                state_root: previous_root,
            }),
        }
    }
}

impl Database for SegmentDb<'_> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        Ok(self.account(address)?.map(|a| {
            let info = AccountInfo::default()
                .with_balance(a.balance)
                .with_nonce(a.nonce);
            match a.has_code() {
                true => info.with_code_hash(a.code_hash),
                false => info,
            }
        }))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == EMPTY_CODE_HASH {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.code.get(&code_hash) {
            return Ok(code.clone());
        }
        let corrupt = |detail: String| StateError::Corrupt {
            chain: self.chain,
            what: "contract code",
            detail,
        };
        let raw = self
            .state
            .code(self.chain, &code_hash)?
            .ok_or_else(|| corrupt(format!("no code for hash {code_hash}")))?;
        let code = Bytecode::new_raw_checked(raw)
            .map_err(|e| corrupt(format!("code {code_hash}: {e}")))?;
        self.code.insert(code_hash, code.clone());
        Ok(code)
    }

    fn storage(&mut self, address: Address, slot: U256) -> Result<U256, StateError> {
        if let Some(value) = self.storage.get(&(address, slot)) {
            return Ok(*value);
        }
        let value = self.state.storage(self.chain, &address, &slot)?;
        self.storage.insert((address, slot), value);
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        Ok(self.ctx.block_hash(self.chain, number).unwrap_or_default())
    }
}

/// The EVM's block environment for `ctx` on `chain`.
pub(super) fn block_env(ctx: &BlockContext, chain: ChainId) -> BlockEnv {
    BlockEnv {
        number: U256::from(ctx.number(chain)),
        beneficiary: ctx.coinbase,
        timestamp: U256::from(ctx.timestamp_ms / 1000),
        gas_limit: ctx.gas_limit,
        basefee: ctx.base_fee,
        difficulty: U256::ZERO,
        prevrandao: Some(ctx.prevrandao),
        ..BlockEnv::default()
    }
}

/// An EVM's call frames: eight preallocated, each with a 32 KiB operand stack.
type Frames = FrameStack<EthFrame<EthInterpreter>>;

/// Frames of call depth 8 an EVM starts with (revm's default).
const PREALLOCATED_FRAMES: usize = 8;

thread_local! {
    /// Call frames reused by every EVM this thread builds: allocating and faulting in a fresh
    /// quarter-megabyte per segment would cost more than executing a segment of ten transfers.
    static FRAMES: Cell<Option<Frames>> = const { Cell::new(None) };
}

/// An EVM for `chain` in block `block` over `db`; hand it to [`finish_evm`] when done.
pub(super) fn build_evm<'a>(db: SegmentDb<'a>, chain: ChainId, block: BlockEnv) -> SegmentEvm<'a> {
    build_inspected_evm(db, chain, block, ())
}

/// [`build_evm`] with `inspector` watching every step.
pub(super) fn build_inspected_evm<'a, I>(
    db: SegmentDb<'a>,
    chain: ChainId,
    block: BlockEnv,
    inspector: I,
) -> SegmentEvm<'a, I> {
    let ctx = MainnetContext::new(db, SPEC)
        .modify_cfg_chained(|cfg| cfg.chain_id = chain.0)
        .with_block(block);
    Evm {
        ctx,
        inspector,
        instruction: EthInstructions::new_mainnet_with_spec(SPEC),
        precompiles: EthPrecompiles::new(SPEC),
        frame_stack: FRAMES
            .take()
            .unwrap_or_else(|| FrameStack::new_prealloc(PREALLOCATED_FRAMES)),
    }
}

/// Keeps `evm`'s call frames for this thread's next EVM and returns its database.
pub(super) fn finish_evm<I>(evm: SegmentEvm<'_, I>) -> SegmentDb<'_> {
    FRAMES.set(Some(evm.frame_stack));
    evm.ctx.journaled_state.database
}

/// The EVM's view of a signed transaction from `sender`.
fn tx_env(tx: &Transaction, sender: Address) -> TxEnv {
    TxEnv {
        tx_type: tx.tx_type().type_byte().unwrap_or(0),
        caller: sender,
        gas_limit: tx.gas_limit(),
        gas_price: tx.max_fee_per_gas(),
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id().map(ChainId::get),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        gas_priority_fee: tx.max_priority_fee_per_gas(),
        // Listed rather than `..TxEnv::default()`, which runs revm's builder per transaction.
        blob_hashes: Vec::new(),
        max_fee_per_blob_gas: 0,
        authorization_list: Vec::new(),
    }
}

/// How a transaction the EVM refused is marked.
pub(super) fn invalid_reason(e: &InvalidTransaction) -> InvalidReason {
    use InvalidTransaction as T;
    match e {
        T::PriorityFeeGreaterThanMaxFee => InvalidReason::PriorityFeeAboveCap,
        T::GasPriceLessThanBasefee => InvalidReason::FeeCapBelowBaseFee,
        T::CallerGasLimitMoreThanBlock | T::TxGasLimitGreaterThanCap { .. } => {
            InvalidReason::SegmentGasExhausted
        }
        T::CallGasCostMoreThanGasLimit { .. } | T::GasFloorMoreThanGasLimit { .. } => {
            InvalidReason::IntrinsicGas
        }
        T::RejectCallerWithCode => InvalidReason::SenderHasCode,
        T::LackOfFundForMaxFee { .. } | T::OverflowPaymentInTransaction => {
            InvalidReason::InsufficientFunds
        }
        T::NonceOverflowInTransaction | T::NonceTooHigh { .. } | T::NonceTooLow { .. } => {
            InvalidReason::BadNonce
        }
        T::CreateInitCodeSizeLimit => InvalidReason::InitCodeTooLarge,
        T::InvalidChainId | T::MissingChainId => InvalidReason::WrongChain,
        _ => InvalidReason::Unsupported,
    }
}

/// The receipt code of an EVM halt.
pub(super) fn halt_of(reason: &HaltReason) -> Halt {
    use HaltReason as H;
    match reason {
        H::OutOfGas(_) => Halt::OutOfGas,
        H::OpcodeNotFound | H::InvalidFEOpcode | H::NotActivated => Halt::InvalidOpcode,
        H::InvalidJump => Halt::InvalidJump,
        H::StackUnderflow | H::StackOverflow => Halt::StackUnderflowOrOverflow,
        H::CreateCollision => Halt::CreateCollision,
        H::PrecompileError | H::PrecompileErrorWithContext(_) => Halt::PrecompileFailed,
        H::NonceOverflow => Halt::NonceOverflow,
        H::CreateContractSizeLimit
        | H::CreateContractStartingWithEF
        | H::CreateInitCodeSizeLimit => Halt::ContractCode,
        H::StateChangeDuringStaticCall | H::CallNotAllowedInsideStatic => Halt::StaticViolation,
        H::OutOfFunds => Halt::OutOfFunds,
        H::CallTooDeep => Halt::CallTooDeep,
        _ => Halt::Other,
    }
}

/// What one run of the EVM produced, before it becomes a receipt or a call's answer.
pub(super) struct Ran {
    pub outcome: TxOutcome,
    pub gas: ResultGas,
    /// Logs of a successful run (a failed one keeps none, as in Ethereum receipts).
    pub logs: Vec<Log>,
    /// Return data, revert data, or the created contract's code.
    pub output: Bytes,
}

impl Ran {
    pub(super) fn from_result(result: ExecutionResult) -> Self {
        match result {
            ExecutionResult::Success {
                gas, logs, output, ..
            } => Self {
                outcome: TxOutcome::Success,
                gas,
                logs: logs
                    .into_iter()
                    .map(|log| {
                        let (topics, data) = log.data.split();
                        Log {
                            address: log.address,
                            topics,
                            data,
                        }
                    })
                    .collect(),
                output: match output {
                    Output::Call(out) | Output::Create(out, _) => out,
                },
            },
            ExecutionResult::Revert { gas, output, .. } => Self {
                outcome: TxOutcome::Reverted,
                gas,
                logs: Vec::new(),
                output,
            },
            ExecutionResult::Halt { reason, gas, .. } => Self {
                outcome: TxOutcome::Halted(halt_of(&reason)),
                gas,
                logs: Vec::new(),
                output: Bytes::new(),
            },
        }
    }
}

/// Runs `env` on `evm`: `Ok(Ok(changes))` when it ran, `Ok(Err(reason))` when the EVM refused
/// it as invalid, `Err` when state could not be read.
pub(super) fn transact(
    evm: &mut SegmentEvm<'_>,
    env: TxEnv,
) -> Result<Result<(Ran, EvmState), InvalidReason>, StateError> {
    ran_of(evm.transact(env))
}

/// What [`transact`] (or an inspected run) makes of revm's answer.
pub(super) fn ran_of(
    result: Result<ExecResultAndState<ExecutionResult>, EVMError<StateError>>,
) -> Result<Result<(Ran, EvmState), InvalidReason>, StateError> {
    match result {
        Ok(done) => Ok(Ok((Ran::from_result(done.result), done.state))),
        Err(EVMError::Transaction(e)) => Ok(Err(invalid_reason(&e))),
        Err(EVMError::Database(e)) => Err(e),
        Err(other) => Err(StateError::Environment(other.to_string())),
    }
}

/// Why a transaction without a recovered sender is invalid.
fn unrecovered_reason(raw: &[u8]) -> InvalidReason {
    match SignedTransaction::decode(raw) {
        Ok(_) => InvalidReason::BadSignature,
        Err(_) => InvalidReason::Undecodable,
    }
}

impl EvmExecutor {
    /// Runs one transaction of a segment: its receipt, with the segment's gas so far.
    fn run(
        evm: &mut SegmentEvm<'_>,
        ctx: &BlockContext,
        chain: ChainId,
        tx: &RecoveredTx,
        cumulative: u64,
    ) -> Result<Receipt, StateError> {
        let signed = tx.tx();
        let invalid = |reason| Ok(Receipt::invalid(reason, cumulative));
        if signed.chain_id() != Some(chain) {
            return invalid(InvalidReason::WrongChain);
        }
        if signed.gas_limit() > ctx.gas_limit.saturating_sub(cumulative) {
            return invalid(InvalidReason::SegmentGasExhausted);
        }
        let (ran, changes) = match transact(evm, tx_env(signed.tx(), tx.sender()))? {
            Ok(done) => done,
            Err(reason) => return invalid(reason),
        };
        evm.ctx.journaled_state.database.apply_changes(changes)?;
        let gas_used = ran.gas.tx_gas_used();
        Ok(Receipt {
            outcome: ran.outcome,
            gas_used,
            cumulative_gas_used: cumulative + gas_used,
            effective_gas_price: signed.tx().effective_gas_price(Some(ctx.base_fee)),
            contract_address: match signed.tx().kind() {
                TxKind::Create => Some(tx.sender().create(signed.nonce())),
                TxKind::Call(_) => None,
            },
            logs: ran.logs,
        })
    }
}

impl Executor for EvmExecutor {
    fn execute_segment(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        segment: &Segment,
        senders: &[Option<RecoveredTx>],
    ) -> Result<SegmentExecution, StateError> {
        let chain = segment.chain_id;
        let _span =
            tracing::trace_span!("execute_segment", %chain, txs = segment.txs.len()).entered();
        let mut db = SegmentDb::for_txs(chain, state, ctx, segment.txs.len());
        for (to, amount) in ctx.credits.get(&chain).into_iter().flatten() {
            db.credit(*to, *amount)?;
        }
        let mut evm = build_evm(db, chain, block_env(ctx, chain));
        let mut receipts = Vec::with_capacity(segment.txs.len());
        let mut senders_seen = BTreeSet::new();
        let mut cumulative = 0u64;
        for (i, raw) in segment.txs.iter().enumerate() {
            let receipt = match senders.get(i).and_then(Option::as_ref) {
                Some(tx) => {
                    senders_seen.insert(tx.sender());
                    Self::run(&mut evm, ctx, chain, tx, cumulative)?
                }
                None => Receipt::invalid(unrecovered_reason(raw), cumulative),
            };
            cumulative = receipt.cumulative_gas_used;
            receipts.push(receipt);
        }
        let mut db = finish_evm(evm);
        let nonces = senders_seen
            .into_iter()
            .map(|sender| Ok((sender, db.account(sender)?.map_or(0, |a| a.nonce))))
            .collect::<Result<Vec<_>, StateError>>()?;
        let diff = db.into_diff(state.state_root(chain)?);
        Ok(SegmentExecution {
            commitment: segment_commitment(chain, segment, senders, &receipts, &diff),
            bloom: logs_bloom(&receipts),
            receipts,
            diff,
            nonces,
        })
    }
}
