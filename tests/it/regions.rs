//! Regions (issue 15), as a devnet user meets them: `kaon devnet --regions 2` runs two
//! independent regions (their own CN sets, RNs and regionchains 1000 and 2000, servicechains
//! numbered after each) behind one JSON-RPC endpoint that answers each chain from the region
//! that holds it.

use crate::burst::{raw_hex, Client, Devnet};
use alloy_primitives::{Address, Bytes, U256};
use kaon::crypto::tx::{AccessList, Eip1559Tx, SignedTransaction, Transaction, TxKind};
use kaon::exec::{BASE_FEE_WEI, TRANSFER_GAS};
use kaon::node::accounts::{developer_accounts, DEV_ACCOUNTS};
use kaon::node::devnet::{DevnetConfig, DEV_BALANCE_WEI};
use kaon::types::ChainId;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SECOND_REGION_CHAIN: ChainId = ChainId(2001);
const RECIPIENT: Address = Address::repeat_byte(0xc3);
/// Longest a transfer may take to be included: a safety net for a loaded 2-core machine.
const INCLUSION: Duration = Duration::from_secs(120);

fn transfer_on(chain: ChainId, key: &[u8; 32], value: u64) -> SignedTransaction {
    Transaction::from(Eip1559Tx {
        chain_id: chain,
        nonce: 0,
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 3 * u128::from(BASE_FEE_WEI).max(1_000_000_000),
        gas_limit: TRANSFER_GAS,
        to: TxKind::Call(RECIPIENT),
        value: U256::from(value),
        input: Bytes::new(),
        access_list: AccessList::default(),
    })
    .sign(key)
    .unwrap()
}

/// The endpoint of `chain` next to `url` (which names another chain).
fn chain_url(url: &str, chain: u64) -> String {
    let base = &url[..url.rfind("/chain/").unwrap()];
    format!("{base}/chain/{chain}")
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
    assert_eq!(second.ok("eth_chainId", json!([])), json!("0x7d1"));
    let regions = Client::new(chain_url(&url, 2000)).ok("kaon_regions", json!([]));
    let listed: Vec<(u64, Value)> = regions
        .as_array()
        .expect("kaon_regions answers a list")
        .iter()
        .map(|r| (r["region"].as_u64().unwrap(), r["servicechains"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![(1000, json!([1001])), (2000, json!([2001]))],
        "{regions}"
    );
    let second_region = Client::new(chain_url(&url, 2000)).ok("kaon_servicechains", json!([]));
    assert_eq!(second_region["region"], json!(2000), "{second_region}");

    // A transfer on the second region's chain is included there and nowhere else.
    let sender = developer_accounts(DEV_ACCOUNTS).swap_remove(0);
    let funded = U256::from(DEV_BALANCE_WEI);
    assert_eq!(balance(&second, sender.address), funded);
    let tx = transfer_on(SECOND_REGION_CHAIN, &sender.secret, 777);
    assert_eq!(
        second.ok("eth_sendRawTransaction", json!([raw_hex(&tx)])),
        json!(tx.hash())
    );
    let started = Instant::now();
    let receipt = loop {
        let receipt = second.ok("eth_getTransactionReceipt", json!([tx.hash()]));
        if !receipt.is_null() {
            break receipt;
        }
        assert!(
            started.elapsed() < INCLUSION,
            "the transfer was not included"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let wrong = transfer_on(ChainId(1001), &sender.secret, 1);
    let refused = second.call("eth_sendRawTransaction", json!([raw_hex(&wrong)]));
    assert!(refused.get("error").is_some(), "{refused}");

    // A chain no region holds is unknown.
    let unknown = Client::new(chain_url(&url, 3001));
    let answer = unknown
        .post_status(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}));
    assert_eq!(answer.0, 404, "{}", answer.1);
    assert!(answer.1.contains("unknown chain 3001"), "{}", answer.1);
}
