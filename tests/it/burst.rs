//! No accepted transaction is lost (issue 13): a client's burst of transfers with explicit
//! nonces, sent as ethers v6 sends them (batches of up to 100 calls per HTTP request, several
//! requests in flight, so arrival order is not nonce order), against a real in-process devnet's
//! JSON-RPC. Every hash the RPC answered must end up in a block.

use alloy_primitives::{Address, Bytes, U256};
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
const TIP: u128 = GWEI;
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

fn transfer(key: &[u8; 32], nonce: u64, value: u64) -> SignedTransaction {
    Transaction::from(Eip1559Tx {
        chain_id: CHAIN,
        nonce,
        max_priority_fee_per_gas: TIP,
        max_fee_per_gas: 3 * GWEI,
        gas_limit: TRANSFER_GAS,
        to: TxKind::Call(RECIPIENT),
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
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
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

    /// A 4-CN devnet without load, one servicechain and one RN serving JSON-RPC.
    pub(crate) fn config(dir: &std::path::Path) -> DevnetConfig {
        DevnetConfig {
            cns: 4,
            servicechains: 1,
            tps: 0,
            round_ms: 200,
            accounts: 1,
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

    let effective_price = U256::from(u128::from(BASE_FEE_WEI) + TIP);
    let spent =
        U256::from(BURST) * (U256::from(VALUE_WEI) + U256::from(TRANSFER_GAS) * effective_price);
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
}
