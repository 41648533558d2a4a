//! `kaon region create`: records a new region in the first region's directory
//! ([`crate::chain::directory`]).
//!
//! From the first region's `genesis.json` (its CN set approves), the new region's
//! `genesis.json` (its id, genesis hash and CN set) and the key files of the approving CNs, it
//! builds the `CreateRegion` system transaction, checks it as the regionchain will (quorum,
//! approval, id span), and either prints it or sends it to an RN of the first region with
//! `kaon_sendSystemTransaction`, which executes it against the regionchain state first and
//! answers a refusal (an id span already taken, …) with its reason.

use super::miner::RnClient;
use crate::chain::directory::{approve_creation, RegionCreation, RegionEntry};
use crate::chain::genesis::Genesis;
use crate::crypto::bls::SecretKey;
use crate::types::{ChainId, CnIndex};
use alloy_primitives::hex;
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;

/// What to create, approved by whom, sent where.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The first region's genesis: the directory lives on its regionchain.
    pub directory_genesis: PathBuf,
    /// The new region's genesis.
    pub genesis: PathBuf,
    /// Secret keys of approving CNs of the first region (more than two thirds of its set).
    pub key_files: Vec<PathBuf>,
    /// Addresses (`host:port`) of RNs that serve the new region.
    pub rn_seeds: Vec<String>,
    /// The first region's regionchain endpoint on an RN; `None` prints the transaction.
    pub rpc: Option<String>,
}

/// The creation `request` describes, approved by its keys and checked as the directory's
/// regionchain checks it (against its genesis CN set; regions already listed are checked
/// on-chain).
pub fn build(request: &CreateRequest) -> anyhow::Result<RegionCreation> {
    let directory = Genesis::load(&request.directory_genesis)?;
    let new = Genesis::load(&request.genesis)?;
    let here = ChainId(directory.region);
    let set = directory
        .cn_set()
        .with_context(|| format!("the CN set of {}", request.directory_genesis.display()))?;
    let keys = request
        .key_files
        .iter()
        .map(|path| {
            super::cn::read_key(path).with_context(|| format!("reading {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<SecretKey>>>()?;
    let approvers = keys
        .iter()
        .zip(&request.key_files)
        .map(|(key, path)| {
            let public = key.public_key();
            let index = set
                .keys()
                .iter()
                .position(|k| *k == public)
                .with_context(|| {
                    format!("{} is not a key of region {here}'s CN set", path.display())
                })?;
            Ok((CnIndex(index as u32), key))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let entry = RegionEntry {
        region: ChainId(new.region),
        genesis_hash: new.hash().0,
        cn_set_root: new
            .cn_set()
            .with_context(|| format!("the CN set of {}", request.genesis.display()))?
            .root(),
        rn_seeds: request.rn_seeds.clone(),
    };
    let creation = approve_creation(here, &set, entry, &approvers)?;
    creation
        .verify(here, &set, [here])
        .context("the regionchain would refuse this creation")?;
    Ok(creation)
}

/// Builds the creation and sends it (its hash), or prints it when no endpoint is given.
pub fn create(request: &CreateRequest, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let creation = build(request)?;
    let raw = format!("0x{}", hex::encode(creation.to_system_tx()));
    let Some(rpc) = &request.rpc else {
        writeln!(out, "{raw}")?;
        return Ok(());
    };
    let answer = RnClient::new(rpc).call("kaon_sendSystemTransaction", json!([raw]))?;
    writeln!(
        out,
        "region {} sent to region {}'s directory: {answer}",
        creation.entry.region, creation.directory
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::directory::REGION_ID_SPAN;
    use crate::crypto::hash::sha256;
    use alloy_primitives::U256;

    fn keys(tag: &str) -> Vec<SecretKey> {
        (0..4)
            .map(|i| SecretKey::from_seed(sha256(format!("{tag}-{i}").as_bytes()).as_slice()))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A region's genesis.json and its CNs' key files in `dir`.
    fn region(dir: &std::path::Path, region: u64, keys: &[SecretKey]) -> (PathBuf, Vec<PathBuf>) {
        std::fs::create_dir_all(dir).unwrap();
        let genesis = Genesis::new(ChainId(region), keys, 1, &[], U256::ZERO, 1000, 4);
        let path = dir.join("genesis.json");
        genesis.save(&path).unwrap();
        let files = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let file = dir.join(format!("cn{i}.key"));
                crate::node::keyfile::write_secret(&file, &hex::encode(key.to_bytes())).unwrap();
                file
            })
            .collect();
        (path, files)
    }

    #[test]
    fn a_creation_from_files_verifies_and_short_foreign_or_overlapping_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_keys) = region(&dir.path().join("first"), 1000, &keys("first"));
        let next = 1000 + REGION_ID_SPAN;
        let (second, second_keys) = region(&dir.path().join("second"), next, &keys("second"));
        let request = |genesis: &PathBuf, key_files: &[PathBuf]| CreateRequest {
            directory_genesis: first.clone(),
            genesis: genesis.clone(),
            key_files: key_files.to_vec(),
            rn_seeds: vec!["127.0.0.1:30400".into()],
            rpc: None,
        };

        let creation = build(&request(&second, &first_keys[..3])).unwrap();
        let new = Genesis::load(&second).unwrap();
        assert_eq!(creation.entry.region, ChainId(next));
        assert_eq!(creation.entry.genesis_hash, new.hash().0);
        assert_eq!(creation.entry.cn_set_root, new.cn_set().unwrap().root());
        let mut printed = Vec::new();
        create(&request(&second, &first_keys[..3]), &mut printed).unwrap();
        let printed = String::from_utf8(printed).unwrap();
        let raw = hex::decode(printed.trim()).unwrap();
        assert_eq!(RegionCreation::from_system_tx(&raw).unwrap(), creation);

        let error = |r: CreateRequest| format!("{:#}", build(&r).unwrap_err());
        let short = error(request(&second, &first_keys[..2]));
        assert!(short.contains("2 approvals"), "{short}");
        let foreign = error(request(&second, &second_keys[..3]));
        assert!(foreign.contains("is not a key of region 1000"), "{foreign}");
        let (overlapping, _) = region(&dir.path().join("third"), 1500, &keys("third"));
        let overlap = error(request(&overlapping, &first_keys[..3]));
        assert!(overlap.contains("overlap"), "{overlap}");
    }
}
