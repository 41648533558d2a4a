//! `kaon bench consensus` as a benchmarker runs it: the binary, four CNs over QUIC on
//! 127.0.0.1, both vote patterns. Below saturation every payload a client offered is committed
//! exactly once, and the last line says so.

const KAON: &str = env!("CARGO_BIN_EXE_kaon");

/// The number written just before `label` in `line` ("… 12 blocks, 0 uncommitted …").
fn count_before(line: &str, label: &str) -> u64 {
    let head = line
        .split(label)
        .next()
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
    let number = head
        .trim_end()
        .rsplit([' ', ','])
        .next()
        .unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no count before {label:?} in {line:?}"))
}

/// One `kaon bench consensus` run at 500 payloads/s for 2 s; its last line.
fn bench_line(extra: &[&str]) -> String {
    let out = std::process::Command::new(KAON)
        .args(["bench", "consensus", "--nodes", "4", "--tx-size", "512"])
        .args(["--rate", "500", "--duration", "2"])
        .args(extra)
        .output()
        .expect("kaon runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{extra:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("consensus bench: 4 nodes, 512-byte payloads"),
        "{last}"
    );
    last
}

/// Every payload sent was committed once, in some blocks, at a nonzero rate.
fn assert_all_committed_once(last: &str) {
    assert!(count_before(last, " blocks") > 0, "{last}");
    let committed: f64 = last
        .split("committed ")
        .nth(1)
        .and_then(|rest| rest.split("/s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no committed rate in {last:?}"));
    assert!(committed > 0.0, "nothing committed: {last}");
    assert_eq!(count_before(last, " uncommitted"), 0, "{last}");
    assert_eq!(count_before(last, " duplicates"), 0, "{last}");
}

#[test]
fn consensus_bench_commits_every_offered_payload_once_with_either_vote_pattern() {
    let _turn = crate::processes_turn();
    for votes in ["leader", "all-to-all"] {
        let last = bench_line(&["--votes", votes]);
        assert!(last.contains("compact proposals"), "{last}");
        assert_all_committed_once(&last);
    }
    let last = bench_line(&["--full-proposals"]);
    assert!(last.contains("full proposals, 0 asked in full"), "{last}");
    assert_all_committed_once(&last);
}

/// Without gossip no CN holds the payloads another proposes: every compact proposal is asked
/// of its proposer in full over QUIC, and every payload still commits exactly once.
#[test]
fn compact_proposals_a_cn_cannot_fill_are_asked_of_their_proposer_in_full() {
    let _turn = crate::processes_turn();
    let last = bench_line(&["--no-gossip"]);
    assert!(last.contains("compact proposals"), "{last}");
    assert!(count_before(&last, " asked in full") > 0, "{last}");
    assert_all_committed_once(&last);
}
