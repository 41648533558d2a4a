//! Node configuration: a TOML file whose every field has a default, so an empty file (or none)
//! is a working configuration. Unknown keys are errors: a typo must not silently fall back to a
//! default.

use crate::consensus::selection::DEFAULT_COMMITTEE_SIZE;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Everything a node reads at startup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the block log and RocksDB live.
    pub datadir: PathBuf,
    pub consensus: ConsensusConfig,
    pub storage: StorageConfig,
    pub pipeline: PipelineConfig,
    pub telemetry: TelemetryConfig,
    /// JSON-RPC limits of the node's server (`kaon rn --rpc`, `kaon devnet`).
    pub rpc: crate::rpc::RpcConfig,
    pub net: NetLimitsConfig,
    /// Present on a consensus node's config (written by `kaon init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<CnConfig>,
    /// Present on a ranger node's config (written by `kaon init --regions`): the regions it
    /// follows, all served on one JSON-RPC endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rn: Option<RnSection>,
}

/// Identity and peers of one consensus node. Relative paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnConfig {
    /// This node's index in the genesis CN set.
    pub index: u32,
    /// File holding this CN's BLS secret key (hex, as `kaon keygen` writes it).
    pub key_file: PathBuf,
    pub genesis: PathBuf,
    /// UDP address of this node's QUIC endpoint.
    pub listen: String,
    /// The other CNs, as `index@host:port`.
    pub peers: Vec<String>,
}

/// A ranger node's regions and endpoint. Relative paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnSection {
    /// Serve JSON-RPC here for every region followed: `/chain/<id>` is answered by the region
    /// holding chain `id` (`docs/regions.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<String>,
    /// The regions followed; the first keeps the datadir's root, region `id` lives under
    /// `region-<id>/` in it.
    pub regions: Vec<RnRegionConfig>,
    /// Regions this node does not follow, each served by another JSON-RPC endpoint: requests
    /// for their chains (`/chain/<id>` with `id` in the region's span) are forwarded there, so
    /// this endpoint answers for every chain of the platform (`docs/regions.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<RemoteRegion>,
}

/// A region served by another endpoint ([`RnSection::remote`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRegion {
    /// The region's id (its regionchain's chain id); its chains are the ids after it, within
    /// its span.
    pub region: u64,
    /// The endpoint serving it, `http://host:port`.
    pub rpc: String,
}

/// One region a ranger node follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnRegionConfig {
    /// The region's genesis.json.
    pub genesis: PathBuf,
    /// This RN's BLS node key in that region (hex, as `kaon keygen` writes it): one per region,
    /// as an RN's registration and probe answers belong to the region that pays for them.
    pub key_file: PathBuf,
    /// UDP address of this RN's endpoint on the region's RN network.
    pub listen: String,
    /// The region's CNs to sync from, as `index@host:port`.
    pub cns: Vec<String>,
    /// Other RNs of the region to dial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rns: Vec<String>,
}

/// Consensus parameters; every node of a region must agree on them (they come with genesis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Committee members per round when the CN set is larger than this plus one (written into
    /// genesis by `kaon init` and used by `kaon devnet`).
    pub committee_size: usize,
}

/// Which block-log write path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogBackend {
    /// io_uring when the kernel allows it, pwrite otherwise (logged at startup).
    Auto,
    IoUring,
    Pwrite,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub log_backend: LogBackend,
    /// Size of each preallocated extent of the block log, so appends never extend the file.
    pub log_preallocate_mib: u64,
    /// RocksDB block cache.
    pub rocksdb_cache_mib: usize,
    /// Blocks below the head whose state stays readable (`eth_getBalance`, `eth_call`, … at a
    /// past block); older change sets are pruned in the background, and `0` writes none.
    /// Absent: a ranger node keeps all history, a consensus node the last
    /// [`CN_HISTORY_BLOCKS`] (docs/storage.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_blocks: Option<u64>,
    /// Free space the datadir's disk must keep: a node below it refuses to start, and a
    /// running one stops (exit status 70, the reason logged) before writes fail.
    pub min_free_mib: u64,
}

/// State history a consensus node keeps unless configured: CNs serve no JSON-RPC, so a short
/// window (for operators' inspection) is all they pay for.
pub const CN_HISTORY_BLOCKS: u64 = 128;

impl StorageConfig {
    /// The history to keep: the configured bound, or `role_default`.
    pub fn history(
        &self,
        role_default: crate::storage::history::HistoryRetention,
    ) -> crate::storage::history::HistoryRetention {
        self.history_blocks.map_or(
            role_default,
            crate::storage::history::HistoryRetention::Blocks,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of every link between stages, in batches.
    pub link_capacity: usize,
    /// How long a proposer waits, once the previous block is committed and transactions are
    /// waiting, before it proposes (so a burst goes into one block). Without waiting
    /// transactions it proposes after the genesis round interval (empty blocks at that pace).
    pub proposal_batch_ms: u64,
    /// Proposals name their transactions by hash, and each CN fills them from its pool
    /// (`docs/consensus.md`, "Compact proposals"); false sends every proposal in full.
    pub compact_proposals: bool,
}

/// Bounds on the connections anyone may open (`docs/ranger.md`, "Slots"): ranger nodes on a
/// CN, RN peers on an RN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetLimitsConfig {
    /// CN: ranger nodes served at once.
    pub max_rn_peers: usize,
    /// CN: connections one RN key may hold; RN: the same for one peer key.
    pub max_per_key: usize,
    /// CN: RN connections from one IP address; RN: the same for peers not configured.
    pub max_per_address: usize,
    /// CN: seconds an RN may stay silent (no frame, no block request) before it is cut off.
    pub rn_idle_timeout_s: u64,
    /// RN: peers admitted besides the configured ones.
    pub max_rn_network_peers: usize,
    /// RN: seconds of silence towards a CN after which a heartbeat is sent.
    pub cn_heartbeat_s: u64,
    /// CN and RN: hellos of unauthenticated peers checked at once (BLS, on the blocking pool);
    /// a connection arriving when all are busy is refused.
    pub max_hello_checks: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter, e.g. `info` or `kaon=debug` (overridden by `RUST_LOG`). Unset: `info`,
    /// or `warn` for `kaon devnet`, whose terminal shows a status line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            datadir: PathBuf::from("kaon-data"),
            consensus: ConsensusConfig::default(),
            storage: StorageConfig::default(),
            pipeline: PipelineConfig::default(),
            telemetry: TelemetryConfig::default(),
            rpc: crate::rpc::RpcConfig::default(),
            net: NetLimitsConfig::default(),
            cn: None,
            rn: None,
        }
    }
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            committee_size: DEFAULT_COMMITTEE_SIZE,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            log_backend: LogBackend::Auto,
            log_preallocate_mib: 64,
            rocksdb_cache_mib: 256,
            history_blocks: None,
            min_free_mib: crate::storage::space::DEFAULT_MIN_FREE_MIB,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        // 64 batches keep both cores busy with a few batches in flight while bounding a
        // stage's queue.
        Self {
            link_capacity: 64,
            proposal_batch_ms: 10,
            compact_proposals: true,
        }
    }
}

impl Default for NetLimitsConfig {
    fn default() -> Self {
        Self {
            max_rn_peers: crate::net::DEFAULT_MAX_RN_PEERS,
            max_per_key: crate::net::admission::DEFAULT_MAX_PER_KEY,
            max_per_address: crate::net::admission::DEFAULT_MAX_PER_ADDRESS,
            rn_idle_timeout_s: crate::net::DEFAULT_RN_IDLE_TIMEOUT.as_secs(),
            max_rn_network_peers: crate::net::rn::DEFAULT_MAX_RN_NETWORK_PEERS,
            cn_heartbeat_s: crate::net::rn::DEFAULT_CN_HEARTBEAT.as_secs(),
            max_hello_checks: crate::net::hello_checks::DEFAULT_MAX_HELLO_CHECKS,
        }
    }
}

impl NetLimitsConfig {
    /// A CN's network settings with these bounds.
    pub fn apply_cn(&self, net: &mut crate::net::NetConfig) {
        net.max_rn_peers = self.max_rn_peers;
        net.max_rn_per_key = self.max_per_key;
        net.max_rn_per_address = self.max_per_address;
        net.rn_idle_timeout = std::time::Duration::from_secs(self.rn_idle_timeout_s);
        net.max_hello_checks = self.max_hello_checks;
    }

    /// An RN's network settings with these bounds.
    pub fn apply_rn(&self, net: &mut crate::net::rn::RnNetConfig) {
        net.max_peers = self.max_rn_network_peers;
        net.max_per_key = self.max_per_key;
        net.max_per_address = self.max_per_address;
        net.cn_heartbeat = std::time::Duration::from_secs(self.cn_heartbeat_s);
        net.max_hello_checks = self.max_hello_checks;
    }
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// The configuration as TOML, every default spelled out.
    pub fn to_toml(&self) -> String {
        // Invariant: every field is a plain TOML-representable value.
        toml::to_string_pretty(self).expect("config serializes to TOML")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            (
                self.consensus.committee_size == 0,
                "consensus.committee_size must be at least 1",
            ),
            (
                self.pipeline.link_capacity == 0,
                "pipeline.link_capacity must be at least 1",
            ),
            (
                self.net.max_per_key == 0
                    || self.net.max_per_address == 0
                    || self.net.max_hello_checks == 0,
                "net.max_per_key, net.max_per_address and net.max_hello_checks must be at least 1",
            ),
            (
                self.net.cn_heartbeat_s == 0
                    || self.net.cn_heartbeat_s >= self.net.rn_idle_timeout_s,
                "net.cn_heartbeat_s must be at least 1 and below net.rn_idle_timeout_s",
            ),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(ConfigError::Invalid((*why).to_string())),
            None => self.rpc.check().map_err(ConfigError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_defaults_round_trip() {
        let origin = Path::new("test.toml");
        assert_eq!(Config::from_toml("", origin).unwrap(), Config::default());
        let text = Config::default().to_toml();
        assert_eq!(Config::from_toml(&text, origin).unwrap(), Config::default());
    }

    #[test]
    fn shipped_tuning_profiles_parse() {
        let text = include_str!("../tuning/cpu-2core.toml");
        let config = Config::from_toml(text, Path::new("cpu-2core.toml")).unwrap();
        assert_eq!(config.pipeline.link_capacity, 32);
    }

    #[test]
    fn history_bound_comes_from_the_file_or_the_role_default() {
        use crate::storage::history::HistoryRetention;
        let origin = Path::new("test.toml");
        let bounded = Config::from_toml("[storage]\nhistory_blocks = 1000\n", origin).unwrap();
        assert_eq!(
            bounded.storage.history(HistoryRetention::All),
            HistoryRetention::Blocks(1000)
        );
        let text = bounded.to_toml();
        assert_eq!(Config::from_toml(&text, origin).unwrap(), bounded);
        let unset = Config::default().storage;
        assert_eq!(unset.history(HistoryRetention::All), HistoryRetention::All);
        assert_eq!(
            unset.history(HistoryRetention::Blocks(CN_HISTORY_BLOCKS)),
            HistoryRetention::Blocks(CN_HISTORY_BLOCKS)
        );
        assert!(Config::from_toml("[storage]\nhistory_blocks = -1\n", origin).is_err());
    }

    #[test]
    fn typos_and_nonsense_are_errors() {
        let origin = Path::new("test.toml");
        let typo = Config::from_toml("[consensus]\ncomittee_size = 4\n", origin).unwrap_err();
        assert!(typo.to_string().contains("comittee_size"), "{typo}");
        let zero = Config::from_toml("[pipeline]\nlink_capacity = 0\n", origin).unwrap_err();
        assert!(zero.to_string().contains("link_capacity"), "{zero}");
        let rpc = Config::from_toml("[rpc]\nmax_batch_len = 0\n", origin).unwrap_err();
        assert!(rpc.to_string().contains("rpc.max_batch_len"), "{rpc}");
        let unknown = Config::from_toml("[rpc]\ndefault_chain = 7\n", origin).unwrap_err();
        assert!(unknown.to_string().contains("default_chain"), "{unknown}");
        let capacity =
            Config::from_toml("[rpc]\nregion_capacity_tps = -5.0\n", origin).unwrap_err();
        assert!(
            capacity.to_string().contains("region_capacity_tps"),
            "{capacity}"
        );
        let stated = Config::from_toml("[rpc]\nregion_capacity_tps = 3700.0\n", origin).unwrap();
        assert_eq!(stated.rpc.region_capacity_tps, Some(3700.0));
    }

    #[test]
    fn rpc_limits_are_configuration() {
        let origin = Path::new("test.toml");
        let text = "[rpc]\nmax_batch_len = 7\nrequest_deadline = 3\ncors_allow_origin = \"https://app.example\"\n";
        let config = Config::from_toml(text, origin).unwrap();
        assert_eq!(config.rpc.max_batch_len, 7);
        assert_eq!(
            config.rpc.request_deadline,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(
            config.rpc.cors_allow_origin.as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            config.rpc.max_logs,
            crate::rpc::RpcConfig::default().max_logs
        );
    }
}
