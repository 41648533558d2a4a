//! `kaon region move`: moves a servicechain to another region (`docs/regions.md`,
//! "Migration").
//!
//! From the source region's `genesis.json` (its CN set approves) and the keys of more than two
//! thirds of its CNs, it builds the `MoveServicechain` order, checks it as the regionchain
//! will, and sends it to an RN of the source region; it then waits until that RN serves the
//! adoption (`kaon_getAdoption`: the freezing block's sealed header, the record it commits and
//! the chain's state) and sends it to the target region, whose regionchain checks all of it
//! against the CN set it trusts for the source before the chain starts there.

use super::miner::RnClient;
use super::region_create::{check_approval_line, index_in};
use crate::chain::genesis::Genesis;
use crate::chain::migration::{move_message, MoveOrder};
use crate::consensus::governance::combine_approvals;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::SecretKey;
use crate::types::ChainId;
use alloy_primitives::hex;
use anyhow::Context;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to move where, approved by whom, through which endpoints.
#[derive(Debug, Clone)]
pub struct MoveRequest {
    /// The source region's genesis (its CN set approves the move).
    pub genesis: PathBuf,
    pub chain: ChainId,
    pub target: ChainId,
    /// Secret keys of approving CNs of the source region; with `approvals`, more than two
    /// thirds of its set.
    pub key_files: Vec<PathBuf>,
    /// Approvals signed one by one ([`approve`]), as `<index>:0x<signature>`.
    pub approvals: Vec<String>,
    /// JSON-RPC endpoint (`http://host:port`) of an RN of the source region.
    pub rpc: String,
    /// JSON-RPC endpoint of an RN of the target region (default: `rpc`).
    pub target_rpc: Option<String>,
    /// How long to wait for the source to freeze the chain.
    pub timeout: Duration,
}

/// The order `request` describes, signed by its keys and checked against the source
/// region's genesis CN set.
pub fn build(request: &MoveRequest) -> anyhow::Result<MoveOrder> {
    let (region, set) = source_set(&request.genesis)?;
    anyhow::ensure!(
        !request.key_files.is_empty() || !request.approvals.is_empty(),
        "no approvals: give the approving CNs' --key-file or their --approval lines (kaon region approve-move)"
    );
    let message = move_message(region, set.root(), request.chain, request.target);
    let mut signed = request
        .key_files
        .iter()
        .map(|path| {
            let key = read_key(path)?;
            let index =
                index_in(&set, region, &key).with_context(|| format!("{}", path.display()))?;
            Ok((index, key.sign(&message)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expected = format!(
        "moving chain {} to region {}: it was made for another move or with another key",
        request.chain, request.target
    );
    for line in &request.approvals {
        signed.push(check_approval_line(
            line, region, &set, &message, &expected,
        )?);
    }
    let (approvers, approval) = combine_approvals(&set, &signed)?;
    let order = MoveOrder {
        region,
        chain: request.chain,
        target: request.target,
        approvers,
        approval,
    };
    order
        .verify(region, &set)
        .context("the regionchain would refuse this move")?;
    Ok(order)
}

/// One CN operator's approval of moving `chain` to `target`, signed with the key in
/// `key_file` where it lives: the line `kaon region move --approval` takes. What is signed
/// is written to `shown` first.
pub fn approve(
    genesis: &Path,
    chain: ChainId,
    target: ChainId,
    key_file: &Path,
    shown: &mut dyn std::io::Write,
) -> anyhow::Result<String> {
    let (region, set) = source_set(genesis)?;
    let key = read_key(key_file)?;
    let index = index_in(&set, region, &key).with_context(|| format!("{}", key_file.display()))?;
    writeln!(
        shown,
        "approving, as CN {} of region {region} (CN set {}): moving chain {chain} to region {target}",
        index.0,
        set.root()
    )?;
    let signature = key
        .sign(&move_message(region, set.root(), chain, target))
        .to_bytes();
    Ok(format!("{}:0x{}", index.0, hex::encode(signature.0)))
}

/// The source region's id and CN set, from its genesis.
fn source_set(genesis: &Path) -> anyhow::Result<(ChainId, CnSet)> {
    let loaded = Genesis::load(genesis)?;
    let set = loaded
        .cn_set()
        .with_context(|| format!("the CN set of {}", genesis.display()))?;
    Ok((ChainId(loaded.region), set))
}

fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    super::cn::read_key(path).with_context(|| format!("reading {}", path.display()))
}

/// Sends the order, waits for the adoption and sends it to the target; what it does is
/// written to `out`.
pub fn run(request: &MoveRequest, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let order = build(request)?;
    let endpoint =
        |base: &str, chain: ChainId| format!("{}/chain/{chain}", base.trim_end_matches('/'));
    let source = RnClient::new(&endpoint(&request.rpc, order.chain));
    // Run again after an interrupted delivery, the chain is frozen already: deliver only.
    if source.call("kaon_getAdoption", json!([]))?.is_null() {
        let raw = format!("0x{}", hex::encode(order.to_system_tx()));
        RnClient::new(&endpoint(&request.rpc, order.region))
            .call("kaon_sendSystemTransaction", json!([raw]))?;
        writeln!(
            out,
            "move of chain {} to region {} sent to region {}; waiting for the freeze",
            order.chain, order.target, order.region
        )?;
    }
    let started = Instant::now();
    let moved: Value = loop {
        let moved = source.call("kaon_getAdoption", json!([]))?;
        if !moved.is_null() {
            break moved;
        }
        anyhow::ensure!(
            started.elapsed() < request.timeout,
            "region {} did not freeze chain {} within {:?} (look at the order's refusal in the RN's log)",
            order.region,
            order.chain,
            request.timeout
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    writeln!(out, "frozen: {}", moved["record"])?;
    let target_rpc = request.target_rpc.as_deref().unwrap_or(&request.rpc);
    let target = RnClient::new(&endpoint(target_rpc, order.target));
    let remaining = request.timeout.saturating_sub(started.elapsed());
    let chunks = deliver(&source, &moved, &target, order.chain, remaining)?;
    writeln!(
        out,
        "chain {} adopted by region {} ({chunks} chunk(s) of state); it is served there",
        order.chain, order.target
    )?;
    Ok(())
}

/// How often [`deliver`] looks whether the target took the whole state, sending again what
/// it has not taken.
const DELIVERY_ROUND: Duration = Duration::from_millis(500);

/// Sends a frozen chain's adoption (`moved`, `kaon_getAdoption` of the `source` endpoint) and
/// every further chunk of its state to the `target` region's endpoint, until the target
/// serves `chain` or `within` passes; returns how many chunks the state had. What the target
/// refuses for now (a chunk before its adoption, a full block or queue) or may have lost (a
/// restarted CN's queue) is sent again each round; what it holds already is not.
pub fn deliver(
    source: &RnClient,
    moved: &Value,
    target: &RnClient,
    chain: ChainId,
    within: Duration,
) -> anyhow::Result<u64> {
    let adoption = moved["adoption"]
        .as_str()
        .context("kaon_getAdoption answered no adoption")?;
    let chunks = moved["chunks"].as_u64().unwrap_or(1);
    let mut waiting = std::iter::once(Ok((0, adoption.to_owned())))
        .chain((1..chunks).map(|i| {
            let part = source.call("kaon_getAdoption", json!([i]))?;
            let raw = part["chunk"].as_str().context("no chunk in the answer")?;
            Ok((i, raw.to_owned()))
        }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    loop {
        if serves(target, chain)? {
            return Ok(chunks);
        }
        // Sent again each round until the target holds it: the adoption too (an open one is
        // "already held"), should a CN restart before taking it.
        waiting.retain(|(_, raw)| {
            let sent = target.call("kaon_sendSystemTransaction", json!([raw]));
            !sent.is_err_and(|e| {
                let e = e.to_string();
                e.contains("already in") || e.contains("already held")
            })
        });
        anyhow::ensure!(
            started.elapsed() < within,
            "region did not adopt chain {chain} within {within:?}: {} of {} chunks not taken (look at the refusals in the target RN's log)",
            waiting.len(),
            chunks
        );
        std::thread::sleep(DELIVERY_ROUND);
    }
}

/// Whether the region behind `target` lists `chain` among its servicechains.
/// Whether the regionchain endpoint `target` lists `chain` among its servicechains.
pub(crate) fn serves(target: &RnClient, chain: ChainId) -> anyhow::Result<bool> {
    let listed = target.call("kaon_servicechains", json!([]))?;
    Ok(listed["servicechains"]
        .as_array()
        .is_some_and(|chains| chains.iter().any(|c| c["chainId"] == json!(chain.0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::region_create::tests::{keys, region};

    #[test]
    fn a_move_is_signed_by_keys_of_the_genesis_set_and_a_foreign_or_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (genesis_path, key_files) = region(dir.path(), 1000, &keys("source"));
        let request = |files: &[PathBuf]| MoveRequest {
            genesis: genesis_path.clone(),
            chain: ChainId(1001),
            target: ChainId(1_001_000),
            key_files: files.to_vec(),
            approvals: Vec::new(),
            rpc: "http://127.0.0.1:1".into(),
            target_rpc: None,
            timeout: Duration::from_secs(1),
        };
        let order = build(&request(&key_files[..3])).unwrap();
        assert_eq!(order.approvers.count(), 3);
        let short = build(&request(&key_files[..2])).unwrap_err();
        assert!(format!("{short:#}").contains("refuse"), "{short:#}");
        let (_, strangers) = region(&dir.path().join("other"), 2_000_000, &keys("other"));
        let foreign = build(&request(&strangers[..1])).unwrap_err();
        assert!(
            format!("{foreign:#}").contains("is not a key"),
            "{foreign:#}"
        );
        // Approvals signed one by one combine with key files; one for another move is named.
        let line = |file: &PathBuf, target: u64| {
            approve(
                &genesis_path,
                ChainId(1001),
                ChainId(target),
                file,
                &mut Vec::new(),
            )
            .unwrap()
        };
        let mut mixed = request(&key_files[..1]);
        mixed.approvals = vec![
            line(&key_files[1], 1_001_000),
            line(&key_files[2], 1_001_000),
        ];
        assert_eq!(build(&mixed).unwrap(), order);
        mixed.approvals[1] = line(&key_files[2], 3_000_000);
        let wrong = build(&mixed).unwrap_err();
        assert!(format!("{wrong:#}").contains("another move"), "{wrong:#}");
    }
}
