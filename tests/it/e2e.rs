//! End to end, as a DApp developer works: `kaon devnet` (4 CNs, 2 RNs, JSON-RPC on an RN) and
//! the real client tools — ethers v6 and solc-js, run by Node.js from `tests/e2e/` — transfer
//! value, deploy and call an ERC-20 compiled from Solidity, read its logs, subscribe to new
//! heads over WebSocket, and see wrong-chain, stale-nonce and unfunded transactions refused.
//!
//! Needs `node` and `tests/e2e/node_modules` (`make test` and `.ci/run` install them with
//! `npm ci`); without them the test fails and says so.

use alloy_primitives::hex;
use kaon::node::devnet::{run, DevnetConfig};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The devnet's output, shared with the test thread that looks for the RPC address.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The URL the devnet printed for `chain`.
    fn url(&self, chain: u64) -> Option<String> {
        let marker = format!("/chain/{chain}");
        self.text()
            .split_whitespace()
            .find(|w| w.starts_with("http://") && w.ends_with(&marker))
            .map(str::to_string)
    }
}

#[test]
fn ethers_and_solc_against_the_devnet_rpc() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        e2e.join("node_modules/ethers").is_dir() && e2e.join("node_modules/solc").is_dir(),
        "tests/e2e/node_modules is missing: run `npm ci --prefix tests/e2e` (make test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = DevnetConfig {
        cns: 4,
        servicechains: 2,
        tps: 50,
        round_ms: 300,
        load_accounts: 8,
        datadir: Some(dir.path().to_path_buf()),
        // A safety net: the test stops the devnet itself when the script ends.
        duration: Some(Duration::from_secs(300)),
        rns: 2,
        rpc: Some("127.0.0.1:0".parse().unwrap()),
        ..DevnetConfig::default()
    };
    let out = Shared::default();
    let stop = Arc::new(AtomicBool::new(false));
    let devnet = {
        let (stop, mut out) = (Arc::clone(&stop), out.clone());
        std::thread::spawn(move || run(&config, stop, &mut out))
    };
    let started = Instant::now();
    let url = loop {
        if let Some(url) = out.url(1001) {
            break url;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && !devnet.is_finished(),
            "the devnet printed no RPC URL:\n{}",
            out.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let script = Command::new("node")
        .arg("e2e.mjs")
        .current_dir(&e2e)
        .env("KAON_RPC", &url)
        .env("KAON_CHAIN_ID", "1001")
        .env("KAON_E2E_TIMEOUT_MS", "180000")
        .output()
        .expect("node runs (install Node.js)");
    let shares = pop_shares_on_chain(&url.replace("/chain/1001", "/chain/1000"));
    // The load generator sends on a servicechain of its own (1003): the developer's chain holds
    // only what the script sent.
    let load_account = kaon::node::loadgen::dev_account(0).address;
    let nonce_on = |chain: &str| {
        let url = url.replace("/chain/1001", chain);
        let nonce = rpc_call(
            &url,
            "eth_getTransactionCount",
            serde_json::json!([load_account, "latest"]),
        );
        nonce.map(|n| {
            u64::from_str_radix(n.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16)
                .unwrap_or(0)
        })
    };
    let (on_1001, on_1003) = (nonce_on("/chain/1001"), nonce_on("/chain/1003"));
    stop.store(true, Ordering::Relaxed);
    let report = devnet.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&script.stdout);
    let stderr = String::from_utf8_lossy(&script.stderr);
    assert!(
        script.status.success() && stdout.contains("e2e: ok"),
        "e2e script failed ({}):\n{stdout}\n{stderr}\n--- devnet ---\n{}",
        script.status,
        out.text()
    );
    assert!(report.chains_agree, "{report:?}");
    assert_eq!(on_1001, Ok(0), "no load on the developer's chain");
    assert!(
        on_1003.as_ref().is_ok_and(|n| *n > 0),
        "load on its own chain: {on_1003:?}"
    );
    let (state, reserve_view) = shares.expect("the devnet miner's shares reach the regionchain");
    assert!(
        reserve_view >= 1,
        "reserve sharesOf = {reserve_view}, popState = {state}"
    );
}

/// Waits (bounded) until the built-in miner's shares are recorded on the regionchain; returns
/// `kaon_popState` and the reserve contract's `sharesOf(miner)` read with `eth_call`.
fn pop_shares_on_chain(region_url: &str) -> Result<(serde_json::Value, u64), String> {
    let call = |method: &str, params| rpc_call(region_url, method, params);
    let miner = kaon::node::devnet::devnet_miner_address();
    let selector = &kaon::crypto::hash::keccak256(b"sharesOf(address)")[..4];
    let data = format!("0x{}{:0>64}", hex::encode(selector), hex::encode(miner));
    let started = Instant::now();
    loop {
        let state = call("kaon_popState", serde_json::json!([miner]))?;
        let answer = call(
            "eth_call",
            serde_json::json!([{"to": kaon::chain::pop::RESERVE_ADDRESS, "data": data}, "latest"]),
        )?;
        let shares = answer
            .as_str()
            .and_then(|h| {
                u64::from_str_radix(h.trim_start_matches("0x").trim_start_matches('0'), 16).ok()
            })
            .unwrap_or(0);
        if shares > 0 {
            return Ok((state, shares));
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err(format!("no shares recorded after 90 s: {state}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One JSON-RPC call to `url` (10 s deadline): its `result`.
fn rpc_call(
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let text = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["result"].clone())
}
