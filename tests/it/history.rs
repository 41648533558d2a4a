//! Historical state over real JSON-RPC (issue 13): an in-process devnet's RN answers balance,
//! nonce, code, storage, `eth_call` and `eth_estimateGas` at past blocks with what was true at
//! those blocks, as observed at the time; hostile block parameters get clean errors.

use crate::burst::{raw_hex, Client, Devnet};
use alloy_primitives::hex;
use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::crypto::tx::{AccessList, Eip1559Tx, SignedTransaction, Transaction, TxKind};
use kaon::node::accounts::{developer_accounts, DEV_ACCOUNTS};
use kaon::node::devnet::{DevnetConfig, DEV_BALANCE_WEI};
use kaon::types::ChainId;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAIN: ChainId = ChainId(1001);
const GWEI: u128 = 1_000_000_000;
const RECIPIENT: Address = Address::repeat_byte(0xc4);
/// Longest a transaction or a block may take to appear: a safety net for a loaded machine.
const INCLUSION: Duration = Duration::from_secs(120);

/// Runtime of a one-slot register: 32 bytes of calldata store them in slot 0; empty calldata
/// returns slot 0.
pub(crate) const RUNTIME: &str = "36600f5760005460005260206000f35b60003560005500";
/// Init code: copies the 23-byte runtime that follows it to memory and returns it.
const INIT_PREFIX: &str = "601780600b6000396000f3";

pub(crate) fn init_code() -> Bytes {
    hex::decode(format!("{INIT_PREFIX}{RUNTIME}"))
        .unwrap()
        .into()
}

fn block_of(receipt: &Value) -> u64 {
    let hex = receipt["blockNumber"].as_str().unwrap();
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}

pub(crate) fn sign(
    key: &[u8; 32],
    nonce: u64,
    to: TxKind,
    value: u64,
    input: Bytes,
) -> SignedTransaction {
    Transaction::from(Eip1559Tx {
        chain_id: CHAIN,
        nonce,
        max_priority_fee_per_gas: GWEI,
        max_fee_per_gas: 3 * GWEI,
        gas_limit: 200_000,
        to,
        value: U256::from(value),
        input,
        access_list: AccessList::default(),
    })
    .sign(key)
    .unwrap()
}

pub(crate) fn word(v: u64) -> Bytes {
    B256::from(U256::from(v)).0.to_vec().into()
}

fn block_tag(n: u64) -> String {
    format!("0x{n:x}")
}

/// Sends `txs` and waits (bounded) for all their receipts; returns the highest block.
fn include(client: &Client, txs: &[SignedTransaction]) -> (u64, Vec<Value>) {
    for tx in txs {
        assert_eq!(
            client.ok("eth_sendRawTransaction", json!([raw_hex(tx)])),
            json!(tx.hash())
        );
    }
    let started = Instant::now();
    let receipts: Vec<Value> = txs
        .iter()
        .map(|tx| loop {
            let receipt = client.ok("eth_getTransactionReceipt", json!([tx.hash()]));
            if !receipt.is_null() {
                assert_eq!(receipt["status"], "0x1", "{receipt}");
                break receipt;
            }
            assert!(
                started.elapsed() < INCLUSION,
                "{} never included",
                tx.hash()
            );
            std::thread::sleep(Duration::from_millis(50));
        })
        .collect();
    let block = receipts.iter().map(block_of).max().unwrap();
    (block, receipts)
}

/// What the RPC answers about the accounts and the contract at `tag`.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    sender_balance: Value,
    recipient_balance: Value,
    sender_nonce: Value,
    code: Value,
    slot: Value,
    call: Value,
}

fn observe(client: &Client, sender: Address, contract: Address, tag: &Value) -> Observed {
    Observed {
        sender_balance: client.ok("eth_getBalance", json!([sender, tag])),
        recipient_balance: client.ok("eth_getBalance", json!([RECIPIENT, tag])),
        sender_nonce: client.ok("eth_getTransactionCount", json!([sender, tag])),
        code: client.ok("eth_getCode", json!([contract, tag])),
        slot: client.ok("eth_getStorageAt", json!([contract, "0x0", tag])),
        call: match client.call("eth_call", json!([{"to": contract}, tag])) {
            v if v.get("error").is_none() => v["result"].clone(),
            v => panic!("eth_call at {tag}: {v}"),
        },
    }
}

fn head(client: &Client) -> u64 {
    client.quantity("eth_blockNumber", json!([])).to::<u64>()
}

#[test]
fn state_and_calls_at_three_past_blocks_match_what_was_observed_then() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path());
    let client = Client::new(devnet.url());
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    let key = &sender.secret;
    let contract = sender.address.create(0);
    let latest = json!("latest");

    // Each step changes state in one or two blocks; only this test writes to these accounts
    // (the devnet runs without load), so what "latest" answers right after a step's receipts is
    // the state at the step's block and every block up to the next step.
    let mut seen: Vec<(u64, Observed)> = Vec::new();
    let start = head(&client);
    seen.push((start, observe(&client, sender.address, contract, &latest)));
    let steps: Vec<Vec<SignedTransaction>> = vec![
        vec![sign(key, 0, TxKind::Create, 0, init_code())],
        vec![
            sign(key, 1, TxKind::Call(RECIPIENT), 1_000, Bytes::new()),
            sign(key, 2, TxKind::Call(contract), 0, word(7)),
        ],
        vec![
            sign(key, 3, TxKind::Call(contract), 0, word(9)),
            sign(key, 4, TxKind::Call(RECIPIENT), 2_000, Bytes::new()),
        ],
        vec![sign(key, 5, TxKind::Call(contract), 0, word(0))],
    ];
    let mut first_blocks = Vec::new();
    for step in &steps {
        let (block, receipts) = include(&client, step);
        first_blocks.push(receipts.iter().map(block_of).min().unwrap());
        seen.push((block, observe(&client, sender.address, contract, &latest)));
    }
    let (deployed, stored_7, stored_9) = (&seen[1].1, &seen[2].1, &seen[3].1);
    assert_eq!(deployed.code, json!(format!("0x{RUNTIME}")));
    assert_eq!(seen[0].1.code, json!("0x"));
    assert_eq!(stored_7.slot, json!(format!("0x{}", hex::encode(word(7)))));
    assert_eq!(stored_9.call, json!(format!("0x{}", hex::encode(word(9)))));
    assert_eq!(seen[4].1.slot, json!(format!("0x{}", hex::encode(word(0)))));

    // Every step's block is now in the past.
    let last = seen.last().unwrap().0;
    let started = Instant::now();
    while head(&client) <= last {
        assert!(started.elapsed() < INCLUSION, "the chain stopped at {last}");
        std::thread::sleep(Duration::from_millis(50));
    }

    for (i, (block, observed)) in seen.iter().enumerate() {
        let by_number = json!(block_tag(*block));
        assert_eq!(
            &observe(&client, sender.address, contract, &by_number),
            observed,
            "state at block {block} (step {i}) read by number"
        );
        let hash = client.ok("eth_getBlockByNumber", json!([by_number, false]))["hash"].clone();
        assert_eq!(
            &observe(
                &client,
                sender.address,
                contract,
                &json!({"blockHash": hash})
            ),
            observed,
            "state at block {block} (step {i}) read by hash"
        );
    }
    // A block without this chain's segment (genesis, an idle block) reports the chain's state
    // as of that block: genesis the allocations' commitment, an idle block its last change's.
    let block_at = |n: u64| client.ok("eth_getBlockByNumber", json!([block_tag(n), false]));
    let zero = json!(format!("0x{}", "0".repeat(64)));
    let genesis_root = block_at(0)["stateRoot"].clone();
    assert_ne!(genesis_root, zero, "genesis allocations have a commitment");
    let mut idle_checked = 0;
    for (block, _) in &seen[1..] {
        let next = block_at(block + 1);
        if next["transactions"].as_array().is_some_and(Vec::is_empty) {
            assert_eq!(
                next["stateRoot"],
                block_at(*block)["stateRoot"],
                "block {}",
                block + 1
            );
            assert_ne!(next["stateRoot"], zero);
            idle_checked += 1;
        }
    }
    assert!(idle_checked > 0, "no idle block followed a step");

    // The block just before each step still has the previous step's state.
    for (i, first) in first_blocks.iter().enumerate() {
        assert_eq!(
            observe(
                &client,
                sender.address,
                contract,
                &json!(block_tag(first - 1))
            ),
            seen[i].1,
            "block {} just before step {}",
            first - 1,
            i + 1
        );
    }
    // `earliest` is genesis: the development balance, nothing else.
    let earliest = observe(&client, sender.address, contract, &json!("earliest"));
    assert_eq!(
        earliest.sender_balance,
        json!(format!("0x{:x}", U256::from(DEV_BALANCE_WEI)))
    );
    assert_eq!(
        (earliest.sender_nonce, earliest.code),
        (json!("0x0"), json!("0x"))
    );
    // `safe` and `finalized` are the head (instant finality).
    let now = observe(&client, sender.address, contract, &latest);
    for tag in ["safe", "finalized"] {
        assert_eq!(observe(&client, sender.address, contract, &json!(tag)), now);
    }
    // Gas estimation runs against the past state: storing into the register where slot 0 was
    // zero (before the first store) costs a fresh SSTORE; where it held 9 it costs a reset.
    let store = json!({"from": sender.address, "to": contract, "data": format!("0x{}", hex::encode(word(5)))});
    let fresh = client.quantity("eth_estimateGas", json!([store, block_tag(seen[1].0)]));
    let reset = client.quantity("eth_estimateGas", json!([store, block_tag(seen[3].0)]));
    assert!(fresh > reset, "fresh {fresh} vs reset {reset}");
    // eth_createAccessList at a past block: reading the register touches its slot 0 (the
    // recipient is listed for its slot; the sender never is), and the gas is the call's with
    // that list. Before the contract existed no code ran and nothing is listed. A creation
    // that reverts says so in `error`.
    let read = json!({"from": sender.address, "to": contract});
    let contract_hex = format!("0x{}", hex::encode(contract));
    let listed = client.ok("eth_createAccessList", json!([read, block_tag(seen[3].0)]));
    assert_eq!(
        listed["accessList"],
        json!([{"address": contract_hex, "storageKeys": [B256::ZERO]}]),
        "{listed}"
    );
    assert!(listed.get("error").is_none(), "{listed}");
    let listed_gas = u64::from_str_radix(
        listed["gasUsed"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    // 21 000 + the list (2 400 + 1 900) + a warm SLOAD and the register's few pushes.
    assert!((25_400..26_000).contains(&listed_gas), "{listed}");
    let before = client.ok("eth_createAccessList", json!([read, block_tag(seen[0].0)]));
    assert_eq!(
        before,
        json!({"accessList": [], "gasUsed": "0x5208"}),
        "{before}"
    );
    let reverting = json!({"from": sender.address, "data": "0x60006000fd"});
    let reverted = client.ok("eth_createAccessList", json!([reverting]));
    assert_eq!(reverted["error"], "execution reverted", "{reverted}");
    assert_eq!(reverted["accessList"], json!([]), "{reverted}");

    // Before the contract existed, a call to it returns nothing.
    assert_eq!(
        client.ok("eth_call", json!([{"to": contract}, block_tag(seen[0].0)])),
        json!("0x")
    );

    // Hostile block parameters get clean errors.
    let huge = client.call(
        "eth_getBalance",
        json!([sender.address, "0xffffffffffffffff"]),
    );
    assert_eq!(huge["error"]["code"], -32000, "{huge}");
    assert_eq!(huge["error"]["message"], "header not found", "{huge}");
    let call_huge = client.call("eth_call", json!([{"to": contract}, "0xffffffffffffffff"]));
    assert_eq!(
        call_huge["error"]["message"], "header not found",
        "{call_huge}"
    );
    let unknown = client.call(
        "eth_getStorageAt",
        json!([contract, "0x0", {"blockHash": B256::repeat_byte(0xee)}]),
    );
    assert_eq!(unknown["error"]["code"], -32000, "{unknown}");
    assert_eq!(unknown["error"]["message"], "header for hash not found");
    let too_wide = client.call(
        "eth_getBalance",
        json!([sender.address, "0x10000000000000000"]),
    );
    assert_eq!(too_wide["error"]["code"], -32602, "{too_wide}");
}

#[test]
fn a_bounded_history_refuses_older_blocks_naming_the_oldest_readable_one() {
    const KEEP: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with(DevnetConfig {
        history_blocks: Some(KEEP),
        ..Devnet::config(dir.path())
    });
    let client = Client::new(devnet.url());
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0).address;
    let dev_balance = json!(format!("0x{:x}", U256::from(DEV_BALANCE_WEI)));
    let started = Instant::now();
    while head(&client) < 1 {
        assert!(started.elapsed() < INCLUSION, "no block 1");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Block 1 stays readable until the head passes 1 + KEEP and the pruner catches up.
    let refusal = loop {
        let reply = client.call("eth_getBalance", json!([sender, "0x1"]));
        if reply.get("error").is_some() {
            break reply["error"].clone();
        }
        assert_eq!(reply["result"], dev_balance);
        assert!(
            started.elapsed() < INCLUSION,
            "block 1 is still readable at head {} with {KEEP} blocks of history",
            head(&client)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refusal["code"], -32000, "{refusal}");
    let message = refusal["message"].as_str().unwrap();
    let prefix = "historical state not available: block 1 is older than the oldest retained block ";
    assert!(message.starts_with(prefix), "{message}");
    let oldest: u64 = message[prefix.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = head(&client);
    assert!(oldest > 1 && oldest <= now, "oldest {oldest}, head {now}");
    // `earliest` is refused the same way; the retained window still answers.
    let earliest = client.call("eth_getBalance", json!([sender, "earliest"]));
    assert!(
        earliest["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("historical state not available: block 0 is older"),
        "{earliest}"
    );
    let recent = head(&client) - 1;
    assert_eq!(
        client.ok("eth_getBalance", json!([sender, block_tag(recent)])),
        dev_balance
    );
}

/// The fee and `kaon_*` methods answered by the node's real backend (`ChainRpc` over the RN's
/// block log, RocksDB and regionchain), not a mock: one transfer paying a 1 gwei tip is the
/// only transaction of its block on servicechain 1001, so that block's fee history is
/// exactly its gas and tip; the registry lists the genesis servicechain; an address that never
/// mined has no PoP entry.
#[test]
fn fee_history_and_kaon_methods_come_from_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path());
    let client = Client::new(devnet.url());
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(3);
    let tx = sign(&sender.secret, 0, TxKind::Call(RECIPIENT), 1, Bytes::new());
    let (block, receipts) = include(&client, &[tx]);
    assert_eq!(receipts[0]["gasUsed"], "0x5208");
    let history = client.ok("eth_feeHistory", json!(["0x1", block_tag(block), [50.0]]));
    let base_fee = json!(format!("{:#x}", kaon::exec::BASE_FEE_WEI));
    assert_eq!(history["oldestBlock"], json!(block_tag(block)), "{history}");
    assert_eq!(history["baseFeePerGas"][0], base_fee, "{history}");
    let ratio = 21_000.0 / kaon::exec::SEGMENT_GAS_LIMIT as f64;
    assert_eq!(history["gasUsedRatio"], json!([ratio]), "{history}");
    assert_eq!(
        history["reward"],
        json!([[format!("{GWEI:#x}")]]),
        "{history}"
    );
    // The price a wallet is told is the base fee plus the tip it is told to offer.
    let tip = client.quantity("eth_maxPriorityFeePerGas", json!([]));
    let price = client.quantity("eth_gasPrice", json!([]));
    assert_eq!(price, U256::from(kaon::exec::BASE_FEE_WEI) + tip);
    let registry = client.ok("kaon_servicechains", json!([]));
    assert_eq!(registry["region"], 1000, "{registry}");
    assert_eq!(registry["count"], 1, "{registry}");
    assert_eq!(registry["servicechains"][0]["chainId"], 1001, "{registry}");
    let nobody = Address::repeat_byte(0x5e);
    let pop = client.ok("kaon_popState", json!([nobody]));
    assert_eq!(pop["rns"], json!({}), "{pop}");
    // Nobody mines on this devnet: the difficulty is still genesis's.
    assert_eq!(
        pop["difficultyBits"],
        DevnetConfig::default().por_bits,
        "{pop}"
    );
}
