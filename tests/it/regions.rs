//! Regions (issue 15), as a devnet user meets them: `kaon devnet --regions 2` runs two
//! independent regions (their own CN sets, RNs and regionchains 1000 and 1001000, servicechains
//! numbered after each) behind one JSON-RPC endpoint that answers each chain from the region
//! that holds it; the first region's directory records the second and its checkpointed
//! headers, the second's regionchain the first's headers, and a creation without a quorum of
//! the first region's CNs, or whose ids overlap a listed region's, is refused.

use crate::burst::{raw_hex, transfer_on, Client, Devnet};
use crate::rpc::{ws_connect, ws_next, ws_send};
use alloy_primitives::{hex, Address, B256, U256};
use kaon::chain::directory::{approve_creation, RegionEntry, REGION_ID_SPAN};
use kaon::chain::region_checkpoint::RegionCheckpoint;
use kaon::chain::servicechain::{GenesisAlloc, Registration, ServicechainSpec};
use kaon::consensus::certificate::aggregate_commit_votes;
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::node::accounts::{developer_accounts, DEV_ACCOUNTS};
use kaon::node::devnet::{devnet_cn_key, DevnetConfig, DEV_BALANCE_WEI};
use kaon::types::block::HEADER_VERSION;
use kaon::types::{
    BlockHash, ChainId, CnIndex, Header, Height, Round, SealedHeader, Vote, VoteKind,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The second region's id, one span after the first's.
const SECOND_REGION: u64 = 1000 + REGION_ID_SPAN;
const SECOND_REGION_CHAIN: ChainId = ChainId(SECOND_REGION + 1);
/// A region created over JSON-RPC in the test.
const THIRD_REGION: u64 = 1000 + 2 * REGION_ID_SPAN;
const RECIPIENT: Address = Address::repeat_byte(0xc3);
/// Longest a transfer may take to be included: a safety net for a loaded 2-core machine.
const INCLUSION: Duration = Duration::from_secs(120);

/// The endpoint of `chain` next to `url` (which names another chain).
fn chain_url(url: &str, chain: u64) -> String {
    let base = &url[..url.rfind("/chain/").unwrap()];
    format!("{base}/chain/{chain}")
}

/// Subscribes to `newHeads` on the second region's chain over WebSocket: each head pushed must be the block
/// `eth_getBlockByNumber` answers there, its number one more than the last (one server serves
/// both regions, and each region's heads go to its own chains' subscribers only).
fn second_region_heads_only(url: &str, second: &Client) {
    let address: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let heads: Vec<Value> = rt.block_on(async {
        let path = format!("/chain/{SECOND_REGION_CHAIN}");
        let mut ws = ws_connect(address, &path).await;
        ws_send(&mut ws, 1, "eth_subscribe", json!(["newHeads"])).await;
        let subscribed = ws_next(&mut ws).await;
        assert!(subscribed["result"].is_string(), "{subscribed}");
        let mut heads = Vec::new();
        while heads.len() < 6 {
            heads.push(ws_next(&mut ws).await["params"]["result"].clone());
        }
        heads
    });
    let number = |head: &Value| {
        u64::from_str_radix(
            head["number"].as_str().unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap()
    };
    let numbers: Vec<u64> = heads.iter().map(number).collect();
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "heads pushed: {numbers:?}");
    }
    for head in &heads {
        let block = second.ok("eth_getBlockByNumber", json!([head["number"], false]));
        assert_eq!(block["hash"], head["hash"], "{head}");
    }
}

/// The first region's directory once it lists `n` regions.
fn wait_for_directory(client: &Client, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let regions = client.ok("kaon_regions", json!([]));
        let directory = regions[0]["directory"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if directory.len() >= n {
            return directory;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "the directory lists {} regions, not {n}: {regions}",
            directory.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The second region's checkpoint in the first region's directory once its height is at
/// least `height`.
fn wait_for_checkpoint(client: &Client, height: u64) -> Value {
    let started = Instant::now();
    loop {
        let regions = client.ok("kaon_regions", json!([]));
        let recorded = regions[0]["directory"][0]["checkpoint"].clone();
        if recorded["height"].as_u64().is_some_and(|at| at >= height) {
            return recorded;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "no checkpoint of the second region at height {height} or above: {regions}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A checkpoint of `region`'s header at a height above any it reached, sealed by four keys of
/// a forger's own (a quorum of the set the header names), as `kaon_sendSystemTransaction`
/// takes it.
fn forged_checkpoint(region: ChainId) -> String {
    let keys: Vec<SecretKey> = (0..4u8)
        .map(|i| SecretKey::from_seed(&[i + 40; 32]).unwrap())
        .collect();
    let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    let header = Header {
        version: HEADER_VERSION,
        region,
        height: Height(1 << 40),
        round: Round(0),
        parent: BlockHash(B256::ZERO),
        timestamp_ms: 0,
        proposer: CnIndex(0),
        random_reveal: keys[0].sign(b"reveal").to_bytes(),
        mix: B256::ZERO,
        cn_set_root: set.root(),
        next_cn_set: Vec::new(),
        segments: Vec::new(),
    };
    let committee = set.whole_committee(header.height, Round(0));
    let message = Vote::signing_message(VoteKind::Commit, header.height, Round(0), header.hash());
    let votes: Vec<_> = committee
        .members
        .iter()
        .map(|&cn| (cn, keys[cn.0 as usize].sign(&message)))
        .collect();
    let seal = aggregate_commit_votes(&committee, &votes).unwrap();
    let checkpoint = RegionCheckpoint {
        directory: ChainId(1000),
        sealed: SealedHeader { header, seal },
        cn_set: keys.iter().map(|k| k.public_key().to_bytes()).collect(),
        listing: None,
    };
    format!("0x{}", hex::encode(checkpoint.to_system_tx()))
}

fn balance(client: &Client, who: Address) -> U256 {
    client.quantity("eth_getBalance", json!([who, "latest"]))
}

#[test]
fn two_regions_run_side_by_side_behind_one_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with(DevnetConfig {
        regions: 2,
        ..Devnet::config(dir.path())
    });
    let url = devnet.url();
    let first = Client::new(url.clone());
    let second = Client::new(chain_url(&url, SECOND_REGION_CHAIN.0));

    // Each chain answers with its own id, from its own region.
    assert_eq!(first.ok("eth_chainId", json!([])), json!("0x3e9"));
    assert_eq!(
        second.ok("eth_chainId", json!([])),
        json!(format!("{:#x}", SECOND_REGION_CHAIN.0))
    );
    let regions = Client::new(chain_url(&url, SECOND_REGION)).ok("kaon_regions", json!([]));
    let listed: Vec<(u64, Value)> = regions
        .as_array()
        .expect("kaon_regions answers a list")
        .iter()
        .map(|r| (r["region"].as_u64().unwrap(), r["servicechains"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1000, json!([1001])),
            (SECOND_REGION, json!([SECOND_REGION_CHAIN.0]))
        ],
        "{regions}"
    );
    let second_region =
        Client::new(chain_url(&url, SECOND_REGION)).ok("kaon_servicechains", json!([]));
    assert_eq!(
        second_region["region"],
        json!(SECOND_REGION),
        "{second_region}"
    );

    // A transfer on the second region's chain is included there and nowhere else.
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    let funded = U256::from(DEV_BALANCE_WEI);
    assert_eq!(balance(&second, sender.address), funded);
    let tx = transfer_on(SECOND_REGION_CHAIN, RECIPIENT, &sender.secret, 0, 777);
    assert_eq!(
        second.ok("eth_sendRawTransaction", json!([raw_hex(&tx)])),
        json!(tx.hash())
    );
    let receipt = second.receipt_within(tx.hash(), INCLUSION, "the transfer was not included");
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    assert_eq!(balance(&second, RECIPIENT), U256::from(777));
    assert_eq!(balance(&first, RECIPIENT), U256::ZERO);
    assert_eq!(balance(&first, sender.address), funded);
    assert!(
        first
            .ok("eth_getTransactionReceipt", json!([tx.hash()]))
            .is_null(),
        "the first region must not know the second's transaction"
    );

    // A transaction signed for one region's chain is refused on the other's endpoint.
    let wrong = transfer_on(ChainId(1001), RECIPIENT, &sender.secret, 0, 1);
    let refused = second.call("eth_sendRawTransaction", json!([raw_hex(&wrong)]));
    assert!(refused.get("error").is_some(), "{refused}");

    // The first region's directory records the second: its genesis (the parent of its block 1)
    // and its CN set, approved by the first region's CNs.
    let directory = wait_for_directory(&Client::new(chain_url(&url, 1000)), 1);
    let block1 = second.ok("eth_getBlockByNumber", json!(["0x1", false]));
    assert_eq!(
        directory[0]["region"],
        json!(SECOND_REGION),
        "{directory:?}"
    );
    assert_eq!(
        directory[0]["genesisHash"], block1["parentHash"],
        "{directory:?}"
    );

    // The second region's headers are checkpointed into the first region's regionchain (the
    // devnet relays them from the second region's RN): each recorded hash is the block the
    // second region's chain serves at that height, and the checkpoint moves on.
    let region_1000 = Client::new(chain_url(&url, 1000));
    let second_regionchain = Client::new(chain_url(&url, SECOND_REGION));
    let first = wait_for_checkpoint(&region_1000, 1);
    let later = wait_for_checkpoint(&region_1000, first["height"].as_u64().unwrap() + 1);
    for recorded in [first, later] {
        let at = recorded["height"].as_u64().unwrap();
        let block =
            second_regionchain.ok("eth_getBlockByNumber", json!([format!("{at:#x}"), false]));
        assert_eq!(recorded["hash"], block["hash"], "{recorded} {block}");
    }

    // A checkpoint of the second region sealed by a forger's own keys is refused over
    // JSON-RPC with the reason.
    let refused = region_1000.call(
        "kaon_sendSystemTransaction",
        json!([forged_checkpoint(ChainId(SECOND_REGION))]),
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the directory trusts"), "{refused}");

    // And the other way: the second region's genesis names the first as its directory
    // region, and its regionchain records the first region's headers.
    let summary = |k: usize| region_1000.ok("kaon_regions", json!([]))[k].clone();
    assert_eq!(summary(1)["directoryRegion"], json!(1000), "{}", summary(1));
    assert_eq!(summary(0)["directoryRegion"], Value::Null);
    let started = Instant::now();
    let recorded = loop {
        let checkpoints = summary(1)["checkpoints"].clone();
        if let Some(first) = checkpoints.as_array().and_then(|c| c.first()).cloned() {
            break first;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "the second region never checkpointed the first"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recorded["region"], json!(1000), "{recorded}");
    let block = region_1000.ok(
        "eth_getBlockByNumber",
        json!([
            format!("{:#x}", recorded["height"].as_u64().unwrap()),
            false
        ]),
    );
    assert_eq!(recorded["hash"], block["hash"], "{recorded} {block}");

    // A creation approved by too few of the first region's CNs is refused, with the reason;
    // one approved by three of four is recorded.
    let keys: Vec<SecretKey> = (0..4).map(devnet_cn_key).collect();
    let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    let create = |region: u64, approvers: usize| {
        let entry = RegionEntry {
            region: ChainId(region),
            genesis_hash: B256::repeat_byte(5),
            cn_set_root: B256::repeat_byte(6),
            rn_seeds: vec![],
        };
        let approvers: Vec<(CnIndex, &SecretKey)> = keys
            .iter()
            .take(approvers)
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        let creation = approve_creation(ChainId(1000), &set, entry, &approvers).unwrap();
        format!("0x{}", hex::encode(creation.to_system_tx()))
    };
    let refused = region_1000.call(
        "kaon_sendSystemTransaction",
        json!([create(THIRD_REGION, 2)]),
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2 approvals"), "{refused}");
    let overlapping = region_1000.call(
        "kaon_sendSystemTransaction",
        json!([create(SECOND_REGION + REGION_ID_SPAN / 2, 3)]),
    );
    let message = overlapping["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("overlap"), "{overlapping}");
    region_1000.ok(
        "kaon_sendSystemTransaction",
        json!([create(THIRD_REGION, 3)]),
    );
    let directory = wait_for_directory(&region_1000, 2);
    assert_eq!(directory[1]["region"], json!(THIRD_REGION), "{directory:?}");
    // The second region copies that directory from a checkpoint of the first region (the
    // relay attaches it, proven by the header's segment 0): the same entries, itself included.
    let started = Instant::now();
    let fields = |entries: &Value| -> Vec<Value> {
        let entries = entries.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .map(|e| json!([e["region"], e["genesisHash"], e["cnSetRoot"], e["rnSeeds"]]))
            .collect()
    };
    while fields(&summary(1)["directory"]) != fields(&json!(directory)) {
        assert!(
            started.elapsed() < INCLUSION,
            "the second region never copied the directory {directory:?}: {}",
            summary(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the directory region creates regions.
    let elsewhere = {
        let entry = RegionEntry {
            region: ChainId(THIRD_REGION + REGION_ID_SPAN),
            genesis_hash: B256::repeat_byte(5),
            cn_set_root: B256::repeat_byte(6),
            rn_seeds: vec![],
        };
        let approvers: Vec<(CnIndex, &SecretKey)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        let creation = approve_creation(ChainId(SECOND_REGION), &set, entry, &approvers).unwrap();
        format!("0x{}", hex::encode(creation.to_system_tx()))
    };
    let refused = region_2_call(&url, "kaon_sendSystemTransaction", json!([elsewhere]));
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not the directory region"), "{refused}");

    // A servicechain registered in the second region is served from it at once, under the
    // same endpoint; the first region may not register an id inside the second's.
    let registration = |region: u64, chain: u64| {
        let spec = ServicechainSpec {
            region: ChainId(region),
            chain_id: ChainId(chain),
            owner: sender.address,
            alloc: vec![GenesisAlloc {
                address: sender.address,
                balance: U256::from(5_000u64),
            }],
        };
        let signed = Registration::sign(spec, &sender.secret).unwrap();
        format!("0x{}", hex::encode(signed.to_system_tx()))
    };
    let region_2 = Client::new(chain_url(&url, SECOND_REGION));
    region_2.ok(
        "kaon_sendSystemTransaction",
        json!([registration(SECOND_REGION, SECOND_REGION + 5)]),
    );
    let intruder = region_1000.call(
        "kaon_sendSystemTransaction",
        json!([registration(1000, SECOND_REGION + 6)]),
    );
    let message = intruder["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not one of this region's servicechain ids"),
        "{intruder}"
    );
    let registered = Client::new(chain_url(&url, SECOND_REGION + 5));
    let started = Instant::now();
    loop {
        let answer = registered.post_status(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [sender.address, "latest"]}));
        if answer.0 == 200 {
            let value: Value = serde_json::from_str(&answer.1).unwrap();
            assert_eq!(value["result"], json!("0x1388"), "{value}");
            break;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "the registered chain never served: {}",
            answer.1
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A subscriber of the second region's chain hears that region's heads only.
    second_region_heads_only(&url, &second);

    // A chain no region holds is unknown.
    let unknown = Client::new(chain_url(&url, 3001));
    let answer = unknown
        .post_status(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}));
    assert_eq!(answer.0, 404, "{}", answer.1);
    assert!(answer.1.contains("unknown chain 3001"), "{}", answer.1);
}

/// `method` on the second region's regionchain.
fn region_2_call(url: &str, method: &str, params: Value) -> Value {
    Client::new(chain_url(url, SECOND_REGION)).call(method, params)
}

/// Polls `url`'s `kaon_regions` until region `at` has checkpointed a header of region `of`;
/// that record.
fn wait_for_peer_checkpoint(url: &str, at: u64, of: u64) -> Value {
    let client = Client::new(chain_url(url, at));
    let started = Instant::now();
    loop {
        let regions = client.ok("kaon_regions", json!([]));
        let summary = regions
            .as_array()
            .and_then(|all| all.iter().find(|r| r["region"] == json!(at)))
            .cloned()
            .unwrap_or_default();
        let recorded = summary["checkpoints"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["region"] == json!(of)))
            .cloned();
        if let Some(recorded) = recorded {
            return recorded;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "region {at} never checkpointed region {of}: {summary}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn regions_other_than_the_directory_region_checkpoint_each_other_directly() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with(DevnetConfig {
        regions: 3,
        servicechains: 1,
        relay_interval: Duration::from_secs(1),
        ..Devnet::config(dir.path())
    });
    let url = devnet.url();
    let regions = [1000, SECOND_REGION, 1000 + 2 * REGION_ID_SPAN];
    // Every region records every other one's headers, each recorded hash the other's block at
    // that height. The second and third regions' geneses name neither each other: each knows
    // the other from the directory it copied from the first region's checkpoints.
    for at in regions {
        for of in regions.into_iter().filter(|&of| of != at) {
            let recorded = wait_for_peer_checkpoint(&url, at, of);
            let height = recorded["height"].as_u64().unwrap();
            let block = Client::new(chain_url(&url, of)).ok(
                "eth_getBlockByNumber",
                json!([format!("{height:#x}"), false]),
            );
            assert_eq!(
                recorded["hash"], block["hash"],
                "{at} of {of}: {recorded} {block}"
            );
        }
    }

    // Knowing each other, the second region moves its servicechain to the third, as
    // `kaon region move` does it from the files the devnet wrote; the chain keeps its accounts
    // behind the same URL and goes on in the third region.
    let (second, third) = (regions[1], regions[2]);
    let moving = ChainId(second + 1);
    let chain = Client::new(chain_url(&url, moving.0));
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    let send = |nonce: u64, value: u64| {
        let tx = transfer_on(moving, RECIPIENT, &sender.secret, nonce, value);
        send_through_a_move(chain_url(&url, moving.0), vec![tx]);
    };
    send(0, 5);
    let source = dir.path().join(format!("region-{second}"));
    let request = kaon::node::region_move::MoveRequest {
        genesis: source.join("genesis.json"),
        chain: moving,
        target: ChainId(third),
        key_files: (0..3)
            .map(|i| source.join(format!("cn{i}/cn.key")))
            .collect(),
        approvals: Vec::new(),
        // The endpoint itself, not one chain's path on it.
        rpc: url.split("/chain/").next().unwrap().to_owned(),
        target_rpc: None,
        timeout: INCLUSION,
    };
    let mut out = Vec::new();
    kaon::node::region_move::run(&request, &mut out).unwrap();
    let summaries = Client::new(chain_url(&url, 1000)).ok("kaon_regions", json!([]));
    let summary = |region: u64| {
        summaries
            .as_array()
            .and_then(|all| all.iter().find(|r| r["region"] == json!(region)))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        summary(third)["servicechains"]
            .as_array()
            .is_some_and(|chains| chains.contains(&json!(moving.0))),
        "{summaries}"
    );
    assert_eq!(
        summary(second)["movedAway"][0]["target"],
        json!(third),
        "{summaries}"
    );
    send(1, 7);
    assert_eq!(chain.nonce(sender.address, "latest"), 2);
    assert_eq!(balance(&chain, RECIPIENT), U256::from(12));
}

/// Sends `txs` one after another on `url`'s chain as a wallet does: each until it is
/// accepted (a chain between its freeze and its adoption refuses writes, saying where it
/// moved), then until its receipt is readable, sending it again if a move dropped it
/// (`docs/regions.md`: the source drops what it had not included). Returns each hash.
fn send_through_a_move(url: String, txs: Vec<kaon::crypto::tx::SignedTransaction>) -> Vec<B256> {
    let client = Client::new(url);
    let mut hashes = Vec::new();
    for tx in txs {
        let started = Instant::now();
        'sent: loop {
            assert!(
                started.elapsed() < INCLUSION,
                "transfer {} never included",
                tx.hash()
            );
            let answer = client.call("eth_sendRawTransaction", json!([raw_hex(&tx)]));
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            let accepted = answer.get("result").is_some() || message.contains("already known");
            assert!(
                accepted
                    || message.contains("moved to region")
                    || message.contains("nonce too low"),
                "{answer}"
            );
            let asked = Instant::now();
            while accepted || message.contains("nonce too low") {
                let receipt = client.ok("eth_getTransactionReceipt", json!([tx.hash()]));
                if !receipt.is_null() {
                    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
                    break 'sent;
                }
                if asked.elapsed() > Duration::from_secs(5) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        hashes.push(tx.hash());
    }
    hashes
}

#[test]
fn a_busy_servicechain_moves_to_another_region_and_keeps_its_accounts_and_history() {
    use kaon::chain::migration::{Adoption, MoveOrder};
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with(DevnetConfig {
        regions: 2,
        ..Devnet::config(dir.path())
    });
    let url = devnet.url();
    let chain = Client::new(chain_url(&url, 1001));
    let region_1000 = Client::new(chain_url(&url, 1000));
    let second_regionchain = Client::new(chain_url(&url, SECOND_REGION));
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(1);
    const TRANSFERS: u64 = 24;
    let txs: Vec<_> = (0..TRANSFERS)
        .map(|nonce| transfer_on(ChainId(1001), RECIPIENT, &sender.secret, nonce, 1 + nonce))
        .collect();
    // A contract holding 42 in its storage slot 0, deployed before the move.
    let owner = developer_accounts(DEV_ACCOUNTS).swap_remove(3);
    let deploy = crate::history::sign(
        &owner.secret,
        0,
        alloy_primitives::TxKind::Create,
        0,
        crate::history::init_code(),
    );
    chain.ok("eth_sendRawTransaction", json!([raw_hex(&deploy)]));
    let deployed = chain.receipt_within(deploy.hash(), INCLUSION, "the contract was not deployed");
    let contract: Address = serde_json::from_value(deployed["contractAddress"].clone()).unwrap();
    let store = crate::history::sign(
        &owner.secret,
        1,
        alloy_primitives::TxKind::Call(contract),
        0,
        crate::history::word(42),
    );
    chain.ok("eth_sendRawTransaction", json!([raw_hex(&store)]));
    chain.receipt_within(store.hash(), INCLUSION, "the store was not included");
    // A contract that logs on every call, called once before the move (once after, below).
    let logger = owner_tx(
        &owner.secret,
        2,
        alloy_primitives::TxKind::Create,
        LOGGER_INIT,
    );
    chain.ok("eth_sendRawTransaction", json!([raw_hex(&logger)]));
    let logger = chain.receipt_within(logger.hash(), INCLUSION, "the logger was not deployed");
    let logger: Address = serde_json::from_value(logger["contractAddress"].clone()).unwrap();
    let log_call = |nonce| {
        owner_tx(
            &owner.secret,
            nonce,
            alloy_primitives::TxKind::Call(logger),
            "",
        )
    };
    let logged_before = log_call(3);
    chain.ok("eth_sendRawTransaction", json!([raw_hex(&logged_before)]));
    let logged_before = chain.receipt_within(logged_before.hash(), INCLUSION, "the first log");
    // A contract holding more state than one chunk carries: its creation writes slots 1 to
    // BIG_SLOTS (each holding its own number).
    let big = big_state_tx(&owner.secret, 4);
    chain.ok("eth_sendRawTransaction", json!([raw_hex(&big)]));
    let big = chain.receipt_within(big.hash(), INCLUSION, "the large state was not written");
    assert_eq!(big["status"], json!("0x1"), "{big}");
    let wallet = {
        let url = chain_url(&url, 1001);
        std::thread::spawn(move || send_through_a_move(url, txs))
    };
    // A few transfers in, the first region's CNs order the chain moved to the second region.
    let started = Instant::now();
    while chain.nonce(sender.address, "latest") < 4 {
        assert!(started.elapsed() < INCLUSION, "no transfer included");
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys: Vec<SecretKey> = (0..4).map(devnet_cn_key).collect();
    let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    let approvers: Vec<(CnIndex, &SecretKey)> = keys
        .iter()
        .enumerate()
        .take(3)
        .map(|(i, k)| (CnIndex(i as u32), k))
        .collect();
    let order = |target: u64| {
        let order = MoveOrder::approve(
            ChainId(1000),
            &set,
            ChainId(1001),
            ChainId(target),
            &approvers,
        )
        .unwrap();
        format!("0x{}", hex::encode(order.to_system_tx()))
    };
    // A transfer acknowledged but not includable before the move (its sender's nonce 0 is
    // still missing): the region the chain leaves must hand it on, not drop it.
    let late_sender = developer_accounts(DEV_ACCOUNTS).swap_remove(2);
    let gap = transfer_on(ChainId(1001), RECIPIENT, &late_sender.secret, 1, 1_000);
    assert_eq!(
        chain.ok("eth_sendRawTransaction", json!([raw_hex(&gap)])),
        json!(gap.hash())
    );
    // A move to a region the first does not know is refused with the reason.
    let refused = region_1000.call("kaon_sendSystemTransaction", json!([order(THIRD_REGION)]));
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not one this regionchain knows"),
        "{refused}"
    );
    // The real order as `kaon region move` builds it from the files the devnet wrote into its
    // datadir (the first region's genesis and CN keys, laid out as `kaon init` does).
    let request = kaon::node::region_move::MoveRequest {
        genesis: dir.path().join("genesis.json"),
        chain: ChainId(1001),
        target: ChainId(SECOND_REGION),
        key_files: (0..3)
            .map(|i| dir.path().join(format!("cn{i}/cn.key")))
            .collect(),
        approvals: Vec::new(),
        rpc: url.clone(),
        target_rpc: None,
        timeout: INCLUSION,
    };
    let built = kaon::node::region_move::build(&request).unwrap();
    assert_eq!(
        format!("0x{}", hex::encode(built.to_system_tx())),
        order(SECOND_REGION)
    );
    region_1000.ok("kaon_sendSystemTransaction", json!([order(SECOND_REGION)]));

    // The source froze it and serves the adoption; the record names the freezing block.
    let started = Instant::now();
    let moved = loop {
        let moved = chain.ok("kaon_getAdoption", json!([]));
        if !moved.is_null() {
            break moved;
        }
        assert!(started.elapsed() < INCLUSION, "the move was never executed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let record = &moved["record"];
    assert_eq!(record["target"], json!(SECOND_REGION), "{record}");
    let frozen_at = record["height"].as_u64().unwrap();
    // The chain's last block in the first region is the one before the freezing block.
    let frozen_nonce = {
        let at = format!("{:#x}", frozen_at - 1);
        chain.nonce(sender.address, &at)
    };

    // An adoption edited in transit is refused by the second region; the real one starts the
    // chain there.
    let adoption = moved["adoption"].as_str().unwrap().to_owned();
    let raw = hex::decode(adoption.trim_start_matches("0x")).unwrap();
    let mut forged = Adoption::from_system_tx(&raw).unwrap();
    let account = forged
        .snapshot
        .accounts
        .iter_mut()
        .find(|a| a.address == sender.address)
        .expect("the sender is in the moved state");
    account.balance += U256::from(1);
    let refused = second_regionchain.call(
        "kaon_sendSystemTransaction",
        json!([format!("0x{}", hex::encode(forged.to_system_tx()))]),
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("does not hash to the record"), "{refused}");
    // The real adoption and every further chunk of the state, as `kaon region move` sends
    // them.
    let chunks = kaon::node::region_move::deliver(
        &kaon::node::miner::RnClient::new(&chain_url(&url, 1001)),
        &moved,
        &kaon::node::miner::RnClient::new(&chain_url(&url, SECOND_REGION)),
        ChainId(1001),
        INCLUSION,
    )
    .unwrap();
    assert!(chunks >= 2, "the state should span chunks: {chunks}");

    // Every transfer, before and after the move, included exactly once: the nonce is the count
    // and the recipient holds the sum; each receipt is readable through the chain's one URL.
    let hashes = wallet.join().unwrap();
    assert!(
        frozen_nonce > 0 && frozen_nonce < TRANSFERS,
        "the move should fall amid the transfers: {frozen_nonce} of {TRANSFERS} before it"
    );
    assert_eq!(chain.nonce(sender.address, "latest"), TRANSFERS);
    let sum: u64 = (0..TRANSFERS).map(|n| 1 + n).sum();
    assert_eq!(balance(&chain, RECIPIENT), U256::from(sum));
    let funded = U256::from(DEV_BALANCE_WEI);
    assert!(balance(&chain, sender.address) < funded - U256::from(sum));
    for hash in &hashes {
        let receipt = chain.ok("eth_getTransactionReceipt", json!([hash]));
        assert_eq!(receipt["status"], json!("0x1"), "{hash}: {receipt}");
    }
    // Blocks before the move are still served by hash, from the region the chain left.
    let early = chain.ok("eth_getTransactionReceipt", json!([hashes[0]]));
    let block = chain.ok("eth_getBlockByHash", json!([early["blockHash"], false]));
    assert_eq!(block["hash"], early["blockHash"], "{block}");
    assert!(early["blockNumber"].as_str().is_some());
    // The contract moved with its code and storage: the new region runs it.
    let code = chain.ok("eth_getCode", json!([contract, "latest"]));
    assert_eq!(code, json!(format!("0x{}", crate::history::RUNTIME)));
    let slot = chain.ok("eth_getStorageAt", json!([contract, "0x0", "latest"]));
    let called = chain.ok("eth_call", json!([{ "to": contract }, "latest"]));
    assert_eq!(slot, called);
    assert_eq!(
        U256::from_be_slice(
            &hex::decode(called.as_str().unwrap().trim_start_matches("0x")).unwrap()
        ),
        U256::from(42)
    );
    // So did the large state: its slots read in the new region.
    let big_contract = &big["contractAddress"];
    for slot in [1, BIG_SLOTS / 2, BIG_SLOTS] {
        let at = format!("{slot:#x}");
        let value = chain.ok("eth_getStorageAt", json!([big_contract, at, "latest"]));
        assert_eq!(quantity_word(&value), slot, "slot {slot}");
    }
    // The second region lists it; the first refuses its transactions, naming where it went.
    let regions = region_1000.ok("kaon_regions", json!([]));
    assert_eq!(
        regions[0]["movedAway"],
        json!([{ "chain": 1001, "target": SECOND_REGION, "height": frozen_at }]),
        "{regions}"
    );
    assert_eq!(regions[1]["adopting"], json!([]), "{regions}");
    assert!(
        regions[1]["servicechains"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(1001))),
        "{regions}"
    );
    // The transfer that waited through the move is included in the new region once its
    // sender's missing nonce arrives there.
    let first = transfer_on(ChainId(1001), RECIPIENT, &late_sender.secret, 0, 1);
    let sent = chain.ok("eth_sendRawTransaction", json!([raw_hex(&first)]));
    assert_eq!(sent, json!(first.hash()));
    let receipt = chain.receipt_within(gap.hash(), INCLUSION, "the handed-on transfer");
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    let included_at = receipt["blockNumber"].as_str().unwrap();
    let included_at = u64::from_str_radix(included_at.trim_start_matches("0x"), 16).unwrap();
    let block = chain.ok("eth_getBlockByHash", json!([receipt["blockHash"], false]));
    assert_eq!(block["hash"], receipt["blockHash"], "{block}");
    assert_eq!(
        balance(&chain, RECIPIENT),
        U256::from(sum + 1_000 + 1),
        "included at {included_at}"
    );
    assert_eq!(chain.nonce(late_sender.address, "latest"), 2);

    // Block numbers go on from the freeze, and every block reads by number through the same
    // URL: before the move from the first region, after it from the second.
    let mut last = 0;
    for hash in &hashes {
        let receipt = chain.ok("eth_getTransactionReceipt", json!([hash]));
        let number = quantity(&receipt["blockNumber"]);
        assert!(
            number >= last,
            "{hash} in block {number} after block {last}"
        );
        last = number;
        let block = chain.ok(
            "eth_getBlockByNumber",
            json!([receipt["blockNumber"], false]),
        );
        assert_eq!(
            block["hash"], receipt["blockHash"],
            "block {number}: {block}"
        );
        assert!(block["transactions"]
            .as_array()
            .unwrap()
            .contains(&json!(hash)));
    }
    let first_number =
        quantity(&chain.ok("eth_getTransactionReceipt", json!([hashes[0]]))["blockNumber"]);
    assert!(
        first_number < frozen_at && last >= frozen_at,
        "{first_number}..{last} around {frozen_at}"
    );
    assert!(quantity(&chain.ok("eth_blockNumber", json!([]))) >= last);
    // The EVM's NUMBER is the chain's number too: in a call at the head (the next block's) …
    let head_before = quantity(&chain.ok("eth_blockNumber", json!([])));
    let called = chain.ok(
        "eth_call",
        json!([{ "data": "0x4360005260206000f3" }, "latest"]),
    );
    let head_after = quantity(&chain.ok("eth_blockNumber", json!([])));
    let called = U256::from_be_slice(
        &hex::decode(called.as_str().unwrap().trim_start_matches("0x")).unwrap(),
    );
    assert!(
        (U256::from(head_before + 1)..=U256::from(head_after + 1)).contains(&called),
        "NUMBER {called} in a call after head {head_before}..{head_after}"
    );
    // … and in a block: a contract whose creation stores NUMBER stores its receipt's number.
    let stamp = owner_tx(
        &owner.secret,
        6,
        alloy_primitives::TxKind::Create,
        "4360005500",
    );
    let logged_after = log_call(5);
    for tx in [&logged_after, &stamp] {
        chain.ok("eth_sendRawTransaction", json!([raw_hex(tx)]));
    }
    let stamp = chain.receipt_within(stamp.hash(), INCLUSION, "the number stamp");
    let stored = chain.ok(
        "eth_getStorageAt",
        json!([stamp["contractAddress"], "0x0", "latest"]),
    );
    assert_eq!(
        U256::from_be_slice(
            &hex::decode(stored.as_str().unwrap().trim_start_matches("0x")).unwrap()
        ),
        U256::from(quantity(&stamp["blockNumber"])),
        "{stamp}"
    );
    // Logs across the move come back from both regions in one query, numbered as their receipts.
    let logged_after = chain.receipt_within(logged_after.hash(), INCLUSION, "the second log");
    let logs = chain.ok(
        "eth_getLogs",
        json!([{ "fromBlock": "0x0", "toBlock": "latest", "address": logger }]),
    );
    let numbered: Vec<_> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["blockNumber"].clone(), l["blockHash"].clone()))
        .collect();
    let expected: Vec<_> = [&logged_before, &logged_after]
        .iter()
        .map(|r| (r["blockNumber"].clone(), r["blockHash"].clone()))
        .collect();
    assert_eq!(numbered, expected, "{logs}");
}

/// Slots the large state's contract writes: 252 KiB of state, more than one chunk.
const BIG_SLOTS: u64 = 3_000;

/// `owner`'s creation (nonce `nonce`) of a contract whose constructor writes slot `i` = `i`
/// for `i` from [`BIG_SLOTS`] down to 1: `PUSH2 n; JUMPDEST; DUP1; DUP1; SSTORE; PUSH1 1;
/// SWAP1; SUB; DUP1; PUSH1 3; JUMPI; STOP`.
fn big_state_tx(owner: &[u8; 32], nonce: u64) -> kaon::crypto::tx::SignedTransaction {
    use kaon::crypto::tx::{Eip1559Tx, Transaction};
    let init = format!("61{BIG_SLOTS:04x}5b808055600190038060035700");
    Transaction::from(Eip1559Tx {
        chain_id: ChainId(1001),
        nonce,
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 3_000_000_000,
        gas_limit: 70_000_000,
        to: alloy_primitives::TxKind::Create,
        value: U256::ZERO,
        input: hex::decode(init).unwrap().into(),
        access_list: Default::default(),
    })
    .sign(owner)
    .unwrap()
}

/// Init code of a contract whose every call logs (`LOG0` of nothing): returns the runtime
/// `PUSH1 0 PUSH1 0 LOG0 STOP`.
const LOGGER_INIT: &str = "6560006000a0006000526006601af3";

/// `owner`'s transaction `nonce` on chain 1001 carrying `input` (hex).
fn owner_tx(
    owner: &[u8; 32],
    nonce: u64,
    to: alloy_primitives::TxKind,
    input: &str,
) -> kaon::crypto::tx::SignedTransaction {
    crate::history::sign(owner, nonce, to, 0, hex::decode(input).unwrap().into())
}

/// A 32-byte storage word as a number (fits 64 bits).
fn quantity_word(value: &Value) -> u64 {
    let word = hex::decode(value.as_str().unwrap().trim_start_matches("0x")).unwrap();
    U256::from_be_slice(&word).to::<u64>()
}

/// A JSON-RPC quantity.
fn quantity(value: &Value) -> u64 {
    let hex = value
        .as_str()
        .unwrap_or_else(|| panic!("not a quantity: {value}"));
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}
