//! Genesis: what every CN of a region must agree on before height 1 — the regionchain and its
//! servicechains, the CN set, consensus timing, and initial balances. `kaon init` writes it as
//! `genesis.json`; `kaon devnet` builds the same structure in memory. The genesis hash (the
//! parent of block 1) is SHA-256 of the file's canonical JSON, so any difference between two
//! nodes' files makes their first blocks incompatible instead of silently diverging.
//!
//! Every CN key comes with its proof of possession (`cn_pops`, from `kaon keygen` or `kaon
//! init`), and no key may appear twice: commit certificates add the signers' keys up, so a key
//! whose holder does not know its secret key (`pk_x - pk_honest`) would let one CN sign for
//! others. Loading refuses such a genesis and names the entry.

use crate::consensus::machine::{Params, Tip};
use crate::consensus::selection::{CnSet, SelectionError};
use crate::crypto::bls::{PublicKey, SecretKey, Signature};
use crate::crypto::hash::sha256;
use crate::types::{BlockHash, ChainId, Height};
use alloy_primitives::hex;
use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use thiserror::Error;

/// Largest genesis file read: bounds memory on a wrong or hostile path.
const MAX_GENESIS_BYTES: u64 = 64 << 20;

/// The longest round timeout a new genesis allows (timeouts grow with the round up to it).
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// The genesis of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Chain id of the regionchain.
    pub region: u64,
    /// Chain ids of the servicechains.
    pub servicechains: Vec<u64>,
    pub timestamp_ms: u64,
    /// `mix(0)`: seeds selection at height 1.
    pub mix: B256,
    pub committee_size: usize,
    pub round_ms: u64,
    pub base_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// CN BLS public keys (compressed, hex), in CN-index order.
    pub cns: Vec<String>,
    /// Each CN key's proof of possession (compressed signature, hex), in the order of `cns`.
    /// Absent in a file only so that loading can name the CN that lacks one.
    #[serde(default)]
    pub cn_pops: Vec<String>,
    pub alloc: Vec<Allocation>,
    /// Starting PoR difficulty (leading zero bits of a share hash); retargets every epoch.
    #[serde(default = "default_por_bits")]
    pub por_bits: u32,
    /// PoSC: RNs probed per container, penalties tolerated before slashing, probe deadline.
    #[serde(default)]
    pub posc: crate::chain::posc::PoscParams,
    /// For a region other than the platform's first: the first region (which keeps the region
    /// directory), so this regionchain can check that region's headers (`docs/regions.md`).
    /// Absent from the first region's genesis, and then not serialized: its hash is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryAnchor>,
}

/// The directory region as another region's genesis names it: its id, genesis hash and the
/// root of its genesis CN set (later changes are followed through its checkpointed headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryAnchor {
    pub region: u64,
    pub genesis_hash: B256,
    pub cn_set_root: B256,
}

fn default_por_bits() -> u32 {
    crate::chain::pop::PopParams::default().initial_bits
}

/// Why genesis's CN list was refused; every variant names the entry at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GenesisCnError {
    #[error("CN {index} key {key} is not a valid BLS public key: {reason}")]
    BadKey {
        index: usize,
        key: String,
        reason: String,
    },
    #[error(
        "CN {index} key {key} has no proof of possession in cn_pops (`kaon keygen` prints it)"
    )]
    MissingProof { index: usize, key: String },
    #[error("CN {index} key {key}: proof of possession is not a valid BLS signature: {reason}")]
    BadProofEncoding {
        index: usize,
        key: String,
        reason: String,
    },
    #[error("CN {index} key {key}: proof of possession does not verify")]
    BadProof { index: usize, key: String },
    #[error("cn_pops has {proofs} entries for {keys} CN keys")]
    ExtraProofs { keys: usize, proofs: usize },
    #[error("CN set: {0}")]
    Set(#[from] SelectionError),
}

/// Hex of one genesis entry, with or without `0x`.
fn unhex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim_start_matches("0x")).map_err(|e| e.to_string())
}

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub chain: u64,
    pub address: Address,
    pub balance: U256,
}

impl Genesis {
    /// A region of the CNs holding `cn_keys` (genesis gets their public keys and proofs of
    /// possession, never the secrets), `servicechains` servicechains after `region`, and
    /// `accounts` funded with `balance` on every servicechain.
    pub fn new(
        region: ChainId,
        cn_keys: &[SecretKey],
        servicechains: usize,
        accounts: &[Address],
        balance: U256,
        round_ms: u64,
        committee_size: usize,
    ) -> Self {
        let servicechains: Vec<u64> = (1..=servicechains as u64).map(|k| region.0 + k).collect();
        let alloc = servicechains
            .iter()
            .flat_map(|&chain| {
                accounts.iter().map(move |&address| Allocation {
                    chain,
                    address,
                    balance,
                })
            })
            .collect();
        let timestamp_ms = super::app::now_ms();
        Self {
            region: region.0,
            servicechains,
            timestamp_ms,
            mix: sha256(&[b"kaon-genesis-mix".as_slice(), &timestamp_ms.to_be_bytes()].concat()),
            committee_size,
            round_ms,
            base_timeout_ms: round_ms.max(500),
            max_timeout_ms: MAX_TIMEOUT_MS,
            cns: cn_keys
                .iter()
                .map(|k| hex::encode(k.public_key().to_bytes().0))
                .collect(),
            cn_pops: cn_keys
                .iter()
                .map(|k| hex::encode(k.prove_possession().to_bytes().0))
                .collect(),
            alloc,
            por_bits: default_por_bits(),
            posc: Default::default(),
            directory: None,
        }
    }

    /// This region as another region's genesis names it for its directory.
    pub fn as_anchor(&self) -> Result<DirectoryAnchor, GenesisCnError> {
        Ok(DirectoryAnchor {
            region: self.region,
            genesis_hash: self.hash().0,
            cn_set_root: self.cn_set()?.root(),
        })
    }

    /// The directory region this genesis names, as an entry its regionchain checks that
    /// region's headers against.
    pub fn directory_entry(&self) -> Option<crate::chain::directory::RegionEntry> {
        self.directory
            .map(|a| crate::chain::directory::RegionEntry {
                region: ChainId(a.region),
                genesis_hash: a.genesis_hash,
                cn_set_root: a.cn_set_root,
                rn_seeds: Vec::new(),
            })
    }

    /// The PoP settings this genesis fixes.
    pub fn pop_params(&self) -> crate::chain::pop::PopParams {
        crate::chain::pop::PopParams {
            initial_bits: self.por_bits,
            posc: self.posc,
            ..Default::default()
        }
    }

    /// Canonical JSON (field order as declared; no whitespace).
    pub fn canonical_json(&self) -> Vec<u8> {
        // Invariant: every field serializes.
        serde_json::to_vec(self).expect("genesis serializes")
    }

    /// The hash block 1 names as its parent.
    pub fn hash(&self) -> BlockHash {
        BlockHash(sha256(&self.canonical_json()))
    }

    pub fn tip(&self) -> Tip {
        Tip {
            height: Height(0),
            hash: self.hash(),
            mix: self.mix,
            timestamp_ms: self.timestamp_ms,
        }
    }

    pub fn params(&self) -> Params {
        Params {
            region: ChainId(self.region),
            committee_size: self.committee_size,
            block_interval_ms: self.round_ms,
            base_timeout_ms: self.base_timeout_ms,
            max_timeout_ms: self.max_timeout_ms,
            votes: Default::default(),
        }
    }

    /// The CN set: every key valid, proven by its holder, and listed once.
    pub fn cn_set(&self) -> Result<CnSet, GenesisCnError> {
        if self.cn_pops.len() > self.cns.len() {
            return Err(GenesisCnError::ExtraProofs {
                keys: self.cns.len(),
                proofs: self.cn_pops.len(),
            });
        }
        let keys = self
            .cns
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let key = text.clone();
                let pk = unhex(text)
                    .and_then(|b| PublicKey::from_bytes(&b).map_err(|e| e.to_string()))
                    .map_err(|reason| GenesisCnError::BadKey {
                        index,
                        key: key.clone(),
                        reason,
                    })?;
                let proof =
                    self.cn_pops
                        .get(index)
                        .ok_or_else(|| GenesisCnError::MissingProof {
                            index,
                            key: key.clone(),
                        })?;
                let proof = unhex(proof)
                    .and_then(|b| Signature::from_bytes(&b).map_err(|e| e.to_string()))
                    .map_err(|reason| GenesisCnError::BadProofEncoding {
                        index,
                        key: key.clone(),
                        reason,
                    })?;
                if !pk.verify_possession(&proof) {
                    return Err(GenesisCnError::BadProof { index, key });
                }
                Ok(pk)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CnSet::new(keys)?)
    }

    /// Reads and checks a genesis file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("genesis {}", path.display()))?
            .len();
        anyhow::ensure!(
            size <= MAX_GENESIS_BYTES,
            "genesis {} is {size} bytes, over the limit",
            path.display()
        );
        let bytes =
            std::fs::read(path).with_context(|| format!("reading genesis {}", path.display()))?;
        let genesis: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing genesis {}", path.display()))?;
        genesis
            .cn_set()
            .with_context(|| format!("genesis {}", path.display()))?;
        anyhow::ensure!(
            genesis.round_ms > 0 && genesis.committee_size > 0,
            "genesis timing and committee size must be positive"
        );
        // A zero base never grows, and a cap below the base is no growth either: rounds would
        // keep one timeout for ever, and liveness after GST needs them to grow past any delay.
        anyhow::ensure!(
            genesis.base_timeout_ms > 0 && genesis.max_timeout_ms >= genesis.base_timeout_ms,
            "genesis round timeouts must grow: base_timeout_ms {} must be positive and at most \
             max_timeout_ms {}",
            genesis.base_timeout_ms,
            genesis.max_timeout_ms
        );
        Ok(genesis)
    }

    /// Writes the genesis file (pretty JSON for people; the hash uses the canonical form).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        // Invariant: every field serializes.
        let text = serde_json::to_string_pretty(self).expect("genesis serializes");
        std::fs::write(path, text).with_context(|| format!("writing genesis {}", path.display()))
    }

    /// The initial balances as (chain, address, wei).
    pub fn allocations(&self) -> Vec<(ChainId, Address, U256)> {
        self.alloc
            .iter()
            .map(|a| (ChainId(a.chain), a.address, a.balance))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis() -> Genesis {
        let keys: Vec<SecretKey> = (0..4u8)
            .map(|i| SecretKey::from_seed(&[i + 1; 32]).unwrap())
            .collect();
        Genesis::new(ChainId(1000), &keys, 1, &[], U256::ZERO, 1000, 100)
    }

    #[test]
    fn a_directory_anchor_is_kept_and_hashed_and_its_absence_changes_nothing() {
        let first = genesis();
        // No anchor: not serialized, so a first region's file and hash are what they were.
        let json = String::from_utf8(first.canonical_json()).unwrap();
        assert!(!json.contains("directory"), "{json}");
        let second = Genesis {
            region: 1_001_000,
            directory: Some(first.as_anchor().unwrap()),
            ..genesis()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.json");
        second.save(&path).unwrap();
        let loaded = Genesis::load(&path).unwrap();
        assert_eq!(loaded.directory, second.directory);
        assert_eq!(loaded.hash(), second.hash());
        let entry = loaded.directory_entry().unwrap();
        assert_eq!(entry.region, ChainId(1000));
        assert_eq!(entry.genesis_hash, first.hash().0);
        assert_eq!(entry.cn_set_root, first.cn_set().unwrap().root());
        assert_ne!(
            Genesis {
                directory: None,
                ..second.clone()
            }
            .hash(),
            second.hash()
        );
    }
}
