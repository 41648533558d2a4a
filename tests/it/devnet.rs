//! The devnet as a user runs it: real QUIC on 127.0.0.1, RocksDB and block logs on disk, the
//! load generator on. Stops itself once every CN has committed a few heights.

use kaon::node::devnet::{run, DevnetConfig};
use kaon::storage::blocklog::{BlockLog, BlockLogOptions};
use kaon::storage::store::Store;
use kaon::types::codec::decode_frame;
use kaon::types::Block;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn four_cns_commit_the_same_blocks_with_load_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevnetConfig {
        cns: 4,
        servicechains: 2,
        tps: 200,
        round_ms: 200,
        load_accounts: 8,
        datadir: Some(dir.path().to_path_buf()),
        until_height: Some(5),
        // A safety net, not the expected path: the run stops at height 5 long before this.
        duration: Some(Duration::from_secs(120)),
        rns: 2,
        rpc: Some("127.0.0.1:0".parse().unwrap()),
        ..DevnetConfig::default()
    };
    let mut out = Vec::new();
    let report = run(&config, Arc::new(AtomicBool::new(false)), &mut out).unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(
        report.min_height >= 5,
        "every CN must reach height 5: {report:?}\n{printed}"
    );
    assert!(
        report.chains_agree,
        "CNs disagree on a committed block\n{printed}"
    );
    assert!(
        report.committed_txs > 0,
        "the load generator's transfers must commit: {report:?}"
    );
    assert!(
        report.finality_p50_ms.is_some(),
        "finality must be measured: {report:?}"
    );
    assert_eq!(
        report.misbehavior, 0,
        "honest CNs must not report misbehaviour"
    );
    assert!(printed.contains("summary: heights"), "{printed}");
    // What a DApp developer needs is printed: RPC URLs per chain and the mnemonic's accounts.
    assert!(printed.contains("/chain/1001"), "{printed}");
    assert!(
        printed.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        "{printed}"
    );
    // The operator's view agrees with the report.
    for cn in 0..4 {
        let height = format!("kaon_height{{cn=\"{cn}\"}} ");
        assert!(
            report.metrics.contains(&height),
            "no {height} in\n{}",
            report.metrics
        );
    }
    assert!(report
        .metrics
        .contains("# TYPE kaon_committed_txs_total counter"));
    assert!(report
        .metrics
        .contains("kaon_consensus_refused_total{cn=\"0\",reason=\"bad_vote\"} 0"));
    assert!(report
        .metrics
        .contains("kaon_link_depth{cn=\"0\",link=\"ingress_sigverify\"}"));
    assert!(report.metrics.contains(&format!(
        "kaon_committed_txs_total{{cn=\"0\"}} {}",
        report.committed_txs
    )));
    // The EIP-2159 names, read from the same counters: the committed height is one below the
    // height being decided, and every CN is linked to the three others.
    let value = |series: &str| -> f64 {
        let line = report
            .metrics
            .lines()
            .find(|l| l.starts_with(&format!("{series} ")))
            .unwrap_or_else(|| panic!("no {series} in\n{}", report.metrics));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for cn in 0..4 {
        let label = format!("{{cn=\"{cn}\"}}");
        assert_eq!(
            value(&format!("ethereum_blockchain_height{label}")),
            value(&format!("kaon_height{label}")) - 1.0
        );
        assert_eq!(
            value(&format!("ethereum_best_known_block_number{label}")),
            value(&format!("ethereum_blockchain_height{label}"))
        );
        assert_eq!(value(&format!("kaon_net_cn_peers{label}")), 3.0);
        assert!(value(&format!("ethereum_peer_count{label}")) >= 3.0);
    }
    // Every CN persisted a linked chain in its block log, indexed in RocksDB.
    for cn in 0..4 {
        let cn_dir = dir.path().join(format!("cn{cn}"));
        let (log, _) =
            BlockLog::open(cn_dir.join("blocks.log"), BlockLogOptions::default()).unwrap();
        let store = Store::open(cn_dir.join("db")).unwrap();
        let mut parent = None;
        let mut count = 0u64;
        for record in log.iter() {
            let (offset, frame) = record.unwrap();
            let block: Block = decode_frame(&frame).unwrap();
            let height = block.header().height.0;
            count += 1;
            assert_eq!(height, count, "CN {cn}: heights are consecutive from 1");
            if let Some(parent) = parent {
                assert_eq!(
                    block.header().parent,
                    parent,
                    "CN {cn}: block {height} links to its parent"
                );
            }
            assert_eq!(
                store.log_offset(height).unwrap(),
                Some(offset.0),
                "CN {cn}: height index"
            );
            assert!(
                block.sealed.seal.signers.count() >= 3,
                "CN {cn}: sealed by a quorum"
            );
            parent = Some(block.hash());
        }
        assert!(count >= 5, "CN {cn} persisted {count} blocks");
        assert_eq!(store.head().unwrap().map(|h| h.height), Some(count));
        assert!(cn_dir.join("consensus.wal").exists());
    }
}
