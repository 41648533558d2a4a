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
    /// Present on a consensus node's config (written by `kaon init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<CnConfig>,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter, e.g. `info` or `kaon=debug` (overridden by `RUST_LOG`).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            datadir: PathBuf::from("kaon-data"),
            consensus: ConsensusConfig::default(),
            storage: StorageConfig::default(),
            pipeline: PipelineConfig::default(),
            telemetry: TelemetryConfig::default(),
            cn: None,
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
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        // 64 batches keep both cores busy with a few batches in flight while bounding a
        // stage's queue.
        Self { link_capacity: 64 }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log: "info".to_string(),
        }
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
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(ConfigError::Invalid((*why).to_string())),
            None => Ok(()),
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
    }
}
