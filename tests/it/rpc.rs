//! JSON-RPC server over real sockets on 127.0.0.1: an in-memory backend stands in for the
//! node, requests go through a real HTTP client (ureq) or WebSocket client (tungstenite), and
//! every method's encoding, the protocol errors and the limits are checked.

use alloy_primitives::{Address, Bloom, Bytes, B256, U256};
use futures_util::{SinkExt, StreamExt};
use kaon::crypto::tx::{
    address_of, AccessList, Eip1559Tx, LegacyTx, RecoveredTx, SignedTransaction, Transaction,
    TxKind,
};
use kaon::rpc::{
    BackendError, BlockTransactions, CallRequest, LogQuery, RpcBackend, RpcBlock, RpcConfig,
    RpcFeeHistory, RpcLog, RpcReceipt, RpcServer, RpcTransaction, StateAt, SubmitError, TxLocation,
};
use kaon::telemetry::Metrics;
use kaon::types::ChainId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

mod schema;

const CHAIN: ChainId = ChainId(1001);
const OTHER_CHAIN: ChainId = ChainId(1002);
const ALICE_KEY: [u8; 32] = [0x11; 32];
const BASE_FEE: u64 = 500_000_000;
const GWEI: u128 = 1_000_000_000;
/// A contract whose calls revert with `Error("nope")`.
const REVERTER: Address = Address::repeat_byte(0xee);
/// A contract whose calls return their input.
const ECHO: Address = Address::repeat_byte(0xec);
/// A contract whose calls block until the test releases them (deadline tests).
const STALLER: Address = Address::repeat_byte(0x5a);
const TOKEN: Address = Address::repeat_byte(0x70);
const BOB: Address = Address::repeat_byte(0xb0);
const TRANSFER_TOPIC: B256 = B256::repeat_byte(0xa1);
const APPROVAL_TOPIC: B256 = B256::repeat_byte(0xa2);
/// How long a test waits for something the server must do promptly.
const PATIENCE: Duration = Duration::from_secs(10);

fn alice() -> Address {
    address_of(&ALICE_KEY).unwrap()
}

fn signed(chain: ChainId, nonce: u64) -> SignedTransaction {
    Transaction::from(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: GWEI,
        max_fee_per_gas: 2 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(BOB),
        value: U256::from(10u64).pow(U256::from(18)),
        input: Bytes::new(),
        access_list: AccessList::default(),
    })
    .sign(&ALICE_KEY)
    .unwrap()
}

fn signed_legacy(chain: ChainId, nonce: u64) -> SignedTransaction {
    Transaction::from(LegacyTx {
        chain_id: Some(chain),
        nonce,
        gas_price: 3 * GWEI,
        gas_limit: 50_000,
        to: TxKind::Create,
        value: U256::ZERO,
        input: Bytes::from_static(&[0x60, 0x00]),
    })
    .sign(&ALICE_KEY)
    .unwrap()
}

fn error_string(reason: &str) -> Bytes {
    let mut out = vec![0x08, 0xc3, 0x79, 0xa0];
    out.extend_from_slice(&B256::from(U256::from(32)).0);
    out.extend_from_slice(&B256::from(U256::from(reason.len())).0);
    let mut text = reason.as_bytes().to_vec();
    text.resize(32, 0);
    out.extend_from_slice(&text);
    out.into()
}

/// One chain's data, as the node would hold it.
#[derive(Default)]
struct MemChain {
    blocks: Vec<RpcBlock>,
    txs: HashMap<B256, RpcTransaction>,
    receipts: HashMap<B256, RpcReceipt>,
    logs: Vec<RpcLog>,
    balances: HashMap<Address, U256>,
    nonces: HashMap<Address, u64>,
    code: HashMap<Address, Bytes>,
    storage: HashMap<(Address, B256), B256>,
    pool: Vec<(Address, SignedTransaction)>,
}

/// The in-memory node.
struct MemBackend {
    chains: Mutex<HashMap<ChainId, MemChain>>,
    /// Released by the deadline test to let a stalled call finish.
    stall: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

fn block(number: u64, parent: B256, txs: Vec<RpcTransaction>) -> RpcBlock {
    RpcBlock {
        number,
        hash: B256::repeat_byte(0x40 + number as u8),
        parent_hash: parent,
        timestamp: 1_700_000_000 + number,
        gas_used: 21_000 * txs.len() as u64,
        gas_limit: 30_000_000,
        base_fee_per_gas: Some(BASE_FEE),
        state_root: B256::repeat_byte(0x51),
        transactions_root: B256::repeat_byte(0x52),
        receipts_root: B256::repeat_byte(0x53),
        logs_bloom: Bloom::ZERO,
        miner: Address::ZERO,
        mix_hash: B256::repeat_byte(0x54),
        extra_data: Bytes::new(),
        size: 512,
        transactions: BlockTransactions::Full(txs),
    }
}

fn chain_fixture(chain: ChainId) -> MemChain {
    let mut c = MemChain::default();
    let genesis = block(0, B256::ZERO, Vec::new());
    let tx = signed(chain, 0);
    let location = TxLocation {
        block_hash: B256::repeat_byte(0x41),
        block_number: 1,
        block_timestamp: 1_700_000_001,
        index: 0,
        base_fee_per_gas: Some(BASE_FEE),
    };
    let included = RpcTransaction {
        tx: tx.clone(),
        from: alice(),
        location: Some(location),
    };
    let log = |i: u64, topic: B256| RpcLog {
        address: TOKEN,
        topics: vec![topic, B256::from(alice().into_word())],
        data: Bytes::from(vec![i as u8; 32]),
        block_number: 1,
        block_hash: location.block_hash,
        block_timestamp: location.block_timestamp,
        transaction_hash: tx.hash(),
        transaction_index: 0,
        log_index: i,
        removed: false,
    };
    let logs = vec![log(0, TRANSFER_TOPIC), log(1, APPROVAL_TOPIC)];
    let receipt = RpcReceipt {
        transaction_hash: tx.hash(),
        transaction_index: 0,
        block_hash: location.block_hash,
        block_number: 1,
        from: alice(),
        to: Some(BOB),
        tx_type: 2,
        status: true,
        gas_used: 21_000,
        cumulative_gas_used: 21_000,
        effective_gas_price: 1_500_000_000,
        contract_address: None,
        logs: logs.clone(),
    };
    let one = block(1, genesis.hash, vec![included.clone()]);
    let two = block(2, one.hash, Vec::new());
    c.blocks = vec![genesis, one, two];
    c.txs.insert(tx.hash(), included);
    c.receipts.insert(tx.hash(), receipt);
    c.logs = logs;
    c.balances.insert(
        alice(),
        U256::from(5u64) * U256::from(10u64).pow(U256::from(18)),
    );
    c.nonces.insert(alice(), 1);
    c.code.insert(ECHO, Bytes::from_static(&[0x60, 0x01]));
    c.storage
        .insert((ECHO, B256::with_last_byte(1)), B256::with_last_byte(0x2a));
    c
}

impl MemBackend {
    fn new() -> Self {
        Self::with_chains(&[CHAIN, OTHER_CHAIN])
    }

    fn with_chains(ids: &[ChainId]) -> Self {
        let chains = ids.iter().map(|&id| (id, chain_fixture(id))).collect();
        Self {
            chains: Mutex::new(chains),
            stall: Mutex::new(None),
        }
    }

    fn with<T>(&self, chain: ChainId, f: impl FnOnce(&mut MemChain) -> T) -> T {
        let mut chains = self.chains.lock().unwrap();
        f(chains.get_mut(&chain).expect("routed chains exist"))
    }

    /// Commits an empty block whose logs are `logs` (one from `TOKEN`, one from `BOB`).
    fn append_block(&self, chain: ChainId) -> RpcBlock {
        self.with(chain, |c| {
            let parent = c.blocks.last().expect("genesis exists").hash;
            let b = block(c.blocks.len() as u64, parent, Vec::new());
            for (i, address) in [TOKEN, BOB].into_iter().enumerate() {
                c.logs.push(RpcLog {
                    address,
                    topics: vec![TRANSFER_TOPIC],
                    data: Bytes::new(),
                    block_number: b.number,
                    block_hash: b.hash,
                    block_timestamp: b.timestamp,
                    transaction_hash: B256::repeat_byte(0x77),
                    transaction_index: 0,
                    log_index: i as u64,
                    removed: false,
                });
            }
            c.blocks.push(b.clone());
            b
        })
    }

    fn only_latest(at: StateAt) -> Result<(), BackendError> {
        match at {
            StateAt::Historical(_) => Err(BackendError::HistoricalState),
            _ => Ok(()),
        }
    }

    fn shaped(b: &RpcBlock, full: bool) -> RpcBlock {
        let mut b = b.clone();
        if !full {
            if let BlockTransactions::Full(txs) = &b.transactions {
                b.transactions =
                    BlockTransactions::Hashes(txs.iter().map(|t| t.tx.hash()).collect());
            }
        }
        b
    }

    fn execute(&self, request: &CallRequest) -> Result<Bytes, BackendError> {
        match request.to {
            Some(REVERTER) => Err(BackendError::Reverted {
                output: error_string("nope"),
            }),
            Some(ECHO) => Ok(request.input.clone()),
            Some(STALLER) => {
                if let Some(rx) = self.stall.lock().unwrap().take() {
                    let _ = rx.recv_timeout(PATIENCE);
                }
                Ok(Bytes::new())
            }
            _ => Ok(Bytes::new()),
        }
    }
}

impl RpcBackend for MemBackend {
    fn has_chain(&self, chain: ChainId) -> bool {
        self.chains.lock().unwrap().contains_key(&chain)
    }

    fn head(&self, chain: ChainId) -> Result<u64, BackendError> {
        Ok(self.with(chain, |c| c.blocks.len() as u64 - 1))
    }

    fn block_by_number(
        &self,
        chain: ChainId,
        number: u64,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        Ok(self.with(chain, |c| {
            c.blocks.get(number as usize).map(|b| Self::shaped(b, full))
        }))
    }

    fn block_by_hash(
        &self,
        chain: ChainId,
        hash: B256,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        Ok(self.with(chain, |c| {
            c.blocks
                .iter()
                .find(|b| b.hash == hash)
                .map(|b| Self::shaped(b, full))
        }))
    }

    fn transaction(
        &self,
        chain: ChainId,
        hash: B256,
    ) -> Result<Option<RpcTransaction>, BackendError> {
        Ok(self.with(chain, |c| {
            c.txs.get(&hash).cloned().or_else(|| {
                c.pool
                    .iter()
                    .find(|(_, t)| t.hash() == hash)
                    .map(|(from, t)| RpcTransaction {
                        tx: t.clone(),
                        from: *from,
                        location: None,
                    })
            })
        }))
    }

    fn receipt(&self, chain: ChainId, hash: B256) -> Result<Option<RpcReceipt>, BackendError> {
        Ok(self.with(chain, |c| c.receipts.get(&hash).cloned()))
    }

    fn balance(&self, chain: ChainId, address: Address, at: StateAt) -> Result<U256, BackendError> {
        Self::only_latest(at)?;
        Ok(self.with(chain, |c| {
            c.balances.get(&address).copied().unwrap_or_default()
        }))
    }

    fn nonce(&self, chain: ChainId, address: Address, at: StateAt) -> Result<u64, BackendError> {
        Self::only_latest(at)?;
        Ok(self.with(chain, |c| {
            let committed = c.nonces.get(&address).copied().unwrap_or_default();
            let pooled = c.pool.iter().filter(|(from, _)| *from == address).count() as u64;
            committed + if at == StateAt::Pending { pooled } else { 0 }
        }))
    }

    fn code(&self, chain: ChainId, address: Address, at: StateAt) -> Result<Bytes, BackendError> {
        Self::only_latest(at)?;
        Ok(self.with(chain, |c| c.code.get(&address).cloned().unwrap_or_default()))
    }

    fn storage(
        &self,
        chain: ChainId,
        address: Address,
        slot: B256,
        at: StateAt,
    ) -> Result<B256, BackendError> {
        Self::only_latest(at)?;
        Ok(self.with(chain, |c| {
            c.storage.get(&(address, slot)).copied().unwrap_or_default()
        }))
    }

    fn call(
        &self,
        _chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<Bytes, BackendError> {
        Self::only_latest(at)?;
        self.execute(request)
    }

    fn estimate_gas(
        &self,
        _chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<u64, BackendError> {
        Self::only_latest(at)?;
        self.execute(request)?;
        Ok(21_000 + 16 * request.input.len() as u64)
    }

    fn send_raw_transaction(
        &self,
        chain: ChainId,
        tx: SignedTransaction,
    ) -> Result<B256, SubmitError> {
        let recovered =
            RecoveredTx::recover(tx).map_err(|e| SubmitError::Rejected(e.to_string()))?;
        let (tx, from) = recovered.into_parts();
        self.with(chain, |c| {
            let next = c.nonces.get(&from).copied().unwrap_or_default()
                + c.pool.iter().filter(|(f, _)| *f == from).count() as u64;
            if c.pool.iter().any(|(_, t)| t.hash() == tx.hash()) {
                return Err(SubmitError::AlreadyKnown);
            }
            if tx.nonce() < next {
                return Err(SubmitError::NonceTooLow {
                    next,
                    got: tx.nonce(),
                });
            }
            let hash = tx.hash();
            c.pool.push((from, tx));
            Ok(hash)
        })
    }

    fn logs(&self, chain: ChainId, query: &LogQuery) -> Result<Vec<RpcLog>, BackendError> {
        Ok(self.with(chain, |c| {
            c.logs
                .iter()
                .filter(|l| (query.from_block..=query.to_block).contains(&l.block_number))
                .filter(|l| query.filter.matches(l))
                .take(query.limit)
                .cloned()
                .collect()
        }))
    }

    fn gas_price(&self, _chain: ChainId) -> Result<u128, BackendError> {
        Ok(u128::from(BASE_FEE) + GWEI)
    }

    fn max_priority_fee(&self, _chain: ChainId) -> Result<u128, BackendError> {
        Ok(GWEI)
    }

    fn fee_history(
        &self,
        _chain: ChainId,
        block_count: u64,
        newest: u64,
        percentiles: &[f64],
    ) -> Result<RpcFeeHistory, BackendError> {
        let n = block_count as usize;
        Ok(RpcFeeHistory {
            oldest_block: newest + 1 - block_count,
            base_fee_per_gas: vec![u128::from(BASE_FEE); n + 1],
            gas_used_ratio: vec![0.5; n],
            reward: (!percentiles.is_empty()).then(|| vec![vec![GWEI; percentiles.len()]; n]),
        })
    }

    fn servicechains(&self, _chain: ChainId) -> Result<Value, BackendError> {
        Ok(json!([{"chainId": CHAIN.get()}, {"chainId": OTHER_CHAIN.get()}]))
    }

    fn checkpoint_proof(
        &self,
        chain: ChainId,
        block_hash: B256,
    ) -> Result<Option<Value>, BackendError> {
        let known = self.with(chain, |c| c.blocks.iter().any(|b| b.hash == block_hash));
        Ok(known.then(|| json!({"checkpointHeight": 4, "blockHash": block_hash})))
    }

    fn evidence(
        &self,
        _chain: ChainId,
        from_height: u64,
        limit: usize,
    ) -> Result<Value, BackendError> {
        Ok(json!({"from": from_height, "limit": limit, "items": []}))
    }

    fn pop_state(&self, _chain: ChainId, rn: Option<Address>) -> Result<Value, BackendError> {
        Ok(json!({"rn": rn, "shares": 7}))
    }
}

/// A server on an ephemeral port with its own runtime.
struct Harness {
    rt: tokio::runtime::Runtime,
    backend: Arc<MemBackend>,
    server: RpcServer,
    http: ureq::Agent,
}

impl Harness {
    fn start(config: RpcConfig) -> Self {
        Self::serving(config, MemBackend::new())
    }

    fn serving(config: RpcConfig, backend: MemBackend) -> Self {
        Self::serving_at("127.0.0.1:0".parse().unwrap(), config, backend)
    }

    fn start_at(addr: SocketAddr, config: RpcConfig) -> Self {
        Self::serving_at(addr, config, MemBackend::new())
    }

    fn serving_at(addr: SocketAddr, config: RpcConfig, backend: MemBackend) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = Arc::new(backend);
        let server = RpcServer::start(
            rt.handle(),
            addr,
            RpcConfig {
                default_chain: CHAIN,
                ..config
            },
            backend.clone(),
        )
        .unwrap();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        Self {
            rt,
            backend,
            server,
            http,
        }
    }

    fn default() -> Self {
        Self::start(RpcConfig::default())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    /// POSTs `body` to `path`; returns the status and the body.
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut r = self
            .http
            .post(&self.url(path))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    /// One call on chain 1001; the whole response object.
    fn call(&self, method: &str, params: Value) -> Value {
        self.call_on("/chain/1001", method, params)
    }

    fn call_on(&self, path: &str, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, body) = self.post(path, &req.to_string());
        assert_eq!(status, 200, "{method}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 1);
        v
    }

    /// The result of a call that must succeed.
    fn ok(&self, method: &str, params: Value) -> Value {
        let v = self.call(method, params);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// The error of a call that must fail.
    fn err(&self, method: &str, params: Value) -> Value {
        let v = self.call(method, params);
        assert!(v.get("result").is_none(), "{method}: {v}");
        v["error"].clone()
    }

    fn metrics_text(&self) -> String {
        let mut m = Metrics::default();
        self.server.metrics_source().metrics(&mut m, &[]);
        m.render()
    }
}

fn hex(bytes: &[u8]) -> String {
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

#[test]
fn rpc_identity_and_chain_methods() {
    let h = Harness::default();
    let version = h.ok("web3_clientVersion", json!([]));
    assert!(version.as_str().unwrap().starts_with("kaon/v"), "{version}");
    assert_eq!(
        h.ok("web3_sha3", json!(["0x68656c6c6f20776f726c64"])),
        "0x47173285a8d7341e5e972fc677286384f802f8ef42a5ec5f03bbfa254cb01fad"
    );
    assert_eq!(h.ok("net_version", json!([])), "1001");
    assert_eq!(h.ok("net_listening", json!([])), true);
    assert_eq!(h.ok("net_peerCount", json!([])), "0x0");
    assert_eq!(h.ok("eth_chainId", json!([])), "0x3e9");
    assert_eq!(h.ok("eth_blockNumber", json!([])), "0x2");
    assert_eq!(h.ok("eth_syncing", json!([])), false);
    assert_eq!(h.ok("eth_accounts", json!([])), json!([]));
    // Params may be omitted for methods without any.
    let v: Value = serde_json::from_str(
        &h.post(
            "/chain/1001",
            r#"{"jsonrpc":"2.0","id":"a","method":"eth_chainId"}"#,
        )
        .1,
    )
    .unwrap();
    assert_eq!(v, json!({"jsonrpc": "2.0", "id": "a", "result": "0x3e9"}));
}

#[test]
fn rpc_paths_route_to_chains() {
    let h = Harness::default();
    assert_eq!(h.call_on("/", "eth_chainId", json!([]))["result"], "0x3e9");
    assert_eq!(
        h.call_on("/chain/1002", "eth_chainId", json!([]))["result"],
        "0x3ea"
    );
    assert_eq!(
        h.call_on("/chain/1002/", "net_version", json!([]))["result"],
        "1002"
    );
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let (status, body) = h.post("/chain/999", req);
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32000);
    assert_eq!(v["error"]["message"], "unknown chain 999");
    for path in ["/chain/", "/chain/abc", "/rpc", "/chain/1001/x"] {
        let (status, body) = h.post(path, req);
        assert_eq!(status, 404, "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], -32600, "{path}");
    }
}

#[test]
fn rpc_blocks_are_encoded_like_geth() {
    let h = Harness::default();
    let latest = h.ok("eth_getBlockByNumber", json!(["latest", false]));
    let expected_keys = [
        "baseFeePerGas",
        "difficulty",
        "extraData",
        "gasLimit",
        "gasUsed",
        "hash",
        "logsBloom",
        "miner",
        "mixHash",
        "nonce",
        "number",
        "parentHash",
        "receiptsRoot",
        "sha3Uncles",
        "size",
        "stateRoot",
        "timestamp",
        "transactions",
        "transactionsRoot",
        "uncles",
    ];
    let mut keys: Vec<&str> = latest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, expected_keys);
    assert_eq!(latest["number"], "0x2");
    assert_eq!(latest["hash"], hex(&[0x42; 32]));
    assert_eq!(latest["parentHash"], hex(&[0x41; 32]));
    assert_eq!(latest["baseFeePerGas"], "0x1dcd6500");
    assert_eq!(latest["gasLimit"], "0x1c9c380");
    assert_eq!(latest["gasUsed"], "0x0");
    assert_eq!(latest["timestamp"], format!("{:#x}", 1_700_000_002u64));
    assert_eq!(latest["difficulty"], "0x0");
    assert_eq!(latest["nonce"], "0x0000000000000000");
    assert_eq!(latest["extraData"], "0x");
    assert_eq!(latest["miner"], hex(&[0; 20]));
    assert_eq!(latest["logsBloom"], hex(&[0; 256]));
    assert_eq!(latest["mixHash"], hex(&[0x54; 32]));
    assert_eq!(latest["size"], "0x200");
    assert_eq!(latest["uncles"], json!([]));
    assert_eq!(latest["transactions"], json!([]));
    for tag in ["safe", "finalized", "pending", "0x2"] {
        assert_eq!(
            h.ok("eth_getBlockByNumber", json!([tag, false])),
            latest,
            "{tag}"
        );
    }
    let genesis = h.ok("eth_getBlockByNumber", json!(["earliest", false]));
    assert_eq!(genesis["number"], "0x0");
    assert_eq!(
        h.ok("eth_getBlockByNumber", json!(["0x3", false])),
        Value::Null
    );

    let tx = signed(CHAIN, 0);
    let one = h.ok("eth_getBlockByNumber", json!(["0x1", false]));
    assert_eq!(one["transactions"], json!([hex(tx.hash().as_slice())]));
    assert_eq!(one["gasUsed"], "0x5208");
    let full = h.ok("eth_getBlockByHash", json!([hex(&[0x41; 32]), true]));
    assert_eq!(full["transactions"][0]["hash"], hex(tx.hash().as_slice()));
    assert_eq!(full["transactions"][0]["blockNumber"], "0x1");
    assert_eq!(
        h.ok("eth_getBlockByHash", json!([hex(&[0x99; 32]), false])),
        Value::Null
    );

    assert_eq!(
        h.ok("eth_getBlockTransactionCountByNumber", json!(["0x1"])),
        "0x1"
    );
    assert_eq!(
        h.ok("eth_getBlockTransactionCountByNumber", json!(["latest"])),
        "0x0"
    );
    assert_eq!(
        h.ok("eth_getBlockTransactionCountByNumber", json!(["0x9"])),
        Value::Null
    );
    assert_eq!(
        h.ok(
            "eth_getBlockTransactionCountByHash",
            json!([hex(&[0x41; 32])])
        ),
        "0x1"
    );
}

#[test]
fn rpc_transactions_and_receipts_are_encoded_like_geth() {
    let h = Harness::default();
    let tx = signed(CHAIN, 0);
    let sig = *tx.signature();
    let got = h.ok(
        "eth_getTransactionByHash",
        json!([hex(tx.hash().as_slice())]),
    );
    let expected = json!({
        "blockHash": hex(&[0x41; 32]),
        "blockNumber": "0x1",
        "blockTimestamp": format!("{:#x}", 1_700_000_001u64),
        "from": hex(alice().as_slice()),
        "gas": "0x5208",
        "gasPrice": "0x59682f00",
        "maxFeePerGas": "0x77359400",
        "maxPriorityFeePerGas": "0x3b9aca00",
        "hash": hex(tx.hash().as_slice()),
        "input": "0x",
        "nonce": "0x0",
        "to": hex(BOB.as_slice()),
        "transactionIndex": "0x0",
        "value": "0xde0b6b3a7640000",
        "type": "0x2",
        "accessList": [],
        "chainId": "0x3e9",
        "v": format!("{:#x}", u8::from(sig.v())),
        "r": format!("{:#x}", sig.r()),
        "s": format!("{:#x}", sig.s()),
        "yParity": format!("{:#x}", u8::from(sig.v())),
    });
    assert_eq!(got, expected);
    assert_eq!(
        h.ok("eth_getTransactionByHash", json!([hex(&[0x77; 32])])),
        Value::Null
    );

    let receipt = h.ok(
        "eth_getTransactionReceipt",
        json!([hex(tx.hash().as_slice())]),
    );
    let mut bloom = Bloom::ZERO;
    for topic in [TRANSFER_TOPIC, APPROVAL_TOPIC] {
        bloom.accrue_raw_log(TOKEN, &[topic, B256::from(alice().into_word())]);
    }
    assert_eq!(receipt["logsBloom"], hex(bloom.as_slice()));
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(receipt["type"], "0x2");
    assert_eq!(receipt["gasUsed"], "0x5208");
    assert_eq!(receipt["cumulativeGasUsed"], "0x5208");
    assert_eq!(receipt["effectiveGasPrice"], "0x59682f00");
    assert_eq!(receipt["contractAddress"], Value::Null);
    assert_eq!(receipt["from"], hex(alice().as_slice()));
    assert_eq!(receipt["to"], hex(BOB.as_slice()));
    assert_eq!(receipt["transactionHash"], hex(tx.hash().as_slice()));
    assert_eq!(receipt["transactionIndex"], "0x0");
    assert_eq!(receipt["blockHash"], hex(&[0x41; 32]));
    assert_eq!(receipt["blockNumber"], "0x1");
    assert_eq!(receipt["logs"].as_array().unwrap().len(), 2);
    assert_eq!(
        receipt["logs"][1],
        json!({
            "address": hex(TOKEN.as_slice()),
            "topics": [hex(APPROVAL_TOPIC.as_slice()), hex(alice().into_word().as_slice())],
            "data": hex(&[1; 32]),
            "blockNumber": "0x1",
            "transactionHash": hex(tx.hash().as_slice()),
            "transactionIndex": "0x0",
            "blockHash": hex(&[0x41; 32]),
            "blockTimestamp": format!("{:#x}", 1_700_000_001u64),
            "logIndex": "0x1",
            "removed": false,
        })
    );
    assert_eq!(
        h.ok("eth_getTransactionReceipt", json!([hex(&[0x77; 32])])),
        Value::Null
    );
}

/// The lookups by block and index, block receipts and uncle answers, shaped as geth's:
/// each agrees with the single-item lookups, and unknown blocks or indexes are `null`.
#[test]
fn rpc_lookups_by_block_and_index_and_block_receipts() {
    let h = Harness::default();
    let tx = signed(CHAIN, 0);
    let by_hash = h.ok(
        "eth_getTransactionByHash",
        json!([hex(tx.hash().as_slice())]),
    );
    let block_hash = hex(&[0x41; 32]);
    assert_eq!(
        h.ok(
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["0x1", "0x0"])
        ),
        by_hash
    );
    assert_eq!(
        h.ok(
            "eth_getTransactionByBlockHashAndIndex",
            json!([block_hash, "0x0"])
        ),
        by_hash
    );
    for (method, block) in [
        ("eth_getTransactionByBlockNumberAndIndex", json!("0x1")),
        ("eth_getTransactionByBlockNumberAndIndex", json!("0x63")),
        (
            "eth_getTransactionByBlockHashAndIndex",
            json!(hex(&[0x77; 32])),
        ),
    ] {
        let index = if block == json!("0x1") { "0x1" } else { "0x0" };
        assert_eq!(h.ok(method, json!([block, index])), Value::Null, "{method}");
    }
    let huge = h.call(
        "eth_getTransactionByBlockNumberAndIndex",
        json!(["0x1", "0x10000000000000000"]),
    );
    assert_eq!(huge["error"]["code"], -32602, "{huge}");

    let receipt = h.ok(
        "eth_getTransactionReceipt",
        json!([hex(tx.hash().as_slice())]),
    );
    for id in [
        json!("0x1"),
        json!({ "blockHash": block_hash }),
        json!({ "blockNumber": "0x1" }),
    ] {
        assert_eq!(
            h.ok("eth_getBlockReceipts", json!([id])),
            json!([receipt.clone()]),
            "{id}"
        );
    }
    assert_eq!(h.ok("eth_getBlockReceipts", json!(["0x2"])), json!([]));
    assert_eq!(h.ok("eth_getBlockReceipts", json!(["0x63"])), Value::Null);

    assert_eq!(
        h.ok("eth_getUncleCountByBlockNumber", json!(["0x1"])),
        "0x0"
    );
    assert_eq!(
        h.ok("eth_getUncleCountByBlockHash", json!([block_hash])),
        "0x0"
    );
    assert_eq!(
        h.ok("eth_getUncleCountByBlockNumber", json!(["0x63"])),
        Value::Null
    );
    assert_eq!(
        h.ok("eth_getUncleByBlockNumberAndIndex", json!(["0x1", "0x0"])),
        Value::Null
    );
    assert_eq!(
        h.ok(
            "eth_getUncleByBlockHashAndIndex",
            json!([block_hash, "0x0"])
        ),
        Value::Null
    );
    // Methods the node deliberately does not answer say so as unknown methods.
    for method in [
        "eth_sendTransaction",
        "eth_sign",
        "eth_getProof",
        "eth_coinbase",
    ] {
        assert_eq!(
            h.call(method, json!([]))["error"]["code"],
            -32601,
            "{method}"
        );
    }
}

#[test]
fn rpc_account_state_reads() {
    let h = Harness::default();
    let a = hex(alice().as_slice());
    assert_eq!(
        h.ok("eth_getBalance", json!([a, "latest"])),
        "0x4563918244f40000"
    );
    assert_eq!(
        h.ok("eth_getBalance", json!([a, "0x2"])),
        "0x4563918244f40000"
    );
    assert_eq!(h.ok("eth_getBalance", json!([a])), "0x4563918244f40000");
    assert_eq!(
        h.ok(
            "eth_getBalance",
            json!([a, {"blockHash": hex(&[0x42; 32])}])
        ),
        "0x4563918244f40000"
    );
    assert_eq!(
        h.ok("eth_getBalance", json!([hex(BOB.as_slice()), "latest"])),
        "0x0"
    );
    let historical = h.err("eth_getBalance", json!([a, "0x1"]));
    assert_eq!(historical["code"], -32000);
    assert_eq!(historical["message"], "historical state not available");
    let future = h.err("eth_getBalance", json!([a, "0x10"]));
    assert_eq!(future["message"], "header not found");
    assert_eq!(h.ok("eth_getTransactionCount", json!([a, "latest"])), "0x1");
    assert_eq!(
        h.ok("eth_getTransactionCount", json!([a, "pending"])),
        "0x1"
    );
    assert_eq!(
        h.ok("eth_getCode", json!([hex(ECHO.as_slice()), "latest"])),
        "0x6001"
    );
    assert_eq!(h.ok("eth_getCode", json!([a, "latest"])), "0x");
    let e = hex(ECHO.as_slice());
    let mut slot_value = [0u8; 32];
    slot_value[31] = 0x2a;
    assert_eq!(
        h.ok("eth_getStorageAt", json!([e, "0x1", "latest"])),
        hex(&slot_value)
    );
    assert_eq!(
        h.ok(
            "eth_getStorageAt",
            json!([e, hex(B256::with_last_byte(1).as_slice()), "latest"])
        ),
        hex(&slot_value)
    );
    assert_eq!(
        h.ok("eth_getStorageAt", json!([e, "0x2", "latest"])),
        hex(&[0; 32])
    );
}

#[test]
fn rpc_call_estimate_and_reverts() {
    let h = Harness::default();
    let echo = hex(ECHO.as_slice());
    assert_eq!(
        h.ok(
            "eth_call",
            json!([{"to": echo, "data": "0xdeadbeef"}, "latest"])
        ),
        "0xdeadbeef"
    );
    assert_eq!(
        h.ok(
            "eth_call",
            json!([{"to": echo, "input": "0xbeef", "data": "0xbeef"}])
        ),
        "0xbeef"
    );
    let both = h.err(
        "eth_call",
        json!([{"to": echo, "input": "0x01", "data": "0x02"}]),
    );
    assert_eq!(both["code"], -32602);
    let revert = h.err(
        "eth_call",
        json!([{"to": hex(REVERTER.as_slice())}, "latest"]),
    );
    assert_eq!(revert["code"], 3);
    assert_eq!(revert["message"], "execution reverted: nope");
    assert_eq!(revert["data"], hex(&error_string("nope")));
    let revert = h.err("eth_estimateGas", json!([{"to": hex(REVERTER.as_slice())}]));
    assert_eq!(revert["code"], 3);
    assert_eq!(revert["data"], hex(&error_string("nope")));
    assert_eq!(
        h.ok("eth_estimateGas", json!([{"from": hex(alice().as_slice()), "to": echo, "data": "0x0102", "value": "0x1", "chainId": "0x3e9", "type": "0x2"}])),
        "0x5228"
    );
    let wrong_chain = h.err("eth_estimateGas", json!([{"to": echo, "chainId": "0x1"}]));
    assert_eq!(wrong_chain["code"], -32000);
    let overrides = h.err("eth_call", json!([{"to": echo}, "latest", {}]));
    assert_eq!(overrides["message"], "state overrides are not supported");
    let fees = h.err(
        "eth_call",
        json!([{"to": echo, "gasPrice": "0x1", "maxFeePerGas": "0x1"}]),
    );
    assert_eq!(fees["code"], -32602);
    assert_eq!(
        h.err("eth_call", json!([{"to": echo}, "0x1"]))["message"],
        "historical state not available"
    );
}

#[test]
fn rpc_send_raw_transaction() {
    let h = Harness::default();
    let a = hex(alice().as_slice());
    let tx = signed(CHAIN, 1);
    assert_eq!(
        h.ok("eth_sendRawTransaction", json!([hex(tx.raw())])),
        hex(tx.hash().as_slice())
    );
    assert_eq!(
        h.ok("eth_getTransactionCount", json!([a, "pending"])),
        "0x2"
    );
    assert_eq!(h.ok("eth_getTransactionCount", json!([a, "latest"])), "0x1");
    let pooled = h.ok(
        "eth_getTransactionByHash",
        json!([hex(tx.hash().as_slice())]),
    );
    assert_eq!(pooled["blockHash"], Value::Null);
    assert_eq!(pooled["blockNumber"], Value::Null);
    assert_eq!(pooled["transactionIndex"], Value::Null);
    assert_eq!(pooled["gasPrice"], "0x77359400");
    let again = h.err("eth_sendRawTransaction", json!([hex(tx.raw())]));
    assert_eq!(again["message"], "already known");
    let stale = h.err(
        "eth_sendRawTransaction",
        json!([hex(signed(CHAIN, 0).raw())]),
    );
    assert_eq!(stale["code"], -32000);
    assert_eq!(stale["message"], "nonce too low: next nonce 2, tx nonce 0");
    let foreign = h.err(
        "eth_sendRawTransaction",
        json!([hex(signed(OTHER_CHAIN, 2).raw())]),
    );
    assert_eq!(foreign["code"], -32000);
    assert_eq!(
        foreign["message"],
        "invalid chain id for signer: have 1002 want 1001"
    );
    let garbage = h.err("eth_sendRawTransaction", json!(["0xc0ffee"]));
    assert_eq!(garbage["code"], -32000);
    let empty = h.err("eth_sendRawTransaction", json!(["0x"]));
    assert_eq!(empty["code"], -32000);
    let not_hex = h.err("eth_sendRawTransaction", json!(["0xzz"]));
    assert_eq!(not_hex["code"], -32602);
    // A legacy transaction creating a contract, on the other chain: full objects of pooled
    // legacy transactions carry EIP-155's v.
    let legacy = signed_legacy(OTHER_CHAIN, 1);
    let hash = h.call_on(
        "/chain/1002",
        "eth_sendRawTransaction",
        json!([hex(legacy.raw())]),
    );
    assert_eq!(hash["result"], hex(legacy.hash().as_slice()));
    let got = h.call_on(
        "/chain/1002",
        "eth_getTransactionByHash",
        json!([hash["result"]]),
    );
    let v = 1002 * 2 + 35 + u64::from(legacy.signature().v());
    assert_eq!(got["result"]["v"], format!("{v:#x}"));
    assert_eq!(got["result"]["to"], Value::Null);
    assert_eq!(got["result"]["type"], "0x0");
    assert_eq!(got["result"]["chainId"], "0x3ea");
    assert!(got["result"].get("yParity").is_none());
    assert!(got["result"].get("maxFeePerGas").is_none());
}

#[test]
fn rpc_get_logs_filters_and_limits() {
    let h = Harness::default();
    let token = hex(TOKEN.as_slice());
    let all = h.ok(
        "eth_getLogs",
        json!([{"fromBlock": "earliest", "toBlock": "latest"}]),
    );
    assert_eq!(all.as_array().unwrap().len(), 2);
    let by_topic = h.ok(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "address": token, "topics": [hex(APPROVAL_TOPIC.as_slice())]}]),
    );
    assert_eq!(by_topic.as_array().unwrap().len(), 1);
    assert_eq!(by_topic[0]["logIndex"], "0x1");
    let either = h.ok(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "address": [token], "topics": [[hex(APPROVAL_TOPIC.as_slice()), hex(TRANSFER_TOPIC.as_slice())], null]}]),
    );
    assert_eq!(either.as_array().unwrap().len(), 2);
    let too_many_positions = h.ok(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "topics": [null, null, null]}]),
    );
    assert_eq!(too_many_positions, json!([]));
    let other_address = h.ok(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "address": hex(BOB.as_slice())}]),
    );
    assert_eq!(other_address, json!([]));
    let by_hash = h.ok("eth_getLogs", json!([{"blockHash": hex(&[0x41; 32])}]));
    assert_eq!(by_hash.as_array().unwrap().len(), 2);
    assert_eq!(h.ok("eth_getLogs", json!([{}])), json!([]));
    assert_eq!(
        h.ok("eth_getLogs", json!([{"fromBlock": "0x9"}])),
        json!([])
    );
    let both = h.err(
        "eth_getLogs",
        json!([{"blockHash": hex(&[0x41; 32]), "fromBlock": "0x0"}]),
    );
    assert_eq!(both["code"], -32602);
    let backwards = h.err(
        "eth_getLogs",
        json!([{"fromBlock": "0x2", "toBlock": "0x1"}]),
    );
    assert_eq!(backwards["code"], -32602);
    let five = h.err(
        "eth_getLogs",
        json!([{"topics": [null, null, null, null, null]}]),
    );
    assert_eq!(five["code"], -32602);

    let capped = Harness::start(RpcConfig {
        max_logs: 1,
        max_log_block_range: 2,
        ..RpcConfig::default()
    });
    let over = capped.err("eth_getLogs", json!([{"fromBlock": "0x1"}]));
    assert_eq!(over["code"], -32005);
    assert_eq!(over["message"], "query returned more than 1 results");
    let wide = capped.err(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x2"}]),
    );
    assert_eq!(wide["code"], -32005);
    assert_eq!(
        wide["message"],
        "block range too large: 3 blocks, the limit is 2"
    );
}

#[test]
fn rpc_polling_filters() {
    let h = Harness::start(RpcConfig {
        max_filters: 3,
        ..RpcConfig::default()
    });
    let token = hex(TOKEN.as_slice());
    let logs = h.ok("eth_newFilter", json!([{"address": token}]));
    let blocks = h.ok("eth_newBlockFilter", json!([]));
    let everything = h.ok("eth_newFilter", json!([{"fromBlock": "0x0"}]));
    assert!(is_id(logs.as_str().unwrap()), "{logs}");
    let full = h.err("eth_newBlockFilter", json!([]));
    assert_eq!(full["code"], -32005);
    for id in [&logs, &blocks] {
        assert_eq!(h.ok("eth_getFilterChanges", json!([id])), json!([]));
    }

    let three = h.backend.append_block(CHAIN);
    let new_logs = h.ok("eth_getFilterChanges", json!([logs]));
    assert_eq!(new_logs.as_array().unwrap().len(), 1);
    assert_eq!(new_logs[0]["address"], token);
    assert_eq!(new_logs[0]["blockNumber"], "0x3");
    assert_eq!(h.ok("eth_getFilterChanges", json!([logs])), json!([]));
    assert_eq!(
        h.ok("eth_getFilterChanges", json!([blocks])),
        json!([hex(three.hash.as_slice())])
    );
    // Everything from genesis: the fixture's two logs and the new block's two.
    let all = h.ok("eth_getFilterLogs", json!([everything]));
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(
        h.ok("eth_getFilterChanges", json!([everything]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Filters belong to the chain they were made on.
    let elsewhere = h.call_on("/chain/1002", "eth_getFilterChanges", json!([logs]));
    assert_eq!(elsewhere["error"]["message"], "filter not found");
    assert_eq!(h.ok("eth_uninstallFilter", json!([logs])), true);
    assert_eq!(h.ok("eth_uninstallFilter", json!([logs])), false);
    let gone = h.err("eth_getFilterChanges", json!([logs]));
    assert_eq!(
        (gone["code"].clone(), gone["message"].clone()),
        (json!(-32000), json!("filter not found"))
    );
    assert!(h.ok("eth_newBlockFilter", json!([])).is_string());
}

#[test]
fn rpc_pending_transaction_filter_reports_accepted_transactions_once_and_drops_the_oldest() {
    let h = Harness::start(RpcConfig {
        max_pending_filter_hashes: 2,
        ..RpcConfig::default()
    });
    let send = |nonce: u64| {
        let tx = signed(CHAIN, nonce);
        let hash = hex(tx.hash().as_slice());
        assert_eq!(h.ok("eth_sendRawTransaction", json!([hex(tx.raw())])), hash);
        (tx, hash)
    };
    let (first, first_hash) = send(1);
    let hashes = h.ok("eth_newPendingTransactionFilter", json!([]));
    let full = h.ok("eth_newPendingTransactionFilter", json!([true]));
    let elsewhere = h.call_on("/chain/1002", "eth_newPendingTransactionFilter", json!([]));
    let elsewhere = elsewhere["result"].clone();
    let changes = |id: &Value| h.ok("eth_getFilterChanges", json!([id]));
    // What was accepted before the filter existed is not reported.
    assert_eq!(changes(&hashes), json!([]));

    let (_, second) = send(2);
    assert_eq!(changes(&hashes), json!([second]));
    assert_eq!(changes(&hashes), json!([]), "each hash is reported once");
    // A refused submission is not reported.
    let again = h.err("eth_sendRawTransaction", json!([hex(first.raw())]));
    assert_eq!(again["message"], "already known", "{first_hash}");
    assert_eq!(changes(&hashes), json!([]));

    // Three more before the next poll: a window of two keeps the newest two.
    let (third, fourth, fifth) = (send(3).1, send(4).1, send(5).1);
    assert_eq!(changes(&hashes), json!([fourth, fifth]), "{third} dropped");
    let txs = changes(&full);
    let got: Vec<&Value> = txs.as_array().unwrap().iter().map(|t| &t["hash"]).collect();
    assert_eq!(got, vec![&json!(fourth), &json!(fifth)], "{txs}");
    assert_eq!(txs[0]["blockNumber"], Value::Null);
    // Filters see their own chain only, and are not log filters.
    assert_eq!(
        h.call_on("/chain/1002", "eth_getFilterChanges", json!([elsewhere]))["result"],
        json!([])
    );
    let not_logs = h.err("eth_getFilterLogs", json!([hashes]));
    assert_eq!(not_logs["message"], "filter not found");
    assert_eq!(h.ok("eth_uninstallFilter", json!([hashes])), true);
}

#[test]
fn rpc_fee_methods() {
    let h = Harness::default();
    assert_eq!(h.ok("eth_gasPrice", json!([])), "0x59682f00");
    assert_eq!(h.ok("eth_maxPriorityFeePerGas", json!([])), "0x3b9aca00");
    let history = h.ok("eth_feeHistory", json!(["0x2", "latest", [25.0, 75.0]]));
    assert_eq!(
        history,
        json!({
            "oldestBlock": "0x1",
            "baseFeePerGas": ["0x1dcd6500", "0x1dcd6500", "0x1dcd6500"],
            "gasUsedRatio": [0.5, 0.5],
            "reward": [["0x3b9aca00", "0x3b9aca00"], ["0x3b9aca00", "0x3b9aca00"]],
        })
    );
    // web3.py sends the count as a number; a count past genesis is clamped.
    let clamped = h.ok("eth_feeHistory", json!([100, "0x1"]));
    assert_eq!(clamped["oldestBlock"], "0x0");
    assert_eq!(clamped["gasUsedRatio"], json!([0.5, 0.5]));
    assert!(clamped.get("reward").is_none());
    let bad = h.err("eth_feeHistory", json!(["0x2", "latest", [75.0, 25.0]]));
    assert_eq!(bad["code"], -32602);
    let beyond = h.err("eth_feeHistory", json!(["0x1", "0x9"]));
    assert_eq!(beyond["code"], -32000);
}

#[test]
fn rpc_kaon_methods() {
    let h = Harness::default();
    assert_eq!(
        h.ok("kaon_servicechains", json!([])),
        json!([{"chainId": 1001}, {"chainId": 1002}])
    );
    let proof = h.ok("kaon_getCheckpointProof", json!([hex(&[0x41; 32])]));
    assert_eq!(proof["checkpointHeight"], 4);
    assert_eq!(
        h.ok("kaon_getCheckpointProof", json!([hex(&[0x99; 32])])),
        Value::Null
    );
    let evidence = h.ok("kaon_getEvidence", json!(["0x5", 1000]));
    assert_eq!(evidence, json!({"from": 5, "limit": 100, "items": []}));
    let pop = h.ok("kaon_popState", json!([hex(BOB.as_slice())]));
    assert_eq!(pop["shares"], 7);
    assert_eq!(pop["rn"], hex(BOB.as_slice()));
}

#[test]
fn rpc_protocol_errors() {
    let h = Harness::default();
    let unknown = h.err("eth_mine", json!([]));
    assert_eq!(unknown["code"], -32601);
    assert_eq!(h.err("eth_getBalance", json!(["0x12"]))["code"], -32602);
    assert_eq!(h.err("eth_getBalance", json!([]))["code"], -32602);
    let too_many = h.err("eth_chainId", json!([1]));
    assert_eq!(too_many["code"], -32602);
    assert_eq!(
        h.err("eth_getBalance", json!({"address": "0x"}))["code"],
        -32602
    );
    assert_eq!(
        h.err("eth_getBlockByNumber", json!(["newest", false]))["code"],
        -32602
    );
    assert_eq!(h.err("eth_subscribe", json!(["newHeads"]))["code"], -32601);

    let parse = |body: &str| -> (u16, Value) {
        let (status, text) = h.post("/chain/1001", body);
        (status, serde_json::from_str(&text).unwrap())
    };
    let (status, malformed) = parse("{\"jsonrpc\":\"2.0\",");
    assert_eq!(status, 200);
    assert_eq!(malformed["error"]["code"], -32700);
    assert_eq!(malformed["id"], Value::Null);
    let (_, invalid) = parse(r#"{"jsonrpc":"1.0","id":3,"method":"eth_chainId"}"#);
    assert_eq!(invalid["error"]["code"], -32600);
    assert_eq!(invalid["id"], 3);
    let (_, empty) = parse("[]");
    assert_eq!(empty["error"]["code"], -32600);

    // A batch: answers in order, notifications unanswered, bad members answered alone.
    let (_, batch) = parse(
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
            {"jsonrpc":"2.0","method":"eth_blockNumber"},
            {"jsonrpc":"2.0","id":"x","method":"nope"},
            42,
            {"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}]"#,
    );
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 4);
    assert_eq!(
        batch[0],
        json!({"jsonrpc": "2.0", "id": 1, "result": "0x3e9"})
    );
    assert_eq!(batch[1]["id"], "x");
    assert_eq!(batch[1]["error"]["code"], -32601);
    assert_eq!(batch[2]["error"]["code"], -32600);
    assert_eq!(batch[3]["result"], "0x2");
    let (status, nothing) = h.post("/chain/1001", r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#);
    assert_eq!((status, nothing.as_str()), (200, ""));

    let one = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let batch_101 = format!("[{}]", vec![one; 101].join(","));
    let (status, over) = parse(&batch_101);
    assert_eq!(status, 200);
    assert_eq!(over["error"]["code"], -32600);
    assert_eq!(
        over["error"]["message"],
        "batch too large: the limit is 100 requests"
    );
    let (_, at_limit) = parse(&format!("[{}]", vec![one; 100].join(",")));
    assert_eq!(at_limit.as_array().unwrap().len(), 100);
    // A batch's calls run several at a time over HTTP; the answers still come in request
    // order, across every group of concurrent calls.
    let mixed: Vec<String> = (0..100)
        .map(|i| {
            let method = ["eth_chainId", "eth_blockNumber", "net_version", "nope"][i % 4];
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"{method}"}}"#)
        })
        .collect();
    let (_, ordered) = parse(&format!("[{}]", mixed.join(",")));
    let ordered = ordered.as_array().unwrap();
    assert_eq!(ordered.len(), 100);
    for (i, answer) in ordered.iter().enumerate() {
        assert_eq!(answer["id"], i, "{answer}");
        match i % 4 {
            0 => assert_eq!(answer["result"], "0x3e9"),
            1 => assert_eq!(answer["result"], "0x2"),
            2 => assert_eq!(answer["result"], "1001"),
            _ => assert_eq!(answer["error"]["code"], -32601),
        }
    }

    let get = h.http.get(&h.url("/chain/1001")).call().unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let preflight = h
        .http
        .run(
            ureq::http::Request::builder()
                .method("OPTIONS")
                .uri(h.url("/chain/1001"))
                .header("origin", "http://localhost:3000")
                .header("access-control-request-method", "POST")
                .body(())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let text = h.metrics_text();
    assert!(
        text.contains("kaon_rpc_refused_total{reason=\"batch_too_large\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kaon_rpc_refused_total{reason=\"parse_error\"} 1"),
        "{text}"
    );
}

#[test]
fn rpc_body_limit_applies_to_declared_and_chunked_bodies() {
    let h = Harness::start(RpcConfig {
        max_body_bytes: 1024,
        ..RpcConfig::default()
    });
    let padded = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[],"pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let (status, body) = h.post("/chain/1001", &padded);
    assert_eq!(status, 413);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        "request body too large: the limit is 1024 bytes"
    );

    // Without a Content-Length the limit applies while reading.
    let mut s = TcpStream::connect(h.server.local_addr()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = "POST /chain/1001 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{padded}\r\n0\r\n\r\n", padded.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(chunk.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("the limit is 1024 bytes") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(reply.starts_with(b"HTTP/1.1 413"));
    // A small request still works.
    assert_eq!(h.ok("eth_chainId", json!([])), "0x3e9");
}

/// Reads from `s` until EOF (the server closed) or an error; returns what was read.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("server kept the connection open: {e}"),
        }
    }
}

#[test]
fn rpc_connection_limit_and_read_deadline() {
    let h = Harness::start(RpcConfig {
        max_connections: 1,
        read_deadline: Duration::from_secs(2),
        ..RpcConfig::default()
    });
    // The first connection holds the only slot (a full request proves it was accepted).
    let mut first = TcpStream::connect(h.server.local_addr()).unwrap();
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    write!(
        first,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut second = TcpStream::connect(h.server.local_addr()).unwrap();
    let refused = read_until_closed(&mut second);
    assert!(
        refused.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    // A client that starts a request and stalls is cut off at the read deadline, which frees
    // the slot.
    first.write_all(b"POST / HTTP/1.1\r\nHost:").unwrap();
    let rest = read_until_closed(&mut first);
    assert!(!rest.starts_with(b"HTTP/1.1 200"));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut third = TcpStream::connect(h.server.local_addr()).unwrap();
        write!(
            third,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{req}",
            req.len()
        )
        .unwrap();
        let answer = read_until_closed_or_answer(&mut third);
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        // The stalled connection's task may not have released its slot yet.
        assert!(answer.starts_with(b"HTTP/1.1 503"));
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        std::thread::yield_now();
    }
    let text = h.metrics_text();
    assert!(text.contains("kaon_rpc_refused_total{reason=\"too_many_connections\"}"));
}

fn read_until_closed_or_answer(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

/// Shrinks the socket's receive buffer (and stops its autotuning), so that a client that does
/// not read makes the server's writes stall after a few megabytes.
fn shrink_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket descriptor, and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Sends a small request on a fresh connection; the status line's code, or 0 if closed.
fn status_of_fresh_request(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let _ = write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    );
    let answer = read_until_closed_or_answer(&mut s);
    std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn rpc_client_that_stops_reading_is_cut_off() {
    let h = Harness::start(RpcConfig {
        max_connections: 1,
        max_body_bytes: 16 << 20,
        write_deadline: Duration::from_millis(200),
        ..RpcConfig::default()
    });
    let addr = h.server.local_addr();
    // Two echo calls of 2 MiB each: about 8 MiB of answer, more than the socket buffers hold.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"to": hex(ECHO.as_slice()), "data": hex(&vec![0xab; 2 << 20])}]});
    let body = json!([call, call]).to_string();
    let mut greedy = TcpStream::connect(addr).unwrap();
    shrink_receive_buffer(&greedy);
    write!(
        greedy,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    greedy.write_all(body.as_bytes()).unwrap();
    // `greedy` never reads. Its slot must come back once the server's write stalls past the
    // deadline; until then, fresh connections are refused.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match status_of_fresh_request(addr) {
            200 => break,
            503 => {}
            other => panic!("unexpected answer {other}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stalled client kept its slot"
        );
        std::thread::yield_now();
    }
    drop(greedy);
}

#[test]
fn rpc_request_deadline_answers_a_timeout() {
    let h = Harness::start(RpcConfig {
        request_deadline: Duration::from_millis(200),
        ..RpcConfig::default()
    });
    let (release, stalled) = std::sync::mpsc::channel();
    *h.backend.stall.lock().unwrap() = Some(stalled);
    let e = h.err("eth_call", json!([{"to": hex(STALLER.as_slice())}]));
    assert_eq!(e["code"], -32002);
    assert_eq!(e["message"], "request timed out");
    release.send(()).unwrap();
    assert_eq!(h.ok("eth_chainId", json!([])), "0x3e9");
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap()
        .0
}

pub(crate) async fn ws_send(ws: &mut Ws, id: u64, method: &str, params: Value) {
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(req.to_string())).await.unwrap();
}

/// The next JSON message from the server.
pub(crate) async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("server answers in time")
            .expect("stream open")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[test]
fn rpc_websocket_calls_and_subscriptions() {
    let h = Harness::start(RpcConfig {
        max_subscriptions_per_connection: 2,
        ..RpcConfig::default()
    });
    let addr = h.server.local_addr();
    let head = h.backend.block_by_number(CHAIN, 2, false).unwrap().unwrap();
    let logs = h.backend.with(CHAIN, |c| c.logs.clone());
    h.rt.block_on(async {
        let mut ws = ws_connect(addr, "/chain/1001").await;
        ws_send(&mut ws, 1, "eth_chainId", json!([])).await;
        assert_eq!(ws_next(&mut ws).await, json!({"jsonrpc": "2.0", "id": 1, "result": "0x3e9"}));

        ws_send(&mut ws, 2, "eth_subscribe", json!(["newHeads"])).await;
        let heads = ws_next(&mut ws).await["result"].as_str().unwrap().to_string();
        assert!(is_id(&heads), "{heads}");
        ws_send(
            &mut ws,
            3,
            "eth_subscribe",
            json!(["logs", {"topics": [hex(APPROVAL_TOPIC.as_slice())]}]),
        )
        .await;
        let approvals = ws_next(&mut ws).await["result"].as_str().unwrap().to_string();
        ws_send(&mut ws, 4, "eth_subscribe", json!(["newHeads"])).await;
        assert_eq!(ws_next(&mut ws).await["error"]["code"], -32005);
        ws_send(&mut ws, 5, "eth_subscribe", json!(["newPendingTransactions"])).await;
        assert_eq!(ws_next(&mut ws).await["error"]["code"], -32602);

        // Other chains' events do not reach this session.
        h.server.notify_head(OTHER_CHAIN, &head);
        h.server.notify_head(CHAIN, &head);
        let note = ws_next(&mut ws).await;
        assert_eq!(note["method"], "eth_subscription");
        assert_eq!(note["params"]["subscription"], heads.as_str());
        let header = &note["params"]["result"];
        assert_eq!(header["number"], "0x2");
        assert_eq!(header["hash"], hex(&[0x42; 32]));
        assert_eq!(header["baseFeePerGas"], "0x1dcd6500");
        assert!(header.get("transactions").is_none());

        h.server.notify_logs(CHAIN, &logs);
        let note = ws_next(&mut ws).await;
        assert_eq!(note["params"]["subscription"], approvals.as_str());
        assert_eq!(note["params"]["result"]["logIndex"], "0x1");

        ws_send(&mut ws, 6, "eth_unsubscribe", json!([heads])).await;
        assert_eq!(ws_next(&mut ws).await["result"], true);
        ws_send(&mut ws, 7, "eth_unsubscribe", json!([heads])).await;
        assert_eq!(ws_next(&mut ws).await["result"], false);
        // Only the logs subscription is left: a head produces nothing, logs do.
        h.server.notify_head(CHAIN, &head);
        h.server.notify_logs(CHAIN, &logs);
        let note = ws_next(&mut ws).await;
        assert_eq!(note["params"]["subscription"], approvals.as_str());

        // Batches work over WebSocket too.
        let batch = r#"[{"jsonrpc":"2.0","id":8,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":9,"method":"net_version"}]"#;
        ws.send(Message::text(batch)).await.unwrap();
        assert_eq!(
            ws_next(&mut ws).await,
            json!([{"jsonrpc": "2.0", "id": 8, "result": "0x2"}, {"jsonrpc": "2.0", "id": 9, "result": "1001"}])
        );
        ws.close(None).await.unwrap();
    });
    // Unknown chains refuse the upgrade.
    let refused = h.rt.block_on(tokio_tungstenite::connect_async(format!(
        "ws://{addr}/chain/5"
    )));
    assert!(refused.is_err());
    let text = h.metrics_text();
    assert!(
        text.contains("kaon_rpc_calls_total{method=\"eth_subscribe\"} 4"),
        "{text}"
    );
}

#[test]
fn rpc_websocket_slow_subscriber_is_disconnected() {
    let h = Harness::start(RpcConfig {
        ws_queue_len: 4,
        notify_capacity: 8,
        ..RpcConfig::default()
    });
    let addr = h.server.local_addr();
    let head = h.backend.block_by_number(CHAIN, 2, false).unwrap().unwrap();
    h.rt.block_on(async {
        let mut ws = ws_connect(addr, "/chain/1001").await;
        ws_send(&mut ws, 1, "eth_subscribe", json!(["newHeads"])).await;
        assert!(ws_next(&mut ws).await["result"].is_string());
        // The client stops reading; the server must cut it off instead of buffering.
        let mut pushed = 0u64;
        let slow = "kaon_rpc_refused_total{reason=\"slow_subscriber\"} 1";
        while !h.metrics_text().contains(slow) {
            for _ in 0..1000 {
                h.server.notify_head(CHAIN, &head);
            }
            pushed += 1000;
            assert!(pushed < 10_000_000, "slow subscriber never disconnected");
            tokio::task::yield_now().await;
        }
        drop(ws);
    });
    // Once the session is gone the chain's channel is dropped at the next event.
    let deadline = std::time::Instant::now() + PATIENCE;
    while h.server.has_subscribers(CHAIN) {
        assert!(
            std::time::Instant::now() < deadline,
            "subscription outlived its session"
        );
        std::thread::yield_now();
    }
}

#[test]
fn rpc_metrics_count_calls_and_errors() {
    let h = Harness::default();
    for _ in 0..3 {
        h.ok("eth_chainId", json!([]));
    }
    h.err("eth_getBalance", json!(["0x1"]));
    assert_eq!(h.server.metrics_source().calls("eth_chainId"), 3);
    let text = h.metrics_text();
    assert!(
        text.contains("kaon_rpc_calls_total{method=\"eth_chainId\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("kaon_rpc_errors_total{method=\"eth_chainId\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("kaon_rpc_errors_total{method=\"eth_getBalance\"} 1"),
        "{text}"
    );
    for series in [
        "kaon_rpc_call_duration_seconds_bucket{method=\"eth_chainId\",le=\"+Inf\"} 3\n",
        "kaon_rpc_call_duration_seconds_count{method=\"eth_chainId\"} 3\n",
        "# TYPE kaon_rpc_call_duration_seconds histogram\n",
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
    assert!(text.contains("kaon_rpc_http_requests_total 4"), "{text}");
}

#[test]
fn rpc_websocket_silent_client_is_cut_off_while_a_live_one_stays() {
    let idle = Duration::from_millis(900);
    let h = Harness::start(RpcConfig {
        ws_idle_timeout: idle,
        ..RpcConfig::default()
    });
    let addr = h.server.local_addr();
    // A raw client completes the upgrade, then never sends a byte (and never answers pings).
    let mut silent = TcpStream::connect(addr).unwrap();
    let upgrade = format!(
        "GET /chain/1001 HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    silent.write_all(upgrade.as_bytes()).unwrap();
    h.rt.block_on(async {
        // A live client: subscribed, only listening, its library answering the pings.
        let mut ws = ws_connect(addr, "/chain/1001").await;
        ws_send(&mut ws, 1, "eth_subscribe", json!(["newHeads"])).await;
        assert!(ws_next(&mut ws).await["result"].is_string());
        let listen_until = tokio::time::Instant::now() + idle * 3;
        while let Ok(msg) = tokio::time::timeout_at(listen_until, ws.next()).await {
            let msg = msg.expect("the live session stays open").unwrap();
            assert!(matches!(msg, Message::Ping(_)), "{msg:?}");
        }
        ws_send(&mut ws, 2, "eth_chainId", json!([])).await;
        assert_eq!(ws_next(&mut ws).await["result"], "0x3e9");
    });
    let seen = read_until_closed(&mut silent);
    assert!(
        seen.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let text = h.metrics_text();
    assert!(
        text.contains("kaon_rpc_refused_total{reason=\"idle_websocket\"} 1"),
        "{text}"
    );
}

/// Chains of a region another endpoint serves are forwarded there: answers, batches and that
/// endpoint's own refusals come back unchanged; an unreachable endpoint, a too-large answer and a
/// WebSocket upgrade are clear errors; chains nobody serves stay unknown.
#[test]
fn rpc_forwards_the_chains_of_a_region_served_elsewhere_and_answers_what_it_cannot() {
    const REMOTE: ChainId = ChainId(2_000_001);
    let remote = Harness::serving(RpcConfig::default(), MemBackend::with_chains(&[REMOTE]));
    let upstream = |url: String| kaon::rpc::Upstream {
        first: ChainId(2_000_000),
        last: ChainId(2_999_999),
        url,
    };
    let front = Harness::start(RpcConfig {
        upstreams: vec![upstream(format!("http://{}", remote.server.local_addr()))],
        ..RpcConfig::default()
    });
    let path = "/chain/2000001";
    assert_eq!(
        front.call_on(path, "eth_chainId", json!([]))["result"],
        "0x1e8481"
    );
    let block = json!(["latest", true]);
    assert_eq!(
        front.call_on(path, "eth_getBlockByNumber", block.clone()),
        remote.call_on(path, "eth_getBlockByNumber", block)
    );
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"net_version"},{"jsonrpc":"2.0","id":2,"method":"eth_nope"}]"#;
    assert_eq!(front.post(path, batch), remote.post(path, batch));
    // In the region's span but not a chain the endpoint serves: its own 404 comes back.
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let (status, body) = front.post("/chain/2000005", req);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown chain 2000005"), "{body}");
    // Outside every span, and local chains still answered here.
    assert_eq!(front.post("/chain/3000001", req).0, 404);
    assert_eq!(front.ok("eth_chainId", json!([])), "0x3e9");
    // Subscriptions are not relayed: the upgrade is refused and the answer names the endpoint.
    let mut s = TcpStream::connect(front.server.local_addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 1024];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.contains("subscribe at an endpoint of that region"),
        "{head}"
    );
    let text = front.metrics_text();
    assert!(text.contains("kaon_rpc_forwarded_total 4"), "{text}");
    assert!(
        text.contains("kaon_rpc_refused_total{reason=\"upstream_websocket\"} 1"),
        "{text}"
    );

    // An answer larger than this endpoint would send is not passed on.
    let small = Harness::start(RpcConfig {
        upstreams: vec![upstream(format!("http://{}", remote.server.local_addr()))],
        max_response_bytes: 64,
        ..RpcConfig::default()
    });
    let (status, body) = small.post(path, &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", true]}).to_string());
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no usable answer"), "{body}");

    // Nobody listening: a 502 naming the endpoint, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let orphan = Harness::start(RpcConfig {
        upstreams: vec![upstream(gone.clone())],
        ..RpcConfig::default()
    });
    let (status, body) = orphan.post(path, req);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("gave no usable answer"), "{body}");
    // The upstream's address is the operator's business, not the client's.
    assert!(!body.contains(&gone), "{body}");

    // Two endpoints forwarding the region to each other: refused after one hop, not bounced.
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    drop(a);
    let b = Harness::start(RpcConfig {
        upstreams: vec![upstream(format!("http://{a_addr}"))],
        ..RpcConfig::default()
    });
    let a = Harness::start_at(
        a_addr,
        RpcConfig {
            upstreams: vec![upstream(format!("http://{}", b.server.local_addr()))],
            ..RpcConfig::default()
        },
    );
    let (status, body) = a.post(path, req);
    assert_eq!(status, 508, "{body}");
    assert!(body.contains("form a loop"), "{body}");
}

/// A filter or subscription id as geth makes them: 128 random bits as a quantity, `0x` and at
/// most 32 hex digits without leading zeros (so one id in 16 is shorter than 34 characters).
fn is_id(id: &str) -> bool {
    id.strip_prefix("0x").is_some_and(|digits| {
        (1..=32).contains(&digits.len())
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && (digits == "0" || !digits.starts_with('0'))
    })
}
