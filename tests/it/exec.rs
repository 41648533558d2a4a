//! EVM execution of servicechain segments: a real contract (solc-compiled, `fixtures/`)
//! deployed, called and read; reverts, out-of-gas, invalid transactions kept with their
//! reasons; block context; gas estimation; parallel execution equal to sequential with chains
//! isolated; and the RocksDB state, receipts and logs across a reopen.

use alloy_primitives::hex;
use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::crypto::bls::SignatureBytes;
use kaon::crypto::hash::{keccak256, sha256};
use kaon::crypto::tx::{
    address_of, AccessList, Eip1559Tx, Eip2930Tx, LegacyTx, RecoveredTx, SignedTransaction,
    Transaction, TxKind,
};
use kaon::exec::{
    genesis_diffs, BlockContext, CallRequest, EvmExecutor, Executor, Halt, InvalidReason,
    LogFilter, MemoryState, RecentHashes, SegmentExecution, SegmentInput, StateRead, TxOutcome,
    BASE_FEE_WEI, FEE_COLLECTOR, SEGMENT_GAS_LIMIT,
};
use kaon::storage::state::{CommittedState, PendingBlock};
use kaon::storage::store::{Store, StoreError};
use kaon::types::{
    Block, BlockHash, ChainId, CnIndex, CommitCertificate, Header, Height, Round, SealedHeader,
    Segment, SignerBitmap,
};
use proptest::prelude::*;
use std::sync::Arc;

const CHAIN: ChainId = ChainId(1001);
const OTHER: ChainId = ChainId(1002);
const GWEI: u128 = 1_000_000_000;
const FUNDS: u128 = 1_000_000 * GWEI * GWEI;
const SUPPLY: u64 = 1_000_000;

fn secret(i: u8) -> [u8; 32] {
    sha256(&[b'k', i]).0
}

fn addr(i: u8) -> Address {
    address_of(&secret(i)).unwrap()
}

/// The solc-compiled creation code of `fixtures/ExecToken.sol`.
fn token_init_code() -> Vec<u8> {
    let hex_text = include_str!("fixtures/ExecToken.bin");
    hex::decode(hex_text.trim()).unwrap()
}

fn word(v: U256) -> [u8; 32] {
    v.to_be_bytes::<32>()
}

fn word_addr(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

fn calldata(signature: &str, args: &[[u8; 32]]) -> Bytes {
    let mut data = keccak256(signature.as_bytes())[..4].to_vec();
    for a in args {
        data.extend_from_slice(a);
    }
    data.into()
}

fn deploy_input(supply: u64) -> Bytes {
    let mut code = token_init_code();
    code.extend_from_slice(&word(U256::from(supply)));
    code.into()
}

/// Storage slot of `balanceOf[owner]` (mapping at slot 1).
fn balance_slot(owner: Address) -> U256 {
    let mut preimage = word_addr(owner).to_vec();
    preimage.extend_from_slice(&word(U256::from(1)));
    U256::from_be_bytes(keccak256(&preimage).0)
}

fn transfer_topic() -> B256 {
    keccak256(b"Transfer(address,address,uint256)")
}

/// An EIP-1559 transaction on `chain` paying 2 gwei (1 gwei above the base fee).
fn tx1559(
    chain: ChainId,
    nonce: u64,
    gas: u64,
    to: TxKind,
    value: u128,
    input: Bytes,
) -> Transaction {
    Transaction::Eip1559(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: GWEI,
        max_fee_per_gas: 2 * GWEI,
        gas_limit: gas,
        to,
        value: U256::from(value),
        input,
        access_list: AccessList::default(),
    })
}

fn signed(from: u8, tx: Transaction) -> RecoveredTx {
    RecoveredTx::recover(tx.sign(&secret(from)).unwrap()).unwrap()
}

fn segment(chain: ChainId, txs: Vec<RecoveredTx>) -> SegmentInput {
    let raw = txs.iter().map(|t| t.tx().raw().clone()).collect();
    (
        Segment {
            chain_id: chain,
            txs: raw,
        },
        txs.into_iter().map(Some).collect(),
    )
}

fn ctx(height: u64) -> BlockContext {
    BlockContext::new(
        Height(height),
        1_700_000_000_000 + height * 1000,
        sha256(b"mix"),
    )
}

fn funded(accounts: &[u8], chains: &[ChainId]) -> Vec<(ChainId, Address, U256)> {
    chains
        .iter()
        .flat_map(|c| {
            accounts
                .iter()
                .map(move |a| (*c, addr(*a), U256::from(FUNDS)))
        })
        .collect()
}

fn memory(allocs: &[(ChainId, Address, U256)]) -> MemoryState {
    let mut state = MemoryState::default();
    for diff in genesis_diffs(allocs) {
        state.apply(&diff);
    }
    state
}

/// Executes one segment and applies it.
fn run(state: &mut MemoryState, height: u64, input: SegmentInput) -> SegmentExecution {
    let done = EvmExecutor
        .execute_segment(&*state, &ctx(height), &input.0, &input.1)
        .unwrap();
    state.apply(&done.diff);
    done
}

fn balance(state: &dyn StateRead, chain: ChainId, a: Address) -> U256 {
    state
        .account(chain, &a)
        .unwrap()
        .map_or(U256::ZERO, |a| a.balance)
}

fn call(
    state: &dyn StateRead,
    chain: ChainId,
    to: Address,
    data: Bytes,
) -> kaon::exec::CallOutcome {
    let req = CallRequest {
        to: Some(to),
        input: data,
        ..CallRequest::default()
    };
    EvmExecutor.call(state, &ctx(100), chain, &req).unwrap()
}

/// A token deployed by account 1 on CHAIN in block 1; returns the state and its address.
fn deployed() -> (MemoryState, Address) {
    let mut state = memory(&funded(&[1, 2], &[CHAIN]));
    let deploy = signed(
        1,
        tx1559(CHAIN, 0, 1_000_000, TxKind::Create, 0, deploy_input(SUPPLY)),
    );
    let done = run(&mut state, 1, segment(CHAIN, vec![deploy]));
    assert_eq!(done.receipts[0].outcome, TxOutcome::Success);
    (state, addr(1).create(0))
}

#[test]
fn a_solc_token_deploys_transfers_logs_and_is_readable() {
    let mut state = memory(&funded(&[1, 2], &[CHAIN]));
    let (alice, bob) = (addr(1), addr(2));
    let deploy = signed(
        1,
        tx1559(CHAIN, 0, 1_000_000, TxKind::Create, 0, deploy_input(SUPPLY)),
    );
    let done = run(&mut state, 1, segment(CHAIN, vec![deploy]));
    let receipt = &done.receipts[0];
    let token = alice.create(0);
    assert_eq!(receipt.outcome, TxOutcome::Success);
    assert_eq!(receipt.contract_address, Some(token));
    assert_eq!(receipt.effective_gas_price, 2 * GWEI);
    assert!(receipt.gas_used > 100_000 && receipt.gas_used < 1_000_000);
    assert_eq!(receipt.cumulative_gas_used, receipt.gas_used);
    // Fees: the sender paid gas at 2 gwei, the collector got the 1 gwei tip, the base fee burned.
    let fee = U256::from(receipt.gas_used) * U256::from(2 * GWEI);
    assert_eq!(balance(&state, CHAIN, alice), U256::from(FUNDS) - fee);
    assert_eq!(
        balance(&state, CHAIN, FEE_COLLECTOR),
        U256::from(receipt.gas_used) * U256::from(GWEI)
    );
    // Code, storage and the constructor's event.
    let account = state.account(CHAIN, &token).unwrap().unwrap();
    assert!(account.has_code());
    assert_eq!(account.nonce, 1, "EIP-161: contracts start at nonce 1");
    let code = state.code(CHAIN, &account.code_hash).unwrap().unwrap();
    assert_eq!(keccak256(&code), account.code_hash);
    assert_eq!(
        state.storage(CHAIN, &token, &U256::ZERO).unwrap(),
        U256::from(SUPPLY)
    );
    assert_eq!(
        state.storage(CHAIN, &token, &balance_slot(alice)).unwrap(),
        U256::from(SUPPLY)
    );
    let log = &receipt.logs[0];
    assert_eq!(log.address, token);
    assert_eq!(
        log.topics,
        vec![transfer_topic(), B256::ZERO, B256::from(word_addr(alice))]
    );
    assert_eq!(log.data.as_ref(), &word(U256::from(SUPPLY)));
    assert!(done
        .bloom
        .contains_raw_log(token, &[transfer_topic(), B256::from(word_addr(alice))]));
    assert_eq!(done.bloom, receipt.bloom());

    // A transfer of 250 tokens, then reads through eth_call.
    let data = calldata(
        "transfer(address,uint256)",
        &[word_addr(bob), word(U256::from(250))],
    );
    let t = signed(1, tx1559(CHAIN, 1, 100_000, TxKind::Call(token), 0, data));
    let done = run(&mut state, 2, segment(CHAIN, vec![t]));
    let receipt = &done.receipts[0];
    assert_eq!(receipt.outcome, TxOutcome::Success);
    assert_eq!(receipt.contract_address, None);
    assert_eq!(receipt.logs[0].topics[2], B256::from(word_addr(bob)));
    assert!(!done.bloom.contains_raw_log(Address::repeat_byte(0x77), &[]));
    let of = |who: Address| {
        let out = call(
            &state,
            CHAIN,
            token,
            calldata("balanceOf(address)", &[word_addr(who)]),
        );
        assert!(out.success, "{out:?}");
        U256::from_be_slice(&out.output)
    };
    assert_eq!(of(bob), U256::from(250));
    assert_eq!(of(alice), U256::from(SUPPLY - 250));
    assert_eq!(
        state.storage(CHAIN, &token, &balance_slot(bob)).unwrap(),
        U256::from(250)
    );
}

#[test]
fn a_revert_is_a_failed_receipt_that_charges_gas_and_changes_nothing_else() {
    let (mut state, token) = deployed();
    let (alice, bob) = (addr(1), addr(2));
    let before = balance(&state, CHAIN, alice);
    let too_much = calldata(
        "transfer(address,uint256)",
        &[word_addr(bob), word(U256::from(SUPPLY + 1))],
    );
    let t = signed(
        1,
        tx1559(CHAIN, 1, 100_000, TxKind::Call(token), 0, too_much.clone()),
    );
    let done = run(&mut state, 2, segment(CHAIN, vec![t]));
    let receipt = &done.receipts[0];
    assert_eq!(receipt.outcome, TxOutcome::Reverted);
    assert!(!receipt.outcome.status());
    assert!(receipt.gas_used > 21_000);
    assert!(receipt.logs.is_empty());
    let fee = U256::from(receipt.gas_used) * U256::from(2 * GWEI);
    assert_eq!(balance(&state, CHAIN, alice), before - fee);
    assert_eq!(
        state.nonce(CHAIN, &alice).unwrap(),
        2,
        "a reverted tx uses its nonce"
    );
    assert_eq!(
        state.storage(CHAIN, &token, &balance_slot(bob)).unwrap(),
        U256::ZERO
    );
    // The diff holds only the fee payment and the nonce: sender and fee collector.
    assert_eq!(done.diff.accounts.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![alice, FEE_COLLECTOR];
        v.sort();
        v
    });
    assert!(done.diff.storage.is_empty());
    // eth_call says why.
    let req = CallRequest {
        from: Some(alice),
        to: Some(token),
        input: too_much,
        ..CallRequest::default()
    };
    let out = EvmExecutor.call(&state, &ctx(3), CHAIN, &req).unwrap();
    assert_eq!(out.outcome, TxOutcome::Reverted);
    assert_eq!(
        out.reason.as_deref(),
        Some("execution reverted: insufficient balance")
    );
    match EvmExecutor.estimate_gas(&state, &ctx(3), CHAIN, &req) {
        Err(kaon::exec::EstimateError::Reverted { reason, .. }) => {
            assert_eq!(
                reason.as_deref(),
                Some("execution reverted: insufficient balance")
            )
        }
        other => panic!("expected a revert, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_runs_out_of_gas_and_leaves_storage_alone() {
    let (mut state, token) = deployed();
    let spin = signed(
        1,
        tx1559(
            CHAIN,
            1,
            200_000,
            TxKind::Call(token),
            0,
            calldata("spin()", &[]),
        ),
    );
    let done = run(&mut state, 2, segment(CHAIN, vec![spin]));
    let receipt = &done.receipts[0];
    assert_eq!(receipt.outcome, TxOutcome::Halted(Halt::OutOfGas));
    assert_eq!(receipt.gas_used, 200_000, "a halt spends all the gas");
    assert_eq!(
        state.storage(CHAIN, &token, &U256::ZERO).unwrap(),
        U256::from(SUPPLY)
    );
    assert!(done.diff.storage.is_empty());
}

#[test]
fn invalid_transactions_are_marked_kept_in_place_and_change_nothing() {
    let mut state = memory(&funded(&[1, 2], &[CHAIN]));
    let poor = 9u8; // never funded
    let to = TxKind::Call(addr(2));
    let good = |nonce| signed(1, tx1559(CHAIN, nonce, 21_000, to, 5, Bytes::new()));
    let cheap = Transaction::Eip1559(Eip1559Tx {
        max_fee_per_gas: u128::from(BASE_FEE_WEI) - 1,
        max_priority_fee_per_gas: 0,
        ..match tx1559(CHAIN, 1, 21_000, to, 1, Bytes::new()) {
            Transaction::Eip1559(t) => t,
            _ => unreachable!(),
        }
    });
    let wrong_chain = signed(1, tx1559(OTHER, 1, 21_000, to, 1, Bytes::new()));
    let txs = vec![
        good(0),
        signed(1, tx1559(CHAIN, 5, 21_000, to, 1, Bytes::new())), // nonce gap
        signed(poor, tx1559(CHAIN, 0, 21_000, to, 1, Bytes::new())), // no funds
        signed(1, tx1559(CHAIN, 1, 20_000, to, 1, Bytes::new())), // below intrinsic gas
        signed(
            1,
            tx1559(CHAIN, 1, SEGMENT_GAS_LIMIT + 1, to, 1, Bytes::new()),
        ), // too much gas
        signed(1, cheap),                                         // fee cap below base fee
        wrong_chain.clone(),
        good(1),
    ];
    let (mut seg, mut senders) = segment(CHAIN, txs);
    // An undecodable one and one whose sender did not recover.
    seg.txs.push(Bytes::from_static(&[0x02, 0xc0]));
    senders.push(None);
    seg.txs.push(wrong_chain.tx().raw().clone());
    senders.push(None);
    let before = state.clone();
    let done = run(&mut state, 1, (seg.clone(), senders));
    let outcomes: Vec<TxOutcome> = done.receipts.iter().map(|r| r.outcome).collect();
    use InvalidReason::*;
    assert_eq!(
        outcomes,
        vec![
            TxOutcome::Success,
            TxOutcome::Invalid(BadNonce),
            TxOutcome::Invalid(InsufficientFunds),
            TxOutcome::Invalid(IntrinsicGas),
            TxOutcome::Invalid(SegmentGasExhausted),
            TxOutcome::Invalid(FeeCapBelowBaseFee),
            TxOutcome::Invalid(WrongChain),
            TxOutcome::Success,
            TxOutcome::Invalid(Undecodable),
            TxOutcome::Invalid(BadSignature),
        ]
    );
    assert_eq!(
        done.commitment.tx_count, 10,
        "invalid transactions stay in the segment"
    );
    assert_eq!(done.commitment.tx_root, seg.tx_root());
    for r in done.receipts.iter().filter(|r| !r.outcome.status()) {
        assert_eq!((r.gas_used, r.effective_gas_price), (0, 0));
    }
    assert_eq!(done.receipts[7].cumulative_gas_used, 42_000);
    // Exactly the two transfers happened.
    assert_eq!(state.nonce(CHAIN, &addr(1)).unwrap(), 2);
    assert_eq!(balance(&state, CHAIN, addr(2)), U256::from(FUNDS + 10));
    assert_eq!(state.account(CHAIN, &addr(poor)).unwrap(), None);
    // The same segment without its invalid transactions leaves the same state.
    let mut clean = before;
    let valid = segment(CHAIN, vec![good(0), good(1)]);
    let alone = run(&mut clean, 1, valid);
    assert_eq!(alone.diff, done.diff);
    assert_eq!(clean, state);
}

#[test]
fn the_chain_id_names_the_servicechain() {
    let mut state = memory(&funded(&[1], &[CHAIN, OTHER]));
    let to = TxKind::Call(addr(2));
    let legacy = Transaction::Legacy(LegacyTx {
        chain_id: Some(OTHER),
        nonce: 0,
        gas_price: 2 * GWEI,
        gas_limit: 21_000,
        to,
        value: U256::from(1),
        input: Bytes::new(),
    });
    let access = Transaction::Eip2930(Eip2930Tx {
        chain_id: CHAIN,
        nonce: 0,
        gas_price: 2 * GWEI,
        gas_limit: 30_000,
        to,
        value: U256::from(1),
        input: Bytes::new(),
        access_list: AccessList(vec![kaon::crypto::tx::AccessListItem {
            address: addr(2),
            storage_keys: vec![B256::ZERO],
        }]),
    });
    let done = run(
        &mut state,
        1,
        segment(CHAIN, vec![signed(1, legacy.clone()), signed(1, access)]),
    );
    assert_eq!(
        done.receipts[0].outcome,
        TxOutcome::Invalid(InvalidReason::WrongChain)
    );
    assert_eq!(done.receipts[1].outcome, TxOutcome::Success);
    // 21 000 + one address (2 400) + one key (1 900).
    assert_eq!(done.receipts[1].gas_used, 25_300);
    // The legacy one is valid on the chain it names.
    let done = run(&mut state, 2, segment(OTHER, vec![signed(1, legacy)]));
    assert_eq!(done.receipts[0].outcome, TxOutcome::Success);
    assert_eq!(done.receipts[0].effective_gas_price, 2 * GWEI);
}

#[test]
fn the_block_context_reaches_the_evm() {
    let (state, token) = deployed();
    let mut hashes = RecentHashes::default();
    hashes.push(Height(6), B256::repeat_byte(0x66));
    let ctx = BlockContext::new(Height(7), 1_700_000_123_456, B256::repeat_byte(0x42))
        .with_block_hashes(Arc::new(hashes));
    let req = CallRequest {
        to: Some(token),
        input: calldata("context()", &[]),
        ..CallRequest::default()
    };
    let out = EvmExecutor.call(&state, &ctx, CHAIN, &req).unwrap();
    assert!(out.success, "{out:?}");
    let words: Vec<&[u8]> = out.output.chunks(32).collect();
    let u = |i: usize| U256::from_be_slice(words[i]);
    assert_eq!(u(0), U256::from(7), "NUMBER is the container height");
    assert_eq!(u(1), U256::from(1_700_000_123), "TIMESTAMP is in seconds");
    assert_eq!(u(2), U256::from(CHAIN.0), "CHAINID is the servicechain");
    assert_eq!(Address::from_slice(&words[3][12..]), FEE_COLLECTOR);
    assert_eq!(
        u(4),
        U256::ZERO,
        "a call without fees runs with no base fee"
    );
    assert_eq!(words[5], B256::repeat_byte(0x42).as_slice(), "PREVRANDAO");
    assert_eq!(words[6], B256::repeat_byte(0x66).as_slice(), "BLOCKHASH");
    assert_eq!(u(7), U256::from(SEGMENT_GAS_LIMIT));
    // With a fee, BASEFEE is the chain's, and the caller must afford gas * fee.
    let priced = CallRequest {
        max_fee_per_gas: Some(2 * GWEI),
        gas: Some(100_000),
        ..req
    };
    let out = EvmExecutor.call(&state, &ctx, CHAIN, &priced).unwrap();
    assert_eq!(
        out.outcome,
        TxOutcome::Invalid(InvalidReason::InsufficientFunds)
    );
    let priced = CallRequest {
        from: Some(addr(1)),
        ..priced
    };
    let out = EvmExecutor.call(&state, &ctx, CHAIN, &priced).unwrap();
    assert!(out.success, "{out:?}");
    assert_eq!(
        U256::from_be_slice(&out.output[128..160]),
        U256::from(BASE_FEE_WEI)
    );
}

#[test]
fn gas_estimates_are_enough_and_tight_for_a_deploy_and_a_token_transfer() {
    let (state, token) = deployed();
    let (alice, bob) = (addr(1), addr(2));
    let deploy = CallRequest {
        from: Some(alice),
        input: deploy_input(7),
        ..CallRequest::default()
    };
    let transfer = CallRequest {
        from: Some(alice),
        to: Some(token),
        input: calldata(
            "transfer(address,uint256)",
            &[word_addr(bob), word(U256::from(3))],
        ),
        ..CallRequest::default()
    };
    for req in [deploy, transfer] {
        let gas = EvmExecutor
            .estimate_gas(&state, &ctx(2), CHAIN, &req)
            .unwrap();
        let with = |g: u64| {
            let mut s = state.clone();
            let kind = req.to.map_or(TxKind::Create, TxKind::Call);
            let tx = signed(1, tx1559(CHAIN, 1, g, kind, 0, req.input.clone()));
            run(&mut s, 2, segment(CHAIN, vec![tx])).receipts[0].outcome
        };
        assert_eq!(with(gas), TxOutcome::Success, "estimate {gas} is enough");
        assert_ne!(
            with(gas - 1),
            TxOutcome::Success,
            "estimate {gas} is the least"
        );
    }
}

/// A block of signed transactions per chain, built by the property test.
#[derive(Debug, Clone)]
enum Op {
    Transfer { to: u8, value: u64 },
    Deploy,
    TokenTransfer { to: u8 },
    BadNonce,
    WrongChain,
}

const PROP_CHAINS: [ChainId; 3] = [ChainId(2001), ChainId(2002), ChainId(2003)];
/// Accounts 1..=4 are funded on the first two chains only.
const PROP_ACCOUNTS: u8 = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..=PROP_ACCOUNTS, 0u64..1000).prop_map(|(to, value)| Op::Transfer { to, value }),
        1 => Just(Op::Deploy),
        2 => (1..=PROP_ACCOUNTS).prop_map(|to| Op::TokenTransfer { to }),
        1 => Just(Op::BadNonce),
        1 => Just(Op::WrongChain),
    ]
}

/// Signs `ops` (chain index, sender, op) into one segment per chain, in chain order, keeping
/// per-(chain, sender) nonces and the tokens each chain has.
fn build_block(
    ops: &[(usize, u8, Op)],
    nonces: &mut std::collections::HashMap<(usize, u8), u64>,
    tokens: &mut std::collections::HashMap<usize, Vec<Address>>,
) -> Vec<SegmentInput> {
    let mut per_chain: Vec<Vec<RecoveredTx>> = vec![Vec::new(); PROP_CHAINS.len()];
    for (c, from, op) in ops {
        let chain = PROP_CHAINS[*c];
        let nonce = nonces.entry((*c, *from)).or_default();
        let tx = match op {
            Op::Transfer { to, value } => tx1559(
                chain,
                *nonce,
                21_000,
                TxKind::Call(addr(*to)),
                u128::from(*value),
                Bytes::new(),
            ),
            Op::Deploy => {
                tokens
                    .entry(*c)
                    .or_default()
                    .push(addr(*from).create(*nonce));
                tx1559(
                    chain,
                    *nonce,
                    1_000_000,
                    TxKind::Create,
                    0,
                    deploy_input(SUPPLY),
                )
            }
            Op::TokenTransfer { to } => {
                let token = tokens
                    .get(c)
                    .and_then(|t| t.last().copied())
                    .unwrap_or(Address::repeat_byte(0xab));
                let data = calldata(
                    "transfer(address,uint256)",
                    &[word_addr(addr(*to)), word(U256::from(1))],
                );
                tx1559(chain, *nonce, 100_000, TxKind::Call(token), 0, data)
            }
            Op::BadNonce => tx1559(
                chain,
                *nonce + 3,
                21_000,
                TxKind::Call(addr(1)),
                1,
                Bytes::new(),
            ),
            Op::WrongChain => {
                let other = PROP_CHAINS[(c + 1) % PROP_CHAINS.len()];
                tx1559(
                    other,
                    *nonce,
                    21_000,
                    TxKind::Call(addr(1)),
                    1,
                    Bytes::new(),
                )
            }
        };
        if !matches!(op, Op::BadNonce | Op::WrongChain) {
            *nonce += 1;
        }
        per_chain[*c].push(signed(*from, tx));
    }
    per_chain
        .into_iter()
        .enumerate()
        .filter(|(_, txs)| !txs.is_empty())
        .map(|(c, txs)| segment(PROP_CHAINS[c], txs))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Executing a block's segments on rayon gives exactly what executing them one by one
    /// gives, and each chain's segment gives the same result over a state holding only its
    /// own chain: chains never see each other's state.
    #[test]
    fn parallel_execution_equals_sequential_and_chains_are_isolated(
        blocks in prop::collection::vec(
            prop::collection::vec((0..PROP_CHAINS.len(), 1..=PROP_ACCOUNTS, op()), 1..12),
            1..4,
        )
    ) {
        let allocs = funded(&[1, 2, 3, 4], &PROP_CHAINS[..2]);
        let mut shared = memory(&allocs);
        let mut isolated: Vec<MemoryState> = PROP_CHAINS
            .iter()
            .map(|c| {
                let own: Vec<_> = allocs.iter().filter(|a| a.0 == *c).cloned().collect();
                memory(&own)
            })
            .collect();
        let (mut nonces, mut tokens) = Default::default();
        for (h, ops) in blocks.iter().enumerate() {
            let input = build_block(ops, &mut nonces, &mut tokens);
            let ctx = ctx(h as u64 + 1);
            let parallel = EvmExecutor.execute_block(&shared, &ctx, &input).unwrap();
            // What execution captured as each write's previous value is what the state held:
            // every account and the commitment, and the slots it read before writing.
            for done in &parallel {
                let read = done.diff.prior_in(&shared).unwrap();
                let carried = done.diff.prior.as_ref().unwrap();
                prop_assert_eq!(&carried.accounts, &read.accounts);
                prop_assert_eq!(carried.state_root, read.state_root);
                for (slot, value) in &carried.storage {
                    prop_assert_eq!(Some(value), read.storage.get(slot));
                }
            }
            let sequential: Vec<SegmentExecution> = input
                .iter()
                .map(|(s, t)| EvmExecutor.execute_segment(&shared, &ctx, s, t).unwrap())
                .collect();
            prop_assert_eq!(&parallel, &sequential);
            for ((seg, txs), done) in input.iter().zip(&parallel) {
                let c = PROP_CHAINS.iter().position(|c| *c == seg.chain_id).unwrap();
                let alone = EvmExecutor.execute_segment(&isolated[c], &ctx, seg, txs).unwrap();
                prop_assert_eq!(&alone, done);
                prop_assert_eq!(done.diff.chain_id, seg.chain_id);
                isolated[c].apply(&alone.diff);
            }
            for done in &parallel {
                shared.apply(&done.diff);
            }
        }
        // The unfunded chain never gained a balance from the others.
        for a in 1..=PROP_ACCOUNTS {
            prop_assert_eq!(balance(&shared, PROP_CHAINS[2], addr(a)), U256::ZERO);
        }
    }
}

fn container(height: u64, parent: BlockHash, segments: Vec<Segment>) -> Block {
    let header = Header {
        version: 1,
        region: ChainId(1000),
        height: Height(height),
        round: Round(0),
        parent,
        timestamp_ms: 1_700_000_000_000 + height,
        proposer: CnIndex(0),
        random_reveal: SignatureBytes::default(),
        mix: B256::ZERO,
        cn_set_root: B256::ZERO,
        next_cn_set: Vec::new(),
        segments: Vec::new(),
    };
    Block {
        sealed: SealedHeader {
            header,
            seal: CommitCertificate {
                round: Round(0),
                signers: SignerBitmap::default(),
                aggregate: SignatureBytes::default(),
            },
        },
        segments,
    }
}

/// Every account, slot and code the test touched reads the same from `a` and `b`.
fn assert_same_state(a: &dyn StateRead, b: &dyn StateRead, token: Address) {
    for chain in [CHAIN, OTHER] {
        assert_eq!(a.state_root(chain).unwrap(), b.state_root(chain).unwrap());
        for who in [addr(1), addr(2), addr(3), token, FEE_COLLECTOR] {
            let account = a.account(chain, &who).unwrap();
            assert_eq!(account, b.account(chain, &who).unwrap());
            if let Some(acc) = account.filter(|acc| acc.has_code()) {
                assert_eq!(
                    a.code(chain, &acc.code_hash).unwrap(),
                    b.code(chain, &acc.code_hash).unwrap()
                );
            }
            let slot = balance_slot(who);
            assert_eq!(
                a.storage(chain, &token, &slot).unwrap(),
                b.storage(chain, &token, &slot).unwrap()
            );
        }
    }
}

#[test]
fn rocksdb_state_receipts_and_logs_match_memory_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let allocs = funded(&[1, 2], &[CHAIN, OTHER]);
    let mut mem = memory(&allocs);
    let disk = CommittedState::open(Arc::new(Store::open(&path).unwrap()), &allocs).unwrap();
    assert_eq!(disk.store().state_height().unwrap(), Some(0));
    let token = addr(1).create(0);
    let transfer = |to: u8| {
        calldata(
            "transfer(address,uint256)",
            &[word_addr(addr(to)), word(U256::from(10))],
        )
    };
    let blocks: Vec<Vec<SegmentInput>> = vec![
        vec![
            segment(
                CHAIN,
                vec![signed(
                    1,
                    tx1559(CHAIN, 0, 1_000_000, TxKind::Create, 0, deploy_input(SUPPLY)),
                )],
            ),
            segment(
                OTHER,
                vec![signed(
                    2,
                    tx1559(OTHER, 0, 21_000, TxKind::Call(addr(3)), 7, Bytes::new()),
                )],
            ),
        ],
        vec![segment(
            CHAIN,
            vec![
                signed(
                    1,
                    tx1559(CHAIN, 1, 100_000, TxKind::Call(token), 0, transfer(2)),
                ),
                signed(
                    1,
                    tx1559(CHAIN, 2, 100_000, TxKind::Call(token), 0, transfer(3)),
                ),
            ],
        )],
    ];
    let mut parent = BlockHash::default();
    let mut tx_hashes = Vec::new();
    for (i, input) in blocks.iter().enumerate() {
        let height = i as u64 + 1;
        let from_disk = EvmExecutor
            .execute_block(&disk, &ctx(height), input)
            .unwrap();
        let from_mem = EvmExecutor
            .execute_block(&mem, &ctx(height), input)
            .unwrap();
        assert_eq!(from_disk, from_mem);
        let mut segments = vec![Segment {
            chain_id: ChainId(1000),
            txs: Vec::new(),
        }];
        segments.extend(input.iter().map(|(s, _)| s.clone()));
        tx_hashes.extend(input.iter().flat_map(|(s, _)| s.txs.iter().map(keccak256)));
        let block = container(height, parent, segments);
        parent = block.hash();
        for done in &from_mem {
            mem.apply(&done.diff);
        }
        disk.committed(PendingBlock::new(
            Height(height),
            block.hash(),
            Vec::new(),
            (1u32..).zip(from_disk).collect(),
        ));
        // Committed but not yet written: reads come from the held execution.
        assert_same_state(&disk, &mem, token);
        assert_eq!(disk.store().state_height().unwrap(), Some(height - 1));
        disk.persist(&block, height * 1000).unwrap();
        assert_eq!(disk.pending_blocks(), 0);
        assert_same_state(&disk, &mem, token);
        assert_same_state(disk.store().as_ref(), &mem, token);
    }
    drop(disk);

    let store = Arc::new(Store::open(&path).unwrap());
    let disk = CommittedState::open(Arc::clone(&store), &allocs).unwrap();
    assert_eq!(store.state_height().unwrap(), Some(2));
    assert_eq!(store.head().unwrap().map(|h| h.height), Some(2));
    assert_same_state(&disk, &mem, token);
    // Receipts by transaction hash, per segment, and logs by chain, address and topic.
    let deploy = store.receipt(&tx_hashes[0]).unwrap().unwrap();
    assert_eq!((deploy.location.height, deploy.location.segment), (1, 1));
    assert_eq!(deploy.receipt.contract_address, Some(token));
    let second = store.receipt(&tx_hashes[3]).unwrap().unwrap();
    assert_eq!(second.chain_id, CHAIN);
    assert_eq!((second.location.index, second.first_log_index), (1, 1));
    assert!(store.receipt(&B256::repeat_byte(9)).unwrap().is_none());
    let other = store.receipts_of(1, OTHER).unwrap().unwrap();
    assert_eq!((other.segment, other.receipts.len()), (2, 1));
    assert_eq!(other.tx_hashes, vec![tx_hashes[1]]);
    assert!(store.receipts_of(2, OTHER).unwrap().is_none());
    let transfers = LogFilter {
        addresses: vec![token],
        topics: vec![Some(vec![transfer_topic()])],
    };
    let logs = store.logs(CHAIN, 0, 10, &transfers, 100).unwrap();
    assert_eq!(
        logs.iter()
            .map(|l| (l.height, l.tx_index, l.log_index))
            .collect::<Vec<_>>(),
        vec![(1, 0, 0), (2, 0, 0), (2, 1, 1)]
    );
    assert_eq!(logs[2].tx_hash, tx_hashes[3]);
    assert_eq!(store.logs(CHAIN, 2, 2, &transfers, 100).unwrap().len(), 2);
    assert_eq!(store.logs(CHAIN, 0, 10, &transfers, 2).unwrap().len(), 2);
    assert!(store
        .logs(OTHER, 0, 10, &transfers, 100)
        .unwrap()
        .is_empty());
    let to_three = LogFilter {
        addresses: Vec::new(),
        topics: vec![None, None, Some(vec![B256::from(word_addr(addr(3)))])],
    };
    let logs = store.logs(CHAIN, 0, 10, &to_three, 100).unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].log.data.as_ref(), &word(U256::from(10)));
}

#[test]
fn a_corrupt_state_marker_or_value_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let allocs = funded(&[1], &[CHAIN]);
    {
        let store = Arc::new(Store::open(&path).unwrap());
        let state = CommittedState::open(Arc::clone(&store), &allocs).unwrap();
        // A stored account of the wrong length is reported when read.
        let mut key = vec![1u8];
        key.extend_from_slice(addr(2).as_slice());
        store.put_state(CHAIN.0, &key, b"short").unwrap();
        assert!(state.account(CHAIN, &addr(2)).is_err());
        assert!(matches!(
            store.account(CHAIN, &addr(2)),
            Err(StoreError::Malformed { .. })
        ));
        let tx = signed(
            2,
            tx1559(CHAIN, 0, 21_000, TxKind::Call(addr(1)), 1, Bytes::new()),
        );
        let (seg, txs) = segment(CHAIN, vec![tx]);
        assert!(EvmExecutor
            .execute_segment(&state, &ctx(1), &seg, &txs)
            .is_err());
    }
    // Overwrite the applied-height marker with bytes that do not decode.
    {
        let opts = rocksdb::Options::default();
        let families = rocksdb::DB::list_cf(&opts, &path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &path, &families).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"\x00state_height", b"bad").unwrap();
    }
    match Store::open(&path) {
        Err(e @ StoreError::Malformed { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}")
        }
        other => panic!("expected a malformed marker error, got {other:?}"),
    }
    // Still refused, never reset.
    assert!(Store::open(&path).is_err());
}

#[test]
fn a_transaction_decoded_elsewhere_is_checked_against_the_segments_chain() {
    // A raw transaction in a segment of another chain keeps its own chain id: wrong chain.
    let mut state = memory(&funded(&[1], &[CHAIN, OTHER]));
    let raw = tx1559(CHAIN, 0, 21_000, TxKind::Call(addr(2)), 1, Bytes::new())
        .sign(&secret(1))
        .unwrap();
    let decoded = SignedTransaction::decode(raw.raw()).unwrap();
    let tx = RecoveredTx::recover(decoded).unwrap();
    let done = run(&mut state, 1, segment(OTHER, vec![tx]));
    assert_eq!(
        done.receipts[0].outcome,
        TxOutcome::Invalid(InvalidReason::WrongChain)
    );
    assert!(done.diff.is_empty());
    assert_eq!(done.commitment.state_root, state.state_root(OTHER).unwrap());
}

/// A one-CN application over `state` with an empty pool for `CHAIN`.
fn app_on(
    state: Arc<CommittedState>,
    key: &kaon::crypto::bls::SecretKey,
    genesis: kaon::consensus::machine::Tip,
) -> (kaon::chain::app::CnApp, kaon::chain::app::CnState) {
    let region = ChainId(1000);
    let shared = kaon::chain::app::CnState {
        pool: Arc::new(std::sync::Mutex::new(kaon::mempool::Mempool::new(
            Default::default(),
            [CHAIN, region],
        ))),
        state,
        system: Arc::default(),
    };
    let set = kaon::consensus::selection::CnSet::new(vec![key.public_key()]).unwrap();
    let mut app = kaon::chain::app::CnApp::new(region, Arc::new(set), shared.clone(), 100, genesis);
    app.configure_region(|r| r.with_genesis_chains(&[CHAIN]));
    (app, shared)
}

#[test]
fn restart_reexecutes_only_the_blocks_above_the_applied_height() {
    use kaon::consensus::machine::{Application, Params, Tip};
    use kaon::storage::blocklog::{BlockLog, BlockLogOptions};
    let dir = tempfile::tempdir().unwrap();
    let allocs = funded(&[1], &[CHAIN]);
    let key = kaon::crypto::bls::SecretKey::from_seed(&[7; 32]).unwrap();
    let params = Params {
        region: ChainId(1000),
        committee_size: 1,
        block_interval_ms: 0,
        base_timeout_ms: 1,
        max_timeout_ms: 1,
        votes: Default::default(),
    };
    let genesis = Tip {
        height: Height(0),
        hash: BlockHash(sha256(b"genesis")),
        mix: sha256(b"mix"),
        timestamp_ms: 1,
    };
    let open_state = || {
        let store = Arc::new(Store::open(dir.path().join("db")).unwrap());
        Arc::new(CommittedState::open(store, &allocs).unwrap())
    };
    let (mut log, _) =
        BlockLog::open(dir.path().join("blocks.log"), BlockLogOptions::default()).unwrap();
    let state = open_state();
    let (mut app, shared) = app_on(Arc::clone(&state), &key, genesis);
    let mut tip = genesis;
    let mut last = None;
    for height in 1..=3u64 {
        let tx = signed(
            1,
            tx1559(
                CHAIN,
                height - 1,
                21_000,
                TxKind::Call(addr(2)),
                1,
                Bytes::new(),
            ),
        );
        shared.pool.lock().unwrap().insert(tx, height - 1).unwrap();
        let timestamp_ms = kaon::consensus::machine::proposal_timestamp(0, &tip);
        let body = app.build(Height(height), &tip, timestamp_ms);
        let set = app.cn_set().clone();
        let block = kaon::consensus::proposal::build_block(
            &params,
            &key,
            CnIndex(0),
            &set,
            &tip,
            Round(0),
            timestamp_ms,
            body,
        );
        app.commit(&block).unwrap();
        let offset = log
            .append(&kaon::types::codec::encode_frame(&block))
            .unwrap();
        // The last block reaches the block log but not RocksDB: a crash in between.
        if height < 3 {
            kaon::chain::recovery::persist(&state, &block, offset.0).unwrap();
        }
        tip = Tip::of(&block);
        last = Some(block);
    }
    let last = last.unwrap();
    assert_eq!(state.store().state_height().unwrap(), Some(2));
    assert_eq!(state.pending_blocks(), 1);
    drop((app, shared, state, log));

    let (log, _) =
        BlockLog::open(dir.path().join("blocks.log"), BlockLogOptions::default()).unwrap();
    let (wal, _) = BlockLog::open(dir.path().join("wal"), BlockLogOptions::default()).unwrap();
    let state = open_state();
    assert_eq!(state.store().state_height().unwrap(), Some(2));
    assert_eq!(state.nonce(CHAIN, &addr(1)).unwrap(), 2);
    let (mut app, _shared) = app_on(Arc::clone(&state), &key, genesis);
    let recovered = kaon::chain::recovery::replay(&log, &state, &wal, &mut app, genesis).unwrap();
    assert_eq!((recovered.blocks, recovered.reexecuted), (3, 1));
    assert_eq!(recovered.tip, tip);
    assert_eq!(state.store().state_height().unwrap(), Some(3));
    assert_eq!(state.pending_blocks(), 0);
    assert_eq!(state.store().nonce(CHAIN, &addr(1)).unwrap(), 3);
    assert_eq!(
        state.store().state_root(CHAIN).unwrap(),
        last.header().segments[1].state_root,
        "re-execution reproduces the committed state root"
    );
    let hash = keccak256(&last.segments[1].txs[0]);
    assert_eq!(
        state
            .store()
            .receipt(&hash)
            .unwrap()
            .unwrap()
            .receipt
            .outcome,
        TxOutcome::Success
    );
}

/// One CN's application over a fresh state in `dir`, with genesis, its key and parameters.
struct AppFixture {
    app: kaon::chain::app::CnApp,
    shared: kaon::chain::app::CnState,
    key: kaon::crypto::bls::SecretKey,
    params: kaon::consensus::machine::Params,
    genesis: kaon::consensus::machine::Tip,
}

impl AppFixture {
    fn new(dir: &std::path::Path) -> Self {
        let key = kaon::crypto::bls::SecretKey::from_seed(&[9; 32]).unwrap();
        let genesis = kaon::consensus::machine::Tip {
            height: Height(0),
            hash: BlockHash(sha256(b"genesis")),
            mix: sha256(b"mix"),
            timestamp_ms: 1,
        };
        let store = Arc::new(Store::open(dir.join("db")).unwrap());
        let state = Arc::new(CommittedState::open(store, &funded(&[1], &[CHAIN])).unwrap());
        let (app, shared) = app_on(state, &key, genesis);
        Self {
            app,
            shared,
            key,
            params: kaon::consensus::machine::Params {
                region: ChainId(1000),
                committee_size: 1,
                block_interval_ms: 0,
                base_timeout_ms: 1,
                max_timeout_ms: 1,
                votes: Default::default(),
            },
            genesis,
        }
    }

    /// An unsealed block on `parent` with `body`, stamped `timestamp_ms`.
    fn block(
        &self,
        parent: &kaon::consensus::machine::Tip,
        timestamp_ms: u64,
        body: kaon::consensus::proposal::BlockBody,
    ) -> Block {
        let set = self.app.cn_set().clone();
        kaon::consensus::proposal::build_block(
            &self.params,
            &self.key,
            CnIndex(0),
            &set,
            parent,
            Round(0),
            timestamp_ms,
            body,
        )
    }
}

/// An execution is reused only for exactly what it ran on. The same segments re-proposed at
/// another timestamp are executed again — and refused when the header carries the first
/// execution's commitments (a contract here stores the block's timestamp). Executions used to
/// be keyed by the commitments alone (issue: hole 7).
#[test]
fn an_execution_is_reused_only_for_the_same_parent_timestamp_and_segments() {
    use kaon::consensus::machine::Application;
    let dir = tempfile::tempdir().unwrap();
    let mut fx = AppFixture::new(dir.path());
    // Constructor: TIMESTAMP PUSH1 0 SSTORE STOP.
    let init = Bytes::from_static(&[0x42, 0x60, 0x00, 0x55, 0x00]);
    let tx = signed(1, tx1559(CHAIN, 0, 100_000, TxKind::Create, 0, init));
    fx.shared.pool.lock().unwrap().insert(tx, 0).unwrap();
    let genesis = fx.genesis;
    let body = fx.app.build(Height(1), &genesis, 1_000);
    let first = fx.block(&genesis, 1_000, body.clone());
    let restamped = fx.block(&genesis, 2_000, body);
    assert_eq!(first.segments, restamped.segments);
    fx.app.validate(&first, &genesis).unwrap();
    let refused = fx.app.validate(&restamped, &genesis).unwrap_err();
    assert!(
        matches!(
            refused,
            kaon::consensus::machine::InvalidBlock::Diverged { segment: 1, .. }
        ),
        "{refused}"
    );
    let err = fx.app.commit(&restamped).unwrap_err();
    assert!(
        matches!(
            err,
            kaon::chain::app::CommitError::Diverged { segment: 1, .. }
        ),
        "{err}"
    );
    fx.app.commit(&first).unwrap();
}

/// The application validates only on the block it has applied, and a committed block whose
/// execution does not reproduce its header's commitments is refused (the node halts) instead
/// of being stored (issue: hole 6).
#[test]
fn the_application_refuses_blocks_off_its_tip_and_divergent_commits() {
    use kaon::consensus::machine::{Application, Tip};
    let dir = tempfile::tempdir().unwrap();
    let mut fx = AppFixture::new(dir.path());
    let genesis = fx.genesis;
    let body = fx.app.build(Height(1), &genesis, 10);
    let block1 = fx.block(&genesis, 10, body);
    fx.app.commit(&block1).unwrap();
    let tip1 = Tip::of(&block1);

    // Another block on genesis, asked after block 1 is applied.
    let body = fx.app.build(Height(1), &genesis, 11);
    let other = fx.block(&genesis, 11, body);
    let refused = fx.app.validate(&other, &genesis).unwrap_err();
    assert_eq!(
        refused,
        kaon::consensus::machine::InvalidBlock::NotOnTip {
            height: Height(1),
            parent: kaon::consensus::machine::GotExpected {
                got: genesis.hash,
                expected: tip1.hash,
            },
        }
    );
    assert!(matches!(
        fx.app.commit(&other).unwrap_err(),
        kaon::chain::app::CommitError::NotOnTip { .. }
    ));

    // Block 2 whose header claims a state other than its execution's.
    let mut body = fx.app.build(Height(2), &tip1, 20);
    body.commitments[0].state_root = sha256(b"not the state");
    let block2 = fx.block(&tip1, 20, body);
    assert!(matches!(
        fx.app.commit(&block2).unwrap_err(),
        kaon::chain::app::CommitError::Diverged { segment: 0, .. }
    ));
    let body = fx.app.build(Height(2), &tip1, 21);
    let honest = fx.block(&tip1, 21, body);
    fx.app.commit(&honest).unwrap();
}
