//! `kaon init` + four `kaon cn` processes on 127.0.0.1: they finalize blocks; one is killed
//! with SIGKILL while the other three commit more blocks than any CN keeps in memory (so the
//! restarted one must catch up from its peers' block logs); meanwhile a hostile peer holding
//! the dead CN's key asks a live CN for blocks from height `u64::MAX`, which must not stop it.
//! The restarted CN resumes from its datadir, catches up, votes again and agrees with the
//! others at every height; a `kaon rn` process syncs from them, serves JSON-RPC and registers
//! itself for PoSC; SIGTERM stops them all cleanly.

use alloy_primitives::hex;
use kaon::node::cluster::{self, height, heights, Chains, KillOnDrop};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KAON: &str = env!("CARGO_BIN_EXE_kaon");
/// Generous bound for any wait below; reaching it is a failure, not the expected path.
const DEADLINE: Duration = Duration::from_secs(90);
/// Longest the chain (or a catching-up CN) may go without a new block in the long waits.
const STALL: Duration = Duration::from_secs(45);
/// Blocks the three live CNs commit while the fourth is down: more than the 256 a CN serves
/// from memory, so catching up reads peers' block logs. `KAON_REJOIN_BLOCKS` raises it (the
/// soak: thousands).
const REJOIN_BLOCKS: u64 = 400;
/// Block interval of the test network: short, so hundreds of blocks pass in seconds.
const ROUND_MS: &str = "20";
/// Round-0 timeout: the dead CN's turns as proposer cost this each.
const TIMEOUT_MS: &str = "100";

fn spawn_cn(dir: &std::path::Path, i: usize, chains: &Chains) -> Child {
    cluster::spawn_cn(std::path::Path::new(KAON), dir, i, chains).expect("start kaon cn")
}

/// Polls `cond` until it holds or [`DEADLINE`] passes.
fn wait_for(what: &str, chains: &Chains, cond: impl Fn(&Chains) -> bool) {
    let start = Instant::now();
    while !cond(chains) {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {:?}",
            heights(chains)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` until it holds; fails when the lowest height of `nodes` has not moved for
/// [`STALL`] (a long wait on a loaded machine is fine, a stuck chain is not).
fn wait_progressing(what: &str, chains: &Chains, nodes: &[usize], cond: impl Fn(&Chains) -> bool) {
    let lowest = || nodes.iter().map(|&i| height(chains, i)).min().unwrap_or(0);
    let (mut last, mut since) = (lowest(), Instant::now());
    while !cond(chains) {
        let now = lowest();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        assert!(
            since.elapsed() < STALL,
            "no progress for {STALL:?} waiting for {what}: {:?}",
            heights(chains)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Impersonates the stopped CN 3 (its key, its index) towards CN 0 and asks for blocks from
/// height `u64::MAX` — once a panic of CN 0's consensus thread. CN 0 must answer a normal
/// request afterwards, keep committing, and stay up.
fn hostile_sync_request(dir: &std::path::Path, base: u16, cn0: &mut Child) {
    use kaon::types::codec::encode_frame;
    use kaon::types::{CnIndex, ConsensusMessage, Height};
    let genesis = kaon::chain::genesis::Genesis::load(&dir.join("genesis.json")).unwrap();
    let set = Arc::new(genesis.cn_set().unwrap());
    let key = kaon::crypto::bls::SecretKey::from_bytes(
        &kaon::node::ranger::read_secret(&dir.join("cn3/cn.key")).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, inbox) = kaon::pipeline::link("net_consensus", 1024);
    let mut net = kaon::net::Network::bind(
        rt.handle(),
        // CN 3's own address: CN 0 sends to CN 3 over the connection it dials there.
        kaon::net::NetConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], base + 3))),
        CnIndex(3),
        key,
        set,
        tx,
    )
    .unwrap();
    let cn0_addr = std::net::SocketAddr::from(([127, 0, 0, 1], base));
    net.connect(rt.handle(), &[(CnIndex(0), cn0_addr)]);
    let hostile = Arc::new(encode_frame(&ConsensusMessage::SyncRequest(Height(
        u64::MAX,
    ))));
    let honest = Arc::new(encode_frame(&ConsensusMessage::SyncRequest(Height(1))));
    // Until CN 0 answers, the connection may not be up: send both each time. Then the hostile
    // request again, and a last honest one that must still be answered.
    answered(&inbox, &|| {
        net.send(CnIndex(0), Arc::clone(&hostile));
        net.send(CnIndex(0), Arc::clone(&honest));
    });
    for _ in 0..3 {
        net.send(CnIndex(0), Arc::clone(&hostile));
    }
    answered(&inbox, &|| net.send(CnIndex(0), Arc::clone(&honest)));
    net.close();
    rt.shutdown_timeout(Duration::from_secs(2));
    assert!(
        cn0.try_wait().unwrap().is_none(),
        "CN 0 exited after a sync request from u64::MAX"
    );
}

/// Calls `send` every 400 ms until CN 0 answers with the decided block of height 1. The
/// resend does not wait for a quiet moment: the live CNs keep sending their consensus traffic
/// to the impersonated CN, and a request lost before the connection was up must be repeated
/// however busy the link is (waiting for 400 ms of silence once kept a run from ever asking
/// again under a loaded CI machine).
fn answered(
    inbox: &kaon::pipeline::LinkReceiver<(kaon::types::CnIndex, kaon::net::Inbound)>,
    send: &dyn Fn(),
) {
    use kaon::types::{ConsensusMessage, Height};
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "CN 0 stopped answering sync requests"
        );
        send();
        let resend_at = Instant::now() + Duration::from_millis(400);
        while let Some(left) = resend_at.checked_duration_since(Instant::now()) {
            let Ok((_, msg)) = inbox.recv_timeout(left) else {
                break;
            };
            if let kaon::net::Inbound::Consensus(ConsensusMessage::Decided(block)) = msg {
                if block.header().height == Height(1) {
                    return;
                }
            }
        }
    }
}

#[test]
fn four_processes_finalize_and_a_killed_cn_resumes_and_agrees() {
    let _turn = crate::processes_turn();
    let dir = tempfile::tempdir().unwrap();
    // A port range unlikely to be taken, below Linux's ephemeral range (32768–60999) that
    // every other test's 127.0.0.1:0 sockets draw from; the test owns it for its duration.
    let base = 20_000 + (std::process::id() % 12_000) as u16;
    let init = init_region(dir.path(), base);
    // It says what it wrote and how to start it.
    let printed = String::from_utf8_lossy(&init.stdout);
    let genesis = kaon::chain::genesis::Genesis::load(&dir.path().join("genesis.json")).unwrap();
    assert!(
        printed.contains(&format!("genesis hash   {}", genesis.hash())),
        "{printed}"
    );
    for i in 0..4 {
        let config = dir.path().join(format!("cn{i}/config.toml"));
        assert!(
            printed.contains(&format!("kaon cn --config {}", config.display())),
            "{printed}"
        );
    }
    let chains = cluster::new_chains(4);
    let mut children = KillOnDrop((0..4).map(|i| spawn_cn(dir.path(), i, &chains)).collect());
    wait_for("all four CNs at height 3", &chains, |c| {
        (0..4).all(|i| height(c, i) >= 3)
    });
    children.push(spawn_rn(dir.path(), base));

    // SIGKILL CN 3; the other three are a quorum of four and keep going.
    children[3].kill().unwrap();
    children[3].wait().unwrap();
    let at_kill = height(&chains, 3);
    hostile_sync_request(dir.path(), base, &mut children[0]);
    let gap: u64 = std::env::var("KAON_REJOIN_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REJOIN_BLOCKS);
    let down_since = Instant::now();
    wait_progressing("three CNs to commit the gap", &chains, &[0, 1, 2], |c| {
        (0..3).all(|i| height(c, i) >= at_kill + gap)
    });
    let down_for = down_since.elapsed();

    // Restart: it resumes from disk and catches up from its peers' logs, then votes again.
    let target = height(&chains, 0) + 2;
    let restarted = Instant::now();
    children[3] = spawn_cn(dir.path(), 3, &chains);
    // (The killed CN 3's `Child` was reaped above; replacing it drops nothing running.)
    wait_progressing("the restarted CN to catch up", &chains, &[3], |c| {
        height(c, 3) >= target
    });
    let caught_up_in = restarted.elapsed();
    eprintln!(
        "rejoin: {} blocks behind after {:.1} s down; caught up {} blocks in {:.1} s ({:.0} blocks/s)",
        target - at_kill,
        down_for.as_secs_f64(),
        target - at_kill,
        caught_up_in.as_secs_f64(),
        (target - at_kill) as f64 / caught_up_in.as_secs_f64()
    );
    // It votes again: with one of four down the other three need it no more, so the check is
    // that it keeps committing with them at the head.
    let head = height(&chains, 0);
    wait_for("the restarted CN to follow the head", &chains, |c| {
        height(c, 3) >= head + 3
    });

    let all = chains.lock().unwrap().clone();
    for (h, hash) in &all[3] {
        for (i, other) in all.iter().enumerate().take(3) {
            if let Some(theirs) = other.get(h) {
                assert_eq!(theirs, hash, "CN {i} and CN 3 disagree at height {h}");
            }
        }
    }
    assert!(
        all[3].keys().any(|h| *h > at_kill),
        "CN 3 committed new heights after its restart"
    );

    // The RN serves the chain over JSON-RPC and registered itself on the regionchain.
    let region = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(dir.path().join("genesis.json")).unwrap(),
    )
    .unwrap()["region"]
        .as_u64()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/chain/{region}", base + 11);
    let reward = kaon::node::loadgen::dev_account(300).address;
    let start = Instant::now();
    loop {
        let head = rpc(&url, "eth_blockNumber", serde_json::json!([])).and_then(|v| {
            v.as_str()
                .map(|h| u64::from_str_radix(&h[2..], 16).unwrap())
        });
        let state = rpc(&url, "kaon_popState", serde_json::json!([reward]));
        let registered = state.as_ref().and_then(|s| {
            s["rns"][reward.to_checksum(None)]["registration"]["endpoint"]
                .as_str()
                .map(str::to_owned)
        });
        if head.is_some_and(|h| h >= 3) && registered == Some(format!("127.0.0.1:{}", base + 10)) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "kaon rn: head {head:?}, registration {registered:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    for child in children.iter() {
        cluster::signal(child, libc::SIGTERM).unwrap();
    }
    for (i, child) in children.iter_mut().enumerate() {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "process {i} (0-3 CNs, 4 the RN) did not exit cleanly on SIGTERM: {status}"
        );
    }
}

/// A `kaon rn` whose CNs are not running yet acknowledges a transfer (it can forward it to
/// nobody) and is killed with SIGKILL. Restarted with its CNs up, it must read the transfer
/// back from its journal and get it included: an acknowledged transaction survives a crash of
/// the RN that acknowledged it. Without the journal the transfer is never included.
#[test]
fn a_transfer_acknowledged_by_an_rn_killed_before_forwarding_it_is_included() {
    let _turn = crate::processes_turn();
    let dir = tempfile::tempdir().unwrap();
    let base = 20_000 + (std::process::id() % 12_000) as u16;
    init_region(dir.path(), base);
    let mut children = KillOnDrop(vec![spawn_rn(dir.path(), base)]);
    let url = format!("http://127.0.0.1:{}/", base + 11);
    let chain = kaon::types::ChainId(
        kaon::chain::genesis::Genesis::load(&dir.path().join("genesis.json"))
            .unwrap()
            .servicechains[0],
    );
    let account = kaon::node::loadgen::dev_account(1);
    let raw = kaon::node::loadgen::transfer(chain, 0, &account.secret, Default::default());
    let start = Instant::now();
    let hash = loop {
        if let Some(hash) = rpc(&url, "eth_sendRawTransaction", serde_json::json!([raw])) {
            break hash;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the RN never acknowledged the transfer"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    children[0].kill().unwrap();
    children[0].wait().unwrap();

    let chains = cluster::new_chains(4);
    for i in 0..4 {
        children.push(spawn_cn(dir.path(), i, &chains));
    }
    children[0] = spawn_rn(dir.path(), base);
    let start = Instant::now();
    loop {
        let receipt = rpc(&url, "eth_getTransactionReceipt", serde_json::json!([hash]));
        if receipt.as_ref().is_some_and(|r| !r.is_null()) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "acknowledged {hash} never included after the RN restarted: {:?}",
            heights(&chains)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kaon init` of four CNs on `base..base + 4` into `dir`.
fn init_region(dir: &std::path::Path, base: u16) -> std::process::Output {
    let init = Command::new(KAON)
        .args([
            "init",
            "--cns",
            "4",
            "--round-ms",
            ROUND_MS,
            "--timeout-ms",
            TIMEOUT_MS,
        ])
        .args(["--base-port", &base.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(init.status.success(), "kaon init failed");
    init
}

/// `kaon keygen` (once) + `kaon rn` syncing from the four CNs, RN network on `base + 10`, JSON-RPC on
/// `base + 11`, registering development account 300 as its reward address.
fn spawn_rn(dir: &std::path::Path, base: u16) -> Child {
    let key = dir.join("rn.key");
    if !key.exists() {
        let keygen = Command::new(KAON)
            .args(["--log", "warn", "keygen", "--out"])
            .arg(&key)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(keygen.success(), "kaon keygen failed");
    }
    let reward = dir.join("reward.key");
    std::fs::write(
        &reward,
        hex::encode(kaon::node::loadgen::dev_account(300).secret),
    )
    .unwrap();
    let launch = cluster::RnLaunch {
        genesis: dir.join("genesis.json"),
        datadir: dir.join("rn"),
        key_file: key,
        reward_key_file: Some(reward),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], base + 10)),
        rpc: std::net::SocketAddr::from(([127, 0, 0, 1], base + 11)),
        cns: (0..4u16)
            .map(|i| format!("{i}@127.0.0.1:{}", base + i))
            .collect(),
        rns: vec![],
    };
    cluster::spawn_rn(std::path::Path::new(KAON), &launch).expect("start kaon rn")
}

/// One JSON-RPC call; `None` while the server is not up or answers an error.
fn rpc(url: &str, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut response = ureq::post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .ok()?;
    let reply: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    Some(reply.get("result")?.clone())
}

/// `kaon init --regions 2`: eight `kaon cn` processes, two regions, and one `kaon rn` process
/// following both from the `rn/config.toml` init wrote. One endpoint answers each region's
/// chains from that region: a transfer on the second region's servicechain is included there
/// and unknown to the first's, an unknown chain is refused, and the second region, recorded
/// with the command init printed, appears in the first region's directory with a checkpoint of
/// its headers that the RN relayed (and the first region's headers in the second's).
#[test]
fn two_regions_of_processes_and_one_rn_following_both() {
    let _turn = crate::processes_turn();
    let dir = tempfile::tempdir().unwrap();
    // Below Linux's ephemeral range (32768–60999) and apart from the other tests' ports.
    let base = 8_000 + (std::process::id() % 12_000) as u16;
    let printed = init_two_regions(
        dir.path(),
        base,
        &["--round-ms", "100", "--timeout-ms", "300"],
    );
    let second = dir.path().join("region-1001000");
    assert!(second.join("genesis.json").exists(), "{printed}");
    assert!(printed.contains("rn/config.toml"), "{printed}");

    let chains = [cluster::new_chains(4), cluster::new_chains(4)];
    let mut children = KillOnDrop(Vec::new());
    for (region_dir, chains) in [dir.path(), second.as_path()].into_iter().zip(&chains) {
        for i in 0..4 {
            children.0.push(spawn_cn(region_dir, i, chains));
        }
    }
    let rpc_port = base + 10;
    children.0.push(
        cluster::child_command(std::path::Path::new(KAON))
            .args(["--log", "warn", "--config"])
            .arg(dir.path().join("rn/config.toml"))
            .args(["rn", "--rpc", &format!("127.0.0.1:{rpc_port}")])
            .args(["--metrics", &format!("127.0.0.1:{}", rpc_port + 1)])
            .stdout(Stdio::null())
            .spawn()
            .expect("start kaon rn"),
    );
    let url = |chain: u64| format!("http://127.0.0.1:{rpc_port}/chain/{chain}");
    // Both regions commit, each at its own pace, and the RN serves both.
    for chain in [1001, 1_001_001] {
        let start = Instant::now();
        while rpc(&url(chain), "eth_blockNumber", serde_json::json!([]))
            .and_then(|h| u64::from_str_radix(h.as_str()?.trim_start_matches("0x"), 16).ok())
            .is_none_or(|h| h < 3)
        {
            assert!(
                start.elapsed() < DEADLINE,
                "the RN never served chain {chain}: {:?} {:?}",
                heights(&chains[0]),
                heights(&chains[1])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let account = kaon::node::loadgen::dev_account(1);
    let to = alloy_primitives::Address::repeat_byte(0x5e);
    let raw =
        kaon::node::loadgen::transfer(kaon::types::ChainId(1_001_001), 0, &account.secret, to);
    let hash = send_and_wait(&url(1_001_001), &raw, "through an RN of its region");
    let balance = |chain: u64| {
        rpc(
            &url(chain),
            "eth_getBalance",
            serde_json::json!([to, "latest"]),
        )
        .expect("a balance")
    };
    assert_ne!(balance(1_001_001), serde_json::json!("0x0"));
    assert_eq!(
        balance(1001),
        serde_json::json!("0x0"),
        "the first region saw the transfer"
    );
    assert!(rpc(
        &url(1001),
        "eth_getTransactionReceipt",
        serde_json::json!([hash])
    )
    .is_some_and(|r| r.is_null()));
    // The same signed bytes are refused on the first region's chain (signed for another).
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]
    });
    let refused = ureq::post(&url(1001))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("the first region's chain answers")
        .body_mut()
        .read_to_string()
        .unwrap();
    let refused: serde_json::Value = serde_json::from_str(&refused).unwrap();
    assert!(refused["error"]["message"].is_string(), "{refused}");
    assert!(refused.get("result").is_none(), "{refused}");
    let unknown = ureq::post(&url(5_000))
        .header("content-type", "application/json")
        .send(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#);
    assert!(
        matches!(unknown, Err(ureq::Error::StatusCode(404))),
        "{unknown:?}"
    );

    // The second region into the first's directory, with the command init printed (its
    // `--rpc` pointed at this test's endpoint), then listed by `kaon_regions`.
    let create = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("kaon region create "))
        .expect("init prints how to record the second region");
    let args: Vec<String> = create
        .split_whitespace()
        .map(|a| match a.strip_prefix("http://127.0.0.1:8545/") {
            Some(path) => format!("http://127.0.0.1:{rpc_port}/{path}"),
            None => a.to_string(),
        })
        .collect();
    // As operators would: each CN's approval signed on its own (`kaon region approve`, one key
    // file each), then combined by `kaon region create --approval`.
    let (mut shared, mut key_files) = (Vec::new(), Vec::new());
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--key-file" => key_files.push(rest.next().unwrap().clone()),
            "--rpc" => {
                rest.next();
            }
            _ => shared.push(a.clone()),
        }
    }
    assert!(key_files.len() >= 3, "{create}");
    let mut approved: Vec<String> = Vec::new();
    for key in &key_files {
        let approve = Command::new(KAON)
            .args(["--log", "warn", "region", "approve", "--key-file", key])
            .args(&shared)
            .output()
            .unwrap();
        assert!(
            approve.status.success(),
            "{}",
            String::from_utf8_lossy(&approve.stderr)
        );
        let line = String::from_utf8(approve.stdout)
            .unwrap()
            .trim()
            .to_string();
        approved.extend(["--approval".to_string(), line]);
    }
    let recorded = Command::new(KAON)
        .args(["--log", "warn", "region", "create"])
        .args(&shared)
        .args(&approved)
        .args(["--rpc", &format!("http://127.0.0.1:{rpc_port}/chain/1000")])
        .output()
        .unwrap();
    assert!(
        recorded.status.success(),
        "kaon region create failed: {}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    let start = Instant::now();
    loop {
        let regions = rpc(&url(1000), "kaon_regions", serde_json::json!([])).unwrap_or_default();
        let served: Vec<u64> = regions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["region"].as_u64())
            .collect();
        // Listed, and (relayed by the RN, which follows both) its headers checkpointed.
        let checkpoint = regions[0]["directory"]
            .as_array()
            .and_then(|d| d.iter().find(|e| e["region"] == 1_001_000))
            .map(|e| e["checkpoint"].clone())
            .filter(|c| c["height"].as_u64().is_some());
        // And the first region's headers checkpointed into the second's regionchain.
        let back = regions[1]["checkpoints"]
            .as_array()
            .is_some_and(|c| c.iter().any(|h| h["region"] == 1000));
        if let (true, true, Some(checkpoint)) = (served == [1000, 1_001_000], back, checkpoint) {
            let height = checkpoint["height"].as_u64().unwrap();
            let block = rpc(
                &url(1_001_000),
                "eth_getBlockByNumber",
                serde_json::json!([format!("{height:#x}"), false]),
            )
            .expect("the second region's block at its checkpointed height");
            assert_eq!(checkpoint["hash"], block["hash"], "{regions}");
            // Each region's finality as the RN measured it, over blocks it stored following.
            for region in regions.as_array().unwrap() {
                let finality = &region["finalityMs"];
                assert!(finality["blocks"].as_u64() >= Some(1), "{region}");
                assert!(
                    finality["p50"].as_u64() <= finality["max"].as_u64(),
                    "{region}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "region 1001000 never listed and checkpointed: {regions}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The load an operator's "add a region" alert reads, per region, on the RN's metrics.
    let metrics = ureq::get(&format!("http://127.0.0.1:{}/metrics", rpc_port + 1))
        .call()
        .expect("the RN serves metrics")
        .body_mut()
        .read_to_string()
        .unwrap();
    for region in ["1000", "1001000"] {
        for name in ["kaon_region_pool_depth", "kaon_region_finality_p50_seconds"] {
            let series = format!("{name}{{region=\"{region}\"}} ");
            assert!(metrics.contains(&series), "no {series} in\n{metrics}");
        }
    }

    // A second RN follows the first region only and forwards the second's chains to the
    // endpoint above ([rn] remote): one URL still answers for both regions, writes included.
    let single = single_region_rn(dir.path(), base + 20, rpc_port);
    children.0.push(
        cluster::child_command(std::path::Path::new(KAON))
            .args(["--log", "warn", "--config"])
            .arg(&single)
            .args(["rn", "--rpc", &format!("127.0.0.1:{}", base + 21)])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the single-region kaon rn"),
    );
    let front = |chain: u64| format!("http://127.0.0.1:{}/chain/{chain}", base + 21);
    let start = Instant::now();
    while rpc(&front(1001), "eth_blockNumber", serde_json::json!([])).is_none() {
        assert!(
            start.elapsed() < DEADLINE,
            "the single-region RN never served chain 1001"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        rpc(
            &front(1_001_001),
            "eth_getBalance",
            serde_json::json!([to, "latest"])
        ),
        Some(balance(1_001_001)),
        "a read of the other region's chain is answered through the forwarding endpoint"
    );
    let again =
        kaon::node::loadgen::transfer(kaon::types::ChainId(1_001_001), 1, &account.secret, to);
    send_and_wait(
        &front(1_001_001),
        &again,
        "forwarded by an RN of another region",
    );
    let unknown = ureq::post(&front(5_000_000))
        .header("content-type", "application/json")
        .send(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#);
    assert!(
        matches!(unknown, Err(ureq::Error::StatusCode(404))),
        "{unknown:?}"
    );

    // A transfer the single-region RN acknowledges for the first region's chain that cannot be
    // included before the chain moves (its sender's nonce 0 is not sent yet): at the move that
    // RN hands it on to the endpoint serving the chain's new region ([rn] remote).
    let late = kaon::node::loadgen::dev_account(3);
    let gap = kaon::node::loadgen::transfer(kaon::types::ChainId(1001), 1, &late.secret, to);
    let gap_hash = rpc(
        &front(1001),
        "eth_sendRawTransaction",
        serde_json::json!([gap]),
    )
    .expect("the single-region RN acknowledges a transfer queued behind a nonce gap");

    // The first region's chain moves to the second with the operator's command: the first
    // region's CNs freeze it, the adoption goes to the second; the same URL then answers the
    // same balances from the second region and takes a transfer there.
    let funded = |chain: u64| {
        rpc(
            &url(chain),
            "eth_getBalance",
            serde_json::json!([account.address, "latest"]),
        )
        .expect("a balance")
    };
    let before = funded(1001);
    // The third CN's operator approves on its own machine.
    let approval = Command::new(KAON)
        .args(["--log", "warn", "region", "approve-move", "--genesis"])
        .arg(dir.path().join("genesis.json"))
        .args([
            "--chain",
            "1001",
            "--to",
            "1001000",
            "--key-file",
            &key_files[2],
        ])
        .output()
        .unwrap();
    assert!(
        approval.status.success(),
        "{}",
        String::from_utf8_lossy(&approval.stderr)
    );
    let approval = String::from_utf8(approval.stdout).unwrap();
    let run_move = || {
        let moved = Command::new(KAON)
            .args(["--log", "warn", "region", "move", "--genesis"])
            .arg(dir.path().join("genesis.json"))
            .args(["--chain", "1001", "--to", "1001000"])
            .args(["--approval", approval.trim()])
            .args(
                key_files
                    .iter()
                    .take(2)
                    .flat_map(|k| ["--key-file", k.as_str()]),
            )
            .args(["--rpc", &format!("http://127.0.0.1:{rpc_port}")])
            .output()
            .unwrap();
        assert!(
            moved.status.success(),
            "kaon region move failed: {}",
            String::from_utf8_lossy(&moved.stderr)
        );
        String::from_utf8(moved.stdout).unwrap()
    };
    let first = run_move();
    assert!(first.contains("sent to region 1000"), "{first}");
    // Run again (as after an interrupted delivery): the chain is frozen already, so no order
    // is sent, and the delivery finds it adopted.
    let again = run_move();
    assert!(!again.contains("sent to region"), "{again}");
    assert!(again.contains("adopted by region 1001000"), "{again}");
    let start = Instant::now();
    loop {
        let regions = rpc(&url(1000), "kaon_regions", serde_json::json!([])).unwrap_or_default();
        if regions[1]["servicechains"]
            .as_array()
            .is_some_and(|c| c.contains(&serde_json::json!(1001)))
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "chain 1001 never adopted: {regions}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(funded(1001), before);
    let after = kaon::node::loadgen::transfer(kaon::types::ChainId(1001), 0, &account.secret, to);
    send_and_wait(
        &url(1001),
        &after,
        "after its chain moved to the second region",
    );
    assert_eq!(balance(1001), serde_json::json!("0x1"));
    // The gap filled in the new region, the transfer the single-region RN acknowledged before
    // the move is included there too: handed on, not lost.
    let first = kaon::node::loadgen::transfer(kaon::types::ChainId(1001), 0, &late.secret, to);
    send_and_wait(
        &url(1001),
        &first,
        "filling the gap in the chain's new region",
    );
    let start = Instant::now();
    loop {
        let receipt = rpc(
            &url(1001),
            "eth_getTransactionReceipt",
            serde_json::json!([gap_hash]),
        )
        .unwrap_or_default();
        if !receipt.is_null() {
            assert_eq!(receipt["status"], serde_json::json!("0x1"), "{receipt}");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the transfer acknowledged by the single-region RN before the move was lost"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(balance(1001), serde_json::json!("0x3"));
}

/// `kaon init --regions 2 --cns 4 --servicechains 1` into `dir` from port `base`, with `extra`
/// flags; what it printed.
fn init_two_regions(dir: &std::path::Path, base: u16, extra: &[&str]) -> String {
    let init = Command::new(KAON)
        .args([
            "init",
            "--regions",
            "2",
            "--cns",
            "4",
            "--servicechains",
            "1",
        ])
        .args(extra)
        .args(["--base-port", &base.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "kaon init --regions 2 failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    String::from_utf8(init.stdout).unwrap()
}

/// Sends `raw` to the chain endpoint `url`, which must acknowledge it, and waits until the
/// same endpoint serves its receipt; its hash.
fn send_and_wait(url: &str, raw: &alloy_primitives::Bytes, how: &str) -> serde_json::Value {
    let hash = rpc(url, "eth_sendRawTransaction", serde_json::json!([raw]))
        .unwrap_or_else(|| panic!("a transfer sent {how} was not acknowledged"));
    let start = Instant::now();
    while rpc(url, "eth_getTransactionReceipt", serde_json::json!([hash]))
        .is_none_or(|r| r.is_null())
    {
        assert!(
            start.elapsed() < DEADLINE,
            "{hash}, sent {how}, never included"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    hash
}

/// A config for an RN following `dir`'s first region only (its own key, data and RN-network
/// port `listen_port`) that forwards the second region's chains to the endpoint on `rpc_port`.
fn single_region_rn(dir: &std::path::Path, listen_port: u16, rpc_port: u16) -> std::path::PathBuf {
    let rn_dir = dir.join("rn");
    let text = std::fs::read_to_string(rn_dir.join("config.toml")).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    config.insert("datadir".into(), "data-single".into());
    let rn = config["rn"].as_table().unwrap().clone();
    let mut first = rn["regions"].as_array().unwrap()[0]
        .as_table()
        .unwrap()
        .clone();
    first.insert("key_file".into(), "single.key".into());
    first.insert("listen".into(), format!("127.0.0.1:{listen_port}").into());
    std::fs::write(rn_dir.join("single.key"), "11".repeat(32)).unwrap();
    let mut remote = toml::Table::new();
    remote.insert("region".into(), toml::Value::Integer(1_001_000));
    remote.insert("rpc".into(), format!("http://127.0.0.1:{rpc_port}").into());
    let mut section = toml::Table::new();
    section.insert("regions".into(), vec![toml::Value::Table(first)].into());
    section.insert("remote".into(), vec![toml::Value::Table(remote)].into());
    config.insert("rn".into(), section.into());
    let path = rn_dir.join("single.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// A ranger node given a region's genesis other than the one the platform records for it — here
/// the directory region's, edited, which the second region's genesis anchors by hash — stops
/// at once, loudly, before serving anything (`node::relay`'s genesis check).
#[test]
fn an_rn_following_a_region_from_a_genesis_the_platform_does_not_record_stops() {
    let _turn = crate::processes_turn();
    let dir = tempfile::tempdir().unwrap();
    let base = 8_000 + ((std::process::id() + 6_000) % 12_000) as u16;
    init_two_regions(dir.path(), base, &[]);
    let path = dir.path().join("genesis.json");
    let mut genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let timestamp = genesis["timestamp_ms"]
        .as_u64()
        .expect("a genesis timestamp");
    genesis["timestamp_ms"] = serde_json::json!(timestamp + 1);
    std::fs::write(&path, serde_json::to_vec_pretty(&genesis).unwrap()).unwrap();

    // No CN runs: the check needs nothing but the two genesis files.
    let mut rn = KillOnDrop(vec![cluster::child_command(std::path::Path::new(KAON))
        .args(["--log", "warn", "--config"])
        .arg(dir.path().join("rn/config.toml"))
        .arg("rn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaon rn")]);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = rn.0[0].try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the RN kept running on a genesis the platform does not record"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(rn.0[0].stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.code(),
        Some(kaon::pipeline::EXIT_STAGE_DIED),
        "{stderr}"
    );
    assert!(
        stderr.contains("another platform's genesis file"),
        "{stderr}"
    );
}
