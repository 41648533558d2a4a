//! No accepted transaction is lost (issue 13): a client's burst of transfers with explicit
//! nonces, sent as ethers v6 sends them (batches of up to 100 calls per HTTP request, several
//! requests in flight, so arrival order is not nonce order), against a real in-process devnet's
//! JSON-RPC. Every hash the RPC answered must end up in a block.

use alloy_primitives::hex;
use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::crypto::tx::{AccessList, Eip1559Tx, SignedTransaction, Transaction, TxKind};
use kaon::exec::{BASE_FEE_WEI, TRANSFER_GAS};
use kaon::mempool::DEFAULT_MAX_QUEUED_PER_ACCOUNT;
use kaon::node::accounts::{developer_accounts, DEV_ACCOUNTS};
use kaon::node::devnet::{run, DevnetConfig, DEV_BALANCE_WEI};
use kaon::types::ChainId;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHAIN: ChainId = ChainId(1001);
const BURST: u64 = 1_000;
/// ethers v6's `batchMaxCount`.
const BATCH: usize = 100;
const GWEI: u128 = 1_000_000_000;
const VALUE_WEI: u64 = 1_000;
const RECIPIENT: Address = Address::repeat_byte(0xb7);
/// Longest the devnet may take to print its RPC address.
const STARTUP: Duration = Duration::from_secs(60);
/// Longest the whole burst may take to be included: a safety net, generous for a loaded
/// 2-core machine (it takes 25–85 s there).
const INCLUSION: Duration = Duration::from_secs(240);

/// The devnet's output, shared with the test thread that looks for the RPC address.
#[derive(Clone, Default)]
pub(crate) struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn url(&self, chain: ChainId) -> Option<String> {
        let marker = format!("/chain/{chain}");
        self.text()
            .split_whitespace()
            .find(|w| w.starts_with("http://") && w.ends_with(&marker))
            .map(str::to_string)
    }
}

/// The tip a transfer offers: 1.2 to 1.8 gwei by nonce, so blocks pay a spread of tips (and
/// none of them is the 1 gwei an idle chain suggests).
fn tip(nonce: u64) -> u128 {
    GWEI + u128::from(2 + nonce % 7) * GWEI / 10
}

fn transfer(key: &[u8; 32], nonce: u64, value: u64) -> SignedTransaction {
    transfer_on(CHAIN, RECIPIENT, key, nonce, value)
}

/// A signed EIP-1559 transfer of `value` wei to `to` on `chain`.
pub(crate) fn transfer_on(
    chain: ChainId,
    to: Address,
    key: &[u8; 32],
    nonce: u64,
    value: u64,
) -> SignedTransaction {
    Transaction::from(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: tip(nonce),
        max_fee_per_gas: 3 * GWEI,
        gas_limit: TRANSFER_GAS,
        to: TxKind::Call(to),
        value: U256::from(value),
        input: Bytes::new(),
        access_list: AccessList::default(),
    })
    .sign(key)
    .unwrap()
}

pub(crate) fn raw_hex(tx: &SignedTransaction) -> String {
    format!("0x{}", hex::encode(tx.raw()))
}

pub(crate) struct Client {
    url: String,
    http: ureq::Agent,
}

impl Client {
    pub(crate) fn new(url: String) -> Self {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { url, http }
    }

    pub(crate) fn post(&self, body: &Value) -> Value {
        let (status, text) = self.post_status(body);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The receipt of `hash` once it exists; fails with `what` after `within`.
    pub(crate) fn receipt_within(&self, hash: B256, within: Duration, what: &str) -> Value {
        let started = Instant::now();
        loop {
            let receipt = self.ok("eth_getTransactionReceipt", json!([hash]));
            if !receipt.is_null() {
                return receipt;
            }
            assert!(started.elapsed() < within, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The HTTP status and body of a request whatever the status.
    pub(crate) fn post_status(&self, body: &Value) -> (u16, String) {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    pub(crate) fn call(&self, method: &str, params: Value) -> Value {
        self.post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    }

    pub(crate) fn ok(&self, method: &str, params: Value) -> Value {
        let v = self.call(method, params);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    pub(crate) fn quantity(&self, method: &str, params: Value) -> U256 {
        let v = self.ok(method, params);
        let s = v.as_str().unwrap();
        U256::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    }

    pub(crate) fn nonce(&self, who: Address, tag: &str) -> u64 {
        self.quantity("eth_getTransactionCount", json!([who, tag]))
            .to::<u64>()
    }
}

/// Stops the devnet when the test ends, however it ends.
pub(crate) struct Devnet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<kaon::node::devnet::DevnetReport>>>,
    out: Output,
}

impl Devnet {
    pub(crate) fn start(dir: &std::path::Path) -> Self {
        Self::start_with(Self::config(dir))
    }

    /// A devnet whose idle chain makes a block every `round_ms`.
    fn start_with_interval(dir: &std::path::Path, round_ms: u64) -> Self {
        Self::start_with(DevnetConfig {
            round_ms,
            ..Self::config(dir)
        })
    }

    /// A 4-CN devnet without load, one servicechain and one RN serving JSON-RPC.
    pub(crate) fn config(dir: &std::path::Path) -> DevnetConfig {
        DevnetConfig {
            cns: 4,
            servicechains: 1,
            tps: 0,
            round_ms: 200,
            load_accounts: 1,
            datadir: Some(dir.to_path_buf()),
            // A safety net: the test stops the devnet itself.
            duration: Some(Duration::from_secs(300)),
            rns: 1,
            rpc: Some("127.0.0.1:0".parse().unwrap()),
            miner_pace: 0,
            ..DevnetConfig::default()
        }
    }

    pub(crate) fn start_with(config: DevnetConfig) -> Self {
        let out = Output::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, mut out) = (Arc::clone(&stop), out.clone());
            std::thread::spawn(move || run(&config, stop, &mut out))
        };
        Self {
            stop,
            thread: Some(thread),
            out,
        }
    }

    pub(crate) fn url(&self) -> String {
        let started = Instant::now();
        loop {
            if let Some(url) = self.out.url(CHAIN) {
                return url;
            }
            let finished = self.thread.as_ref().is_none_or(|t| t.is_finished());
            assert!(
                started.elapsed() < STARTUP && !finished,
                "the devnet printed no RPC address for chain {CHAIN}:\n{}",
                self.out.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if !std::thread::panicking() {
                result.unwrap().unwrap();
            }
        }
    }
}

#[test]
fn burst_of_1000_shuffled_nonces_in_batches_is_all_included() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path());
    let client = Arc::new(Client::new(devnet.url()));
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    assert_eq!(client.nonce(sender.address, "latest"), 0);

    let txs: Vec<SignedTransaction> = (0..BURST)
        .map(|n| transfer(&sender.secret, n, VALUE_WEI))
        .collect();
    let seed: u64 = rand::random();
    println!("shuffle seed {seed}");
    let mut order: Vec<usize> = (0..txs.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    // Every batch in flight at once, as ethers sends a burst.
    let senders: Vec<_> = order
        .chunks(BATCH)
        .map(|chunk| {
            let body: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    json!({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction",
                           "params": [raw_hex(&txs[i])]})
                })
                .collect();
            let client = Arc::clone(&client);
            std::thread::spawn(move || client.post(&Value::Array(body)))
        })
        .collect();
    for handle in senders {
        let replies = handle.join().unwrap();
        for reply in replies.as_array().unwrap() {
            let i = reply["id"].as_u64().unwrap() as usize;
            assert_eq!(
                reply["result"],
                json!(txs[i].hash()),
                "nonce {i} (seed {seed}): {reply}"
            );
        }
    }
    assert_eq!(client.nonce(sender.address, "pending"), BURST);

    let started = Instant::now();
    loop {
        let mined = client.nonce(sender.address, "latest");
        if mined == BURST {
            break;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "after {INCLUSION:?} only {mined} of {BURST} transfers are included (pending nonce {}, seed {seed})",
            client.nonce(sender.address, "pending")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // While the burst's blocks are among the last 20, the oracle samples them.
    the_suggested_tip_is_the_oracle_over_recent_receipts(&client);

    let spent: U256 = (0..BURST)
        .map(|n| {
            let effective_price = U256::from(u128::from(BASE_FEE_WEI) + tip(n));
            U256::from(VALUE_WEI) + U256::from(TRANSFER_GAS) * effective_price
        })
        .sum();
    assert_eq!(
        client.quantity("eth_getBalance", json!([RECIPIENT, "latest"])),
        U256::from(BURST * VALUE_WEI)
    );
    assert_eq!(
        client.quantity("eth_getBalance", json!([sender.address, "latest"])),
        U256::from(DEV_BALANCE_WEI) - spent
    );
    assert_eq!(client.nonce(sender.address, "pending"), BURST);

    // A stale nonce is refused, not answered with a hash that is never mined.
    let stale = transfer(&sender.secret, 37, VALUE_WEI + 1);
    let reply = client.call("eth_sendRawTransaction", json!([raw_hex(&stale)]));
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("nonce too low"), "{reply}");

    // A future nonce is queued (a hash), but `pending` counts only the gap-free run.
    let queued = transfer(&sender.secret, BURST + 5, VALUE_WEI);
    let reply = client.call("eth_sendRawTransaction", json!([raw_hex(&queued)]));
    assert_eq!(reply["result"], json!(queued.hash()), "{reply}");
    assert_eq!(client.nonce(sender.address, "pending"), BURST);
    // Beyond the per-account queue the client is told, not answered with a hash.
    let too_far = transfer(
        &sender.secret,
        BURST + DEFAULT_MAX_QUEUED_PER_ACCOUNT,
        VALUE_WEI,
    );
    let reply = client.call("eth_sendRawTransaction", json!([raw_hex(&too_far)]));
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("nonce too high"), "{reply}");
    // The last nonce (EIP-2681): refused, and nothing downstream computes `nonce + 1` on it.
    let last = transfer(&sender.secret, u64::MAX, VALUE_WEI);
    let reply = client.call("eth_sendRawTransaction", json!([raw_hex(&last)]));
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nonce has max value"), "{reply}");
    assert_eq!(client.nonce(sender.address, "pending"), BURST);

    fee_history_rewards_are_the_tips_paid(&client);
}

/// A quantity field of a JSON-RPC answer.
fn quantity_of(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// The tips the transactions of block `number` paid, from its receipts.
fn tips_paid(client: &Client, number: u64) -> Vec<u128> {
    let receipts = client.ok("eth_getBlockReceipts", json!([format!("{number:#x}")]));
    receipts
        .as_array()
        .unwrap()
        .iter()
        .map(|r| quantity_of(&r["effectiveGasPrice"]) - u128::from(BASE_FEE_WEI))
        .collect()
}

/// `eth_feeHistory` rewards are the tips the burst's blocks paid: the lowest at the 0th
/// percentile, the highest at the 100th; empty blocks reward 0.
fn fee_history_rewards_are_the_tips_paid(client: &Client) {
    let head = client.quantity("eth_blockNumber", json!([])).to::<u64>();
    let history = client.ok(
        "eth_feeHistory",
        json!([head, "latest", [0.0, 50.0, 100.0]]),
    );
    let oldest = quantity_of(&history["oldestBlock"]) as u64;
    let rewards = history["reward"].as_array().unwrap();
    let mut paying_blocks = 0;
    for (i, reward) in rewards.iter().enumerate() {
        let tips = tips_paid(client, oldest + i as u64);
        let reward: Vec<u128> = reward.as_array().unwrap().iter().map(quantity_of).collect();
        match (tips.iter().min(), tips.iter().max()) {
            (Some(&low), Some(&high)) => {
                paying_blocks += 1;
                assert_eq!(
                    (reward[0], reward[2]),
                    (low, high),
                    "block {}",
                    oldest + i as u64
                );
                assert!(low <= reward[1] && reward[1] <= high, "{reward:?}");
            }
            _ => assert_eq!(reward, vec![0, 0, 0], "empty block {}", oldest + i as u64),
        }
    }
    assert!(
        paying_blocks > 0,
        "no block of the burst paid a tip: {history}"
    );
}

/// `eth_maxPriorityFeePerGas` is geth's oracle over the last 20 blocks' receipts, and
/// `eth_gasPrice` adds the base fee. The suggestion is read in one batch between two reads
/// of the head (a batch runs in order), so the blocks it was computed from are known; the
/// expected value is then recomputed from those blocks' receipts.
fn the_suggested_tip_is_the_oracle_over_recent_receipts(client: &Client) {
    let call =
        |method: &str| json!({"jsonrpc": "2.0", "id": method, "method": method, "params": []});
    for _ in 0..20 {
        let batch = json!([
            call("eth_blockNumber"),
            call("eth_maxPriorityFeePerGas"),
            call("eth_gasPrice"),
            call("eth_blockNumber")
        ]);
        let answers = client.post(&batch);
        let results: Vec<u128> = answers
            .as_array()
            .unwrap()
            .iter()
            .map(|a| quantity_of(&a["result"]))
            .collect();
        let (head, suggested, price) = (results[0] as u64, results[1], results[2]);
        if results[3] as u64 != head {
            continue;
        }
        let mut samples: Vec<u128> = Vec::new();
        for number in head.saturating_sub(19).max(1)..=head {
            let mut tips = tips_paid(client, number);
            tips.sort_unstable();
            samples.extend(tips.into_iter().filter(|&t| t >= 2).take(3));
        }
        assert!(!samples.is_empty(), "no paid tip in blocks up to {head}");
        samples.sort_unstable();
        let expected = samples[(samples.len() - 1) * 60 / 100];
        assert_eq!(suggested, expected, "samples {samples:?}");
        assert_eq!(price, expected + u128::from(BASE_FEE_WEI));
        return;
    }
    panic!("the head moved during every one of 20 attempts");
}

/// Responsive proposing: the devnet's idle interval is 60 s, yet a transaction sent once the
/// RPC is up is in a block well before it, because the proposer proposes as soon as
/// transactions wait (after its batching window). The receipt is awaited for 50 s at most, and
/// the block's timestamp is less than 60 s after its parent's.
#[test]
fn a_waiting_transaction_is_proposed_without_waiting_for_the_idle_interval() {
    const IDLE_MS: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with_interval(dir.path(), IDLE_MS);
    let client = Client::new(devnet.url());
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    let tx = transfer(&sender.secret, 0, VALUE_WEI);
    assert_eq!(
        client.ok("eth_sendRawTransaction", json!([raw_hex(&tx)])),
        json!(tx.hash())
    );
    let receipt = client.receipt_within(
        tx.hash(),
        Duration::from_secs(50),
        "no receipt after 50 s: the proposer waited for its idle interval",
    );
    let number = quantity_of(&receipt["blockNumber"]) as u64;
    let block = client.ok(
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    );
    let parent = client.ok(
        "eth_getBlockByNumber",
        json!([format!("{:#x}", number - 1), false]),
    );
    let gap_s = quantity_of(&block["timestamp"]) - quantity_of(&parent["timestamp"]);
    assert!(
        u128::from(IDLE_MS / 1000) > gap_s,
        "block {number} came {gap_s} s after its parent"
    );
}
