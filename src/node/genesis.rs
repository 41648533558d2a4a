//! Genesis: what every CN of a region must agree on before height 1 — the regionchain and its
//! servicechains, the CN set, consensus timing, and initial balances. `kaon init` writes it as
//! `genesis.json`; `kaon devnet` builds the same structure in memory. The genesis hash (the
//! parent of block 1) is SHA-256 of the file's canonical JSON, so any difference between two
//! nodes' files makes their first blocks incompatible instead of silently diverging.

use super::loadgen::DevAccount;
use crate::consensus::machine::{Params, Tip};
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{PublicKey, SecretKey};
use crate::crypto::hash::sha256;
use crate::net::NetConfig;
use crate::pipeline::topology::CnSpec;
use crate::types::{BlockHash, ChainId, CnIndex, Height};
use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest genesis file read: bounds memory on a wrong or hostile path.
const MAX_GENESIS_BYTES: u64 = 64 << 20;

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
    pub alloc: Vec<Allocation>,
    /// Starting PoR difficulty (leading zero bits of a share hash); retargets every epoch.
    #[serde(default = "default_por_bits")]
    pub por_bits: u32,
    /// PoSC: RNs probed per container, penalties tolerated before slashing, probe deadline.
    #[serde(default)]
    pub posc: crate::node::posc::PoscParams,
}

fn default_por_bits() -> u32 {
    crate::node::pop::PopParams::default().initial_bits
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
    /// A region of `cn_keys`, `servicechains` servicechains after `region`, and `accounts`
    /// funded with `balance` on every servicechain.
    pub fn new(
        region: ChainId,
        cn_keys: &[PublicKey],
        servicechains: usize,
        accounts: &[DevAccount],
        balance: U256,
        round_ms: u64,
        committee_size: usize,
    ) -> Self {
        let servicechains: Vec<u64> = (1..=servicechains as u64).map(|k| region.0 + k).collect();
        let alloc = servicechains
            .iter()
            .flat_map(|&chain| {
                accounts.iter().map(move |a| Allocation {
                    chain,
                    address: a.address,
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
            max_timeout_ms: 30_000,
            cns: cn_keys
                .iter()
                .map(|k| hex::encode(k.to_bytes().0))
                .collect(),
            alloc,
            por_bits: default_por_bits(),
            posc: Default::default(),
        }
    }

    /// The PoP settings this genesis fixes.
    pub fn pop_params(&self) -> crate::node::pop::PopParams {
        crate::node::pop::PopParams {
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
        }
    }

    /// The CN set, every key validated.
    pub fn cn_set(&self) -> anyhow::Result<CnSet> {
        let keys = self
            .cns
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let bytes = hex::decode(k.trim_start_matches("0x"))
                    .with_context(|| format!("CN {i} key is not hex"))?;
                PublicKey::from_bytes(&bytes)
                    .with_context(|| format!("CN {i} key is not a valid BLS key"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
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

    /// Everything CN `me` needs to start on this genesis.
    pub fn cn_spec(
        &self,
        me: CnIndex,
        key: SecretKey,
        datadir: PathBuf,
        net: NetConfig,
    ) -> anyhow::Result<CnSpec> {
        let set = self.cn_set()?;
        // A key outside the genesis set is a CN waiting to join through governance: it follows
        // the chain until a change names it. A key at the wrong index is a configuration error.
        if let Ok(k) = set.key(me) {
            anyhow::ensure!(
                *k == key.public_key(),
                "the key given for CN {me} is not the one in genesis"
            );
        }
        Ok(CnSpec {
            me,
            key,
            set: Arc::new(set),
            params: self.params(),
            genesis: self.tip(),
            chains: self.servicechains.iter().map(|&c| ChainId(c)).collect(),
            allocations: self.allocations(),
            datadir,
            net,
            pipeline: crate::config::PipelineConfig::default(),
            storage: crate::config::StorageConfig::default(),
            max_txs_per_segment: 10_000,
            pop: self.pop_params(),
        })
    }
}
