//! `kaon region create`: records a new region in the first region's directory
//! ([`crate::chain::directory`]).
//!
//! From the first region's `genesis.json` (its CN set approves), the new region's
//! `genesis.json` (its id, genesis hash and CN set) and the approvals of more than two thirds
//! of the first region's CNs, it builds the `CreateRegion` system transaction, checks it as the
//! regionchain will (quorum, approval, id span), and either prints it or sends it to an RN of
//! the first region with `kaon_sendSystemTransaction`, which executes it against the
//! regionchain state first and answers a refusal (an id span already taken, …) with its
//! reason.
//!
//! Approvals come as key files, or one by one: `kaon region approve` signs the entry with one
//! CN's key on its operator's machine and prints `<index>:0x<signature>` (the key never leaves
//! it); `kaon region create --approval …` combines what the operators sent, each approval
//! checked on its own so a wrong one (another entry, another key) is named.

use super::miner::RnClient;
use crate::chain::directory::{creation_message, RegionCreation, RegionEntry};
use crate::chain::genesis::Genesis;
use crate::consensus::governance::combine_approvals;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{SecretKey, Signature, SignatureBytes};
use crate::types::{ChainId, CnIndex};
use alloy_primitives::hex;
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};

/// What to create, approved by whom, sent where.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The first region's genesis: the directory lives on its regionchain.
    pub directory_genesis: PathBuf,
    /// The new region's genesis.
    pub genesis: PathBuf,
    /// Secret keys of approving CNs of the first region; with `approvals`, more than two
    /// thirds of its set.
    pub key_files: Vec<PathBuf>,
    /// Approvals signed one by one ([`approve`]), as `<index>:0x<signature>`.
    pub approvals: Vec<String>,
    /// Addresses (`host:port`) of RNs that serve the new region.
    pub rn_seeds: Vec<String>,
    /// The first region's regionchain endpoint on an RN; `None` prints the transaction.
    pub rpc: Option<String>,
}

/// The creation `request` describes, approved by its keys and checked as the directory's
/// regionchain checks it (against its genesis CN set; regions already listed are checked
/// on-chain).
pub fn build(request: &CreateRequest) -> anyhow::Result<RegionCreation> {
    let proposal = Proposal::load(
        &request.directory_genesis,
        &request.genesis,
        &request.rn_seeds,
    )?;
    anyhow::ensure!(
        !request.key_files.is_empty() || !request.approvals.is_empty(),
        "no approvals: give the approving CNs' --key-file or their --approval lines (kaon region approve)"
    );
    let mut signed = request
        .key_files
        .iter()
        .map(|path| {
            let key =
                super::cn::read_key(path).with_context(|| format!("reading {}", path.display()))?;
            let index = proposal
                .index_of(&key)
                .with_context(|| format!("{}", path.display()))?;
            Ok((index, key.sign(&proposal.message)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for line in &request.approvals {
        signed.push(proposal.check_approval(line)?);
    }
    let (approvers, approval) = combine_approvals(&proposal.set, &signed)?;
    let creation = RegionCreation {
        directory: proposal.here,
        entry: proposal.entry,
        approvers,
        approval,
    };
    creation
        .verify(proposal.here, &proposal.set, [proposal.here])
        .context("the regionchain would refuse this creation")?;
    Ok(creation)
}

/// One CN's approval of the entry `directory_genesis`, `genesis` and `rn_seeds` describe,
/// signed with the key in `key_file`: the line `kaon region create --approval` takes. What is
/// signed is written to `shown` first, for the operator to read.
pub fn approve(
    directory_genesis: &Path,
    genesis: &Path,
    rn_seeds: &[String],
    key_file: &Path,
    shown: &mut dyn std::io::Write,
) -> anyhow::Result<String> {
    let proposal = Proposal::load(directory_genesis, genesis, rn_seeds)?;
    let key =
        super::cn::read_key(key_file).with_context(|| format!("reading {}", key_file.display()))?;
    let index = proposal
        .index_of(&key)
        .with_context(|| format!("{}", key_file.display()))?;
    writeln!(
        shown,
        "approving, as CN {} of region {} (CN set {}): region {} with genesis {}, CN set {}, RN seeds {:?}",
        index.0,
        proposal.here,
        proposal.set.root(),
        proposal.entry.region,
        proposal.entry.genesis_hash,
        proposal.entry.cn_set_root,
        proposal.entry.rn_seeds
    )?;
    let signature = key.sign(&proposal.message).to_bytes();
    Ok(format!("{}:0x{}", index.0, hex::encode(signature.0)))
}

/// The entry a creation records and the message its approvers sign.
struct Proposal {
    /// The directory's region and its CN set (from its genesis).
    here: ChainId,
    set: CnSet,
    entry: RegionEntry,
    message: Vec<u8>,
}

impl Proposal {
    fn load(directory_genesis: &Path, genesis: &Path, rn_seeds: &[String]) -> anyhow::Result<Self> {
        let directory = Genesis::load(directory_genesis)?;
        let new = Genesis::load(genesis)?;
        let here = ChainId(directory.region);
        let set = directory
            .cn_set()
            .with_context(|| format!("the CN set of {}", directory_genesis.display()))?;
        let entry = RegionEntry {
            region: ChainId(new.region),
            genesis_hash: new.hash().0,
            cn_set_root: new
                .cn_set()
                .with_context(|| format!("the CN set of {}", genesis.display()))?
                .root(),
            rn_seeds: rn_seeds.to_vec(),
        };
        let message = creation_message(here, set.root(), &entry);
        Ok(Self {
            here,
            set,
            entry,
            message,
        })
    }

    /// `key`'s index in the directory region's CN set.
    fn index_of(&self, key: &SecretKey) -> anyhow::Result<CnIndex> {
        index_in(&self.set, self.here, key)
    }

    /// Parses `<index>:0x<signature>` and checks it signs this entry with CN `index`'s key.
    fn check_approval(&self, line: &str) -> anyhow::Result<(CnIndex, Signature)> {
        check_approval_line(
            line,
            self.here,
            &self.set,
            &self.message,
            "this entry: it was made for another region entry (genesis, RN seeds) or with another key",
        )
    }
}

/// Parses an approval line `<index>:0x<signature>` and checks that it is CN `index`'s of
/// region `here` (set `set`) over `message`; `what` names what was expected in the error.
pub(crate) fn check_approval_line(
    line: &str,
    here: ChainId,
    set: &CnSet,
    message: &[u8],
    what: &str,
) -> anyhow::Result<(CnIndex, Signature)> {
    let malformed = || format!("approval {line:?} is not <index>:0x<signature>");
    let (index, signature) = line.trim().split_once(':').with_context(malformed)?;
    let index: u32 = index.parse().ok().with_context(malformed)?;
    let bytes = hex::decode(signature.trim_start_matches("0x")).ok();
    let signature = bytes
        .and_then(|b| b.try_into().ok())
        .map(SignatureBytes)
        .with_context(malformed)?;
    let signature = Signature::try_from(&signature)
        .ok()
        .with_context(|| format!("approval {line:?}: not a valid BLS signature"))?;
    let key = set.keys().get(index as usize).with_context(|| {
        format!(
            "approval {line:?}: region {here} has no CN {index} ({} CNs)",
            set.len()
        )
    })?;
    anyhow::ensure!(
        signature.verify(key, message),
        "approval {line:?} is not CN {index}'s signature of {what}"
    );
    Ok((CnIndex(index), signature))
}

/// `key`'s index in region `here`'s CN set `set`.
pub(crate) fn index_in(set: &CnSet, here: ChainId, key: &SecretKey) -> anyhow::Result<CnIndex> {
    let public = key.public_key();
    let index = set.keys().iter().position(|k| *k == public);
    index
        .map(|i| CnIndex(i as u32))
        .with_context(|| format!("is not a key of region {here}'s CN set"))
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
pub(crate) mod tests {
    use super::*;
    use crate::chain::directory::REGION_ID_SPAN;
    use crate::crypto::hash::sha256;
    use alloy_primitives::U256;

    pub(crate) fn keys(tag: &str) -> Vec<SecretKey> {
        (0..4)
            .map(|i| SecretKey::from_seed(sha256(format!("{tag}-{i}").as_bytes()).as_slice()))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A region's genesis.json and its CNs' key files in `dir`.
    pub(crate) fn region(
        dir: &std::path::Path,
        region: u64,
        keys: &[SecretKey],
    ) -> (PathBuf, Vec<PathBuf>) {
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
            approvals: Vec::new(),
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

    #[test]
    fn approvals_signed_one_by_one_combine_and_a_wrong_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_keys) = region(&dir.path().join("first"), 1000, &keys("first"));
        let next = 1000 + REGION_ID_SPAN;
        let (second, second_keys) = region(&dir.path().join("second"), next, &keys("second"));
        let seeds = vec!["127.0.0.1:30400".to_string()];
        let approve_with = |key: &PathBuf, seeds: &[String]| {
            let mut shown = Vec::new();
            let line = approve(&first, &second, seeds, key, &mut shown)?;
            let shown = String::from_utf8(shown).unwrap();
            assert!(
                shown.contains(&format!("region {next} with genesis")),
                "{shown}"
            );
            anyhow::Ok(line)
        };
        // Three operators, each with only their own key.
        let lines: Vec<String> = first_keys[1..]
            .iter()
            .map(|k| approve_with(k, &seeds).unwrap())
            .collect();
        assert!(lines[0].starts_with("1:0x"), "{}", lines[0]);
        let request = |approvals: Vec<String>, key_files: Vec<PathBuf>| CreateRequest {
            directory_genesis: first.clone(),
            genesis: second.clone(),
            key_files,
            approvals,
            rn_seeds: seeds.clone(),
            rpc: None,
        };
        let combined = build(&request(lines.clone(), Vec::new())).unwrap();
        assert_eq!(combined.approvers.count(), 3);
        // The same creation as from the key files: one message, one aggregate.
        let from_files = build(&request(Vec::new(), first_keys[1..].to_vec())).unwrap();
        assert_eq!(combined, from_files);
        // Mixed: two approvals and one key file.
        let mixed = build(&request(lines[..2].to_vec(), vec![first_keys[0].clone()])).unwrap();
        assert_eq!(mixed.approvers.count(), 3);

        let error = |r: CreateRequest| format!("{:#}", build(&r).unwrap_err());
        // Signed for other RN seeds: that approval is named.
        let other = approve_with(&first_keys[0], &["10.0.0.1:1".to_string()]).unwrap();
        let mut with_other = lines[..2].to_vec();
        with_other.push(other.clone());
        let wrong = error(request(with_other, Vec::new()));
        assert!(
            wrong.contains(&other) && wrong.contains("another region entry"),
            "{wrong}"
        );
        // One operator's approval twice, a non-member's key, a garbled line, too few.
        let twice = error(request(
            vec![lines[0].clone(), lines[0].clone(), lines[1].clone()],
            Vec::new(),
        ));
        assert!(twice.contains("given twice"), "{twice}");
        assert!(approve_with(&second_keys[0], &seeds).is_err());
        let garbled = error(request(vec!["1:0xzz".into()], Vec::new()));
        assert!(garbled.contains("not <index>:0x<signature>"), "{garbled}");
        let short = error(request(lines[..2].to_vec(), Vec::new()));
        assert!(short.contains("2 approvals"), "{short}");
        let none = error(request(Vec::new(), Vec::new()));
        assert!(none.contains("no approvals"), "{none}");
    }
}
