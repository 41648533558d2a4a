//! JSON-RPC throughput and latency over loopback: 64 concurrent keep-alive clients against one
//! server, for `eth_getBalance` and `eth_call` (the backend answers from memory, so what is
//! measured is the RPC layer: HTTP, framing, parameter parsing, dispatch, encoding).
//!
//! References measured in the same run, under the same load:
//! * a bare hyper server answering every POST with a fixed JSON body (the HTTP floor);
//! * `web3_clientVersion` through the RPC server (no backend work, no parameters).
//!
//! `cargo bench --bench rpc` (`KAON_BENCH_SECS`: seconds per case and round, default 2;
//! `KAON_BENCH_ROUNDS`: rounds, default 3; medians are reported).

use alloy_primitives::{Address, Bytes, B256, U256};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes as HttpBytes;
use hyper_util::rt::TokioIo;
use kaon::crypto::tx::SignedTransaction;
use kaon::rpc::{
    BackendError, CallRequest, LogQuery, RpcBackend, RpcBlock, RpcConfig, RpcFeeHistory, RpcLog,
    RpcReceipt, RpcServer, RpcTransaction, StateAt, SubmitError,
};
use kaon::types::ChainId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const CHAIN: ChainId = ChainId(1001);

/// Answers balances and calls from constants; everything else is unavailable.
struct ConstBackend;

fn unavailable<T>() -> Result<T, BackendError> {
    Err(BackendError::Internal("not part of the benchmark".into()))
}

impl RpcBackend for ConstBackend {
    fn has_chain(&self, chain: ChainId) -> bool {
        chain == CHAIN
    }
    fn head(&self, _: ChainId) -> Result<u64, BackendError> {
        Ok(100)
    }
    fn block_by_number(
        &self,
        _: ChainId,
        _: u64,
        _: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        unavailable()
    }
    fn block_by_hash(
        &self,
        _: ChainId,
        _: B256,
        _: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        unavailable()
    }
    fn transaction(&self, _: ChainId, _: B256) -> Result<Option<RpcTransaction>, BackendError> {
        unavailable()
    }
    fn receipt(&self, _: ChainId, _: B256) -> Result<Option<RpcReceipt>, BackendError> {
        unavailable()
    }
    fn balance(&self, _: ChainId, address: Address, _: StateAt) -> Result<U256, BackendError> {
        Ok(U256::from_be_slice(address.as_slice()))
    }
    fn nonce(&self, _: ChainId, _: Address, _: StateAt) -> Result<u64, BackendError> {
        Ok(7)
    }
    fn code(&self, _: ChainId, _: Address, _: StateAt) -> Result<Bytes, BackendError> {
        unavailable()
    }
    fn storage(&self, _: ChainId, _: Address, _: B256, _: StateAt) -> Result<B256, BackendError> {
        unavailable()
    }
    fn call(&self, _: ChainId, request: &CallRequest, _: StateAt) -> Result<Bytes, BackendError> {
        // A 32-byte return word, like an ERC-20 `balanceOf`.
        let mut word = [0u8; 32];
        word[..4].copy_from_slice(&request.input[..4.min(request.input.len())]);
        Ok(Bytes::copy_from_slice(&word))
    }
    fn estimate_gas(&self, _: ChainId, _: &CallRequest, _: StateAt) -> Result<u64, BackendError> {
        Ok(21_000)
    }
    fn send_raw_transaction(&self, _: ChainId, _: SignedTransaction) -> Result<B256, SubmitError> {
        Err(SubmitError::Unavailable("not part of the benchmark".into()))
    }
    fn logs(&self, _: ChainId, _: &LogQuery) -> Result<Vec<RpcLog>, BackendError> {
        unavailable()
    }
    fn gas_price(&self, _: ChainId) -> Result<u128, BackendError> {
        Ok(1)
    }
    fn max_priority_fee(&self, _: ChainId) -> Result<u128, BackendError> {
        Ok(1)
    }
    fn fee_history(
        &self,
        _: ChainId,
        _: u64,
        _: u64,
        _: &[f64],
    ) -> Result<RpcFeeHistory, BackendError> {
        unavailable()
    }
    fn servicechains(&self, _: ChainId) -> Result<serde_json::Value, BackendError> {
        unavailable()
    }
    fn checkpoint_proof(
        &self,
        _: ChainId,
        _: B256,
    ) -> Result<Option<serde_json::Value>, BackendError> {
        unavailable()
    }
    fn evidence(&self, _: ChainId, _: u64, _: usize) -> Result<serde_json::Value, BackendError> {
        unavailable()
    }
    fn pop_state(&self, _: ChainId, _: Option<Address>) -> Result<serde_json::Value, BackendError> {
        unavailable()
    }
}

/// A hyper server that answers every request with the same JSON: the HTTP floor.
async fn bare_echo(listener: tokio::net::TcpListener) {
    const ANSWER: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":"0x0"}"#;
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        HttpBytes::from_static(ANSWER),
                    )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One keep-alive client sending `body` until `until`; returns each request's latency.
async fn client(
    addr: SocketAddr,
    path: &'static str,
    body: HttpBytes,
    until: Instant,
) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(64 * 1024);
    while Instant::now() < until {
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("request");
        let started = Instant::now();
        let resp = sender.send_request(req).await.expect("send");
        let answer = resp.into_body().collect().await.expect("body").to_bytes();
        latencies.push(started.elapsed());
        assert!(
            answer.windows(8).any(|w| w == b"\"result\""),
            "error answer: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    latencies
}

struct Outcome {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `CLIENTS` clients for `secs` against `addr`.
fn load(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    path: &'static str,
    body: &str,
    secs: f64,
) -> Outcome {
    let body = HttpBytes::from(body.to_string());
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut all: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(addr, path, body.clone(), until)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Outcome {
        rate: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// The median of each figure over rounds (taken separately).
fn median(runs: &mut [Outcome]) -> Outcome {
    let mid = runs.len() / 2;
    let mut pick = |key: fn(&Outcome) -> f64| {
        runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&runs[mid])
    };
    let rate = pick(|o| o.rate);
    let p50 = Duration::from_secs_f64(pick(|o| o.p50.as_secs_f64()));
    let p99 = Duration::from_secs_f64(pick(|o| o.p99.as_secs_f64()));
    Outcome { rate, p50, p99 }
}

fn main() {
    let secs: f64 = std::env::var("KAON_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rounds: usize = std::env::var("KAON_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Server and clients share the machine, as a node and its local clients would.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let server = RpcServer::start(
        server_rt.handle(),
        loopback,
        RpcConfig {
            default_chain: CHAIN,
            ..RpcConfig::default()
        },
        Arc::new(ConstBackend),
    )
    .expect("rpc server");
    let echo_listener = server_rt
        .block_on(tokio::net::TcpListener::bind(loopback))
        .expect("echo listener");
    let echo_addr = echo_listener.local_addr().expect("echo address");
    server_rt.spawn(bare_echo(echo_listener));

    let balance = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000ff","latest"]}"#;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"from":"0x00000000000000000000000000000000000000aa","to":"0x00000000000000000000000000000000000000ff","data":"0x70a0823100000000000000000000000000000000000000000000000000000000000000aa"},"latest"]}"#;
    let version = r#"{"jsonrpc":"2.0","id":1,"method":"web3_clientVersion","params":[]}"#;
    let cases = [
        ("bare hyper echo (floor)", echo_addr, "/", version),
        (
            "web3_clientVersion (reference)",
            server.local_addr(),
            "/chain/1001",
            version,
        ),
        (
            "eth_getBalance",
            server.local_addr(),
            "/chain/1001",
            balance,
        ),
        ("eth_call", server.local_addr(), "/chain/1001", call),
    ];
    // Warm up connections and allocators once.
    let _ = load(&client_rt, server.local_addr(), "/chain/1001", version, 0.5);
    // Cases alternate round by round, so a burst of load from elsewhere on the machine hits
    // all of them alike; the medians over rounds are reported.
    let mut runs: Vec<Vec<Outcome>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, addr, path, body)) in cases.iter().enumerate() {
            runs[i].push(load(&client_rt, *addr, path, body, secs));
        }
    }
    let medians: Vec<Outcome> = runs.iter_mut().map(|r| median(r)).collect();
    println!("rpc: {CLIENTS} keep-alive clients over loopback, {rounds} rounds of {secs} s per case, medians");
    println!(
        "{:<32} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "case", "req/s", "p50 µs", "p99 µs", "vs floor", "vs ref"
    );
    let (floor, reference) = (medians[0].rate, medians[1].rate);
    for ((name, ..), o) in cases.iter().zip(&medians) {
        println!(
            "{:<32} {:>10.0} {:>9} {:>9} {:>9.2} {:>9.2}",
            name,
            o.rate,
            o.p50.as_micros(),
            o.p99.as_micros(),
            o.rate / floor,
            o.rate / reference
        );
    }
    drop(server);
}
