//! Mining profiles: the TOML file `kaon mine` keeps per device class (`tuning/*.toml` ships
//! one per class; the autotuner writes the machine's own), its bounded reading and atomic
//! writing, and where it lives by default.

use super::{TuneError, BATCH_CANDIDATES};
use crate::por::cpu::DEFAULT_CHUNK;
use crate::por::gpu::DEFAULT_WORKGROUP_SIZE;
use crate::por::STRIP_LEN;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest profile file read: a profile is a dozen lines; anything bigger is not one.
pub const MAX_PROFILE_BYTES: u64 = 64 << 10;
/// The widest workgroup a profile may name (WebGPU's limit on invocations per workgroup is
/// 256 by default; Vulkan devices allow at most 1024 in practice).
const MAX_WORKGROUP_SIZE: u32 = 1024;
/// Longest class and adapter names kept in a profile.
pub(super) const MAX_NAME_LEN: usize = 256;

/// What hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            other => Err(format!("device {other:?} is neither cpu nor gpu")),
        }
    }
}

/// The device class a profile is kept per: `cpu`, or for a GPU adapter (as
/// [`crate::por::gpu::GpuMiner::adapter`] names it) `lavapipe` (Mesa's CPU Vulkan device,
/// which calls itself llvmpipe), `h100`, `h200` (the same GH100 chip with more memory; kept
/// apart so each profile says what it was measured on), or `consumer-gpu` for any other.
pub fn device_class(kind: DeviceKind, adapter: &str) -> &'static str {
    let name = adapter.to_ascii_lowercase();
    match kind {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Gpu if name.contains("llvmpipe") || name.contains("lavapipe") => "lavapipe",
        DeviceKind::Gpu if name.contains("h100") => "h100",
        DeviceKind::Gpu if name.contains("h200") => "h200",
        DeviceKind::Gpu => "consumer-gpu",
    }
}

/// Where `kaon mine` keeps the profile of `class` unless `--profile` says otherwise.
pub fn default_profile_path(class: &str) -> PathBuf {
    profile_path_in(
        class,
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// `$XDG_CONFIG_HOME/kaon/mine-<class>.toml`, else `$HOME/.config/kaon/mine-<class>.toml`,
/// else `mine-<class>.toml` in the current directory. Empty or (for XDG, per its spec)
/// relative values count as unset.
pub fn profile_path_in(class: &str, xdg: Option<OsString>, home: Option<OsString>) -> PathBuf {
    let file = format!("mine-{class}.toml");
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    match (set(xdg).filter(|p| p.is_absolute()), set(home)) {
        (Some(xdg), _) => xdg.join("kaon").join(file),
        (None, Some(home)) => home.join(".config").join("kaon").join(file),
        (None, None) => PathBuf::from(file),
    }
}

/// The knobs `kaon mine` runs with on one device, and where they were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiningProfile {
    /// Device class ([`device_class`]); names the default profile file.
    pub class: String,
    /// `cpu` or `gpu`.
    pub device: DeviceKind,
    /// The adapter (GPU) or processor (CPU) the knobs were measured on.
    pub adapter: String,
    /// Segment bytes the trials hashed.
    pub segment_len: usize,
    /// GPU: invocations per workgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workgroup_size: Option<u32>,
    /// GPU: counters per dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// CPU: counters per rayon task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// CPU: threads the rate was measured with (rayon uses every core; informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Rate measured with these knobs; absent in a profile nobody measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes_per_sec: Option<u64>,
}

impl MiningProfile {
    /// GPU invocations per workgroup (the default for a CPU profile).
    pub fn workgroup_size(&self) -> u32 {
        self.workgroup_size.unwrap_or(DEFAULT_WORKGROUP_SIZE)
    }

    /// GPU counters per dispatch (the smallest candidate for a CPU profile).
    pub fn batch(&self) -> u32 {
        self.batch.unwrap_or(BATCH_CANDIDATES[0])
    }

    /// CPU counters per rayon task (the default for a GPU profile).
    pub fn chunk(&self) -> u64 {
        self.chunk.unwrap_or(DEFAULT_CHUNK)
    }

    /// The knobs in one line.
    pub fn knobs(&self) -> String {
        match self.device {
            DeviceKind::Gpu => format!(
                "workgroup {}, batch {}",
                self.workgroup_size(),
                self.batch()
            ),
            DeviceKind::Cpu => format!("chunk {}", self.chunk()),
        }
    }

    /// Parses a profile; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, TuneError> {
        let parse = |message: String| TuneError::Parse {
            path: origin.to_path_buf(),
            message,
        };
        let profile: Self = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        profile.validate().map_err(parse)?;
        Ok(profile)
    }

    /// The profile as TOML, with a header saying what wrote it.
    pub fn to_toml(&self) -> String {
        // Invariant: every field is a plain TOML-representable value.
        let body = toml::to_string(self).expect("a profile serializes to TOML");
        format!(
            "# Kaon mining profile (`kaon mine --profile`), written by its autotuner.\n\
             # `--retune` measures again; `--workgroup-size` / `--batch` override single knobs.\n\
             {body}"
        )
    }

    /// Reads a profile, refusing files over [`MAX_PROFILE_BYTES`].
    pub fn load(path: &Path) -> Result<Self, TuneError> {
        let read = |source| TuneError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut bytes = Vec::new();
        // One byte more than allowed tells an oversized file from one exactly at the limit,
        // whatever the metadata says (a FIFO, a file still growing).
        file.take(MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(TuneError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_PROFILE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| TuneError::Parse {
            path: path.to_path_buf(),
            message: "not UTF-8 text".to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Writes the profile (creating its directory), replacing any file at `path` only once the
    /// new one is complete.
    pub fn save(&self, path: &Path) -> Result<(), TuneError> {
        let write = |source| TuneError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        std::fs::write(&tmp, self.to_toml()).map_err(write)?;
        std::fs::rename(&tmp, path).map_err(write)
    }

    fn validate(&self) -> Result<(), String> {
        let class_ok = !self.class.is_empty()
            && self.class.len() <= MAX_NAME_LEN
            && self
                .class
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !class_ok {
            return Err(format!(
                "class {:?} must be 1 to {MAX_NAME_LEN} of a-z, 0-9, '-'",
                self.class
            ));
        }
        if self.adapter.len() > MAX_NAME_LEN {
            return Err(format!("adapter is longer than {MAX_NAME_LEN} bytes"));
        }
        if self.segment_len < STRIP_LEN {
            return Err(format!("segment_len must be at least {STRIP_LEN}"));
        }
        match self.device {
            DeviceKind::Gpu => {
                match self.workgroup_size {
                    Some(1..=MAX_WORKGROUP_SIZE) => {}
                    Some(n) => {
                        return Err(format!(
                            "workgroup_size {n} is outside 1..={MAX_WORKGROUP_SIZE}"
                        ))
                    }
                    None => return Err("a gpu profile needs workgroup_size".to_string()),
                }
                match self.batch {
                    Some(0) => return Err("batch must be at least 1".to_string()),
                    Some(_) => {}
                    None => return Err("a gpu profile needs batch".to_string()),
                }
                if self.chunk.is_some() || self.threads.is_some() {
                    return Err("chunk and threads are cpu knobs, not gpu ones".to_string());
                }
            }
            DeviceKind::Cpu => {
                match self.chunk {
                    Some(0) => return Err("chunk must be at least 1".to_string()),
                    Some(_) => {}
                    None => return Err("a cpu profile needs chunk".to_string()),
                }
                if self.workgroup_size.is_some() || self.batch.is_some() {
                    return Err("workgroup_size and batch are gpu knobs, not cpu ones".to_string());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CHUNK_CANDIDATES, WORKGROUP_CANDIDATES};
    use super::*;

    fn gpu_profile() -> MiningProfile {
        MiningProfile {
            class: "lavapipe".to_string(),
            device: DeviceKind::Gpu,
            adapter: "llvmpipe (LLVM 19.1.7, 256 bits) (Cpu, llvmpipe)".to_string(),
            segment_len: crate::por::DEFAULT_SEGMENT_LEN,
            workgroup_size: Some(256),
            batch: Some(1 << 18),
            chunk: None,
            threads: None,
            hashes_per_sec: Some(14_900_000),
        }
    }

    #[test]
    fn profiles_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/kaon/mine-lavapipe.toml");
        let profile = gpu_profile();
        profile.save(&path).unwrap();
        assert_eq!(MiningProfile::load(&path).unwrap(), profile);
        let cpu = MiningProfile {
            class: "cpu".to_string(),
            device: DeviceKind::Cpu,
            workgroup_size: None,
            batch: None,
            chunk: Some(1 << 12),
            threads: Some(2),
            hashes_per_sec: None,
            ..profile
        };
        cpu.save(&path).unwrap();
        assert_eq!(MiningProfile::load(&path).unwrap(), cpu, "save replaces");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mine-lavapipe.toml"], "no temporary file left");
    }

    #[test]
    fn bad_profiles_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let good = gpu_profile().to_toml();
        let cases = [
            ("not toml [", "invalid mining profile"),
            (&good.replace("batch", "bacth"), "bacth"),
            (
                &good.replace("device = \"gpu\"", "device = \"fpga\""),
                "fpga",
            ),
            (
                &good.replace("workgroup_size = 256", "workgroup_size = 0"),
                "workgroup_size 0",
            ),
            (
                &good.replace("workgroup_size = 256\n", ""),
                "needs workgroup_size",
            ),
            (
                &good.replace("batch = 262144", "batch = -1"),
                "invalid mining profile",
            ),
            (
                &good.replace("batch = 262144", "batch = 262144\nchunk = 4"),
                "cpu knobs",
            ),
            (&good.replace("\"lavapipe\"", "\"../../etc\""), "class"),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let e = MiningProfile::load(&path).unwrap_err();
            let message = e.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("p.toml"), "{message}");
        }
        std::fs::write(&path, [0xffu8, 0xfe]).unwrap();
        assert!(MiningProfile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        let missing = MiningProfile::load(&dir.path().join("absent.toml")).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
    }

    #[test]
    fn oversized_profiles_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        let mut text = gpu_profile().to_toml();
        std::fs::write(&path, &text).unwrap();
        assert!(MiningProfile::load(&path).is_ok());
        text.push_str(&"#".repeat(MAX_PROFILE_BYTES as usize));
        std::fs::write(&path, &text).unwrap();
        let e = MiningProfile::load(&path).unwrap_err();
        assert!(matches!(e, TuneError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("huge.toml"), "{e}");
    }

    #[test]
    fn adapters_map_to_device_classes() {
        let gpu = |name| device_class(DeviceKind::Gpu, name);
        assert_eq!(
            gpu("llvmpipe (LLVM 19.1.7, 256 bits) (Cpu, llvmpipe)"),
            "lavapipe"
        );
        assert_eq!(gpu("Lavapipe"), "lavapipe");
        assert_eq!(gpu("NVIDIA H100 80GB HBM3 (DiscreteGpu, NVIDIA)"), "h100");
        assert_eq!(gpu("NVIDIA H100 PCIe"), "h100");
        assert_eq!(gpu("NVIDIA H200 (DiscreteGpu, NVIDIA)"), "h200");
        assert_eq!(
            gpu("NVIDIA GeForce RTX 4090 (DiscreteGpu, NVIDIA)"),
            "consumer-gpu"
        );
        assert_eq!(gpu("AMD Radeon RX 7900 XTX (RADV NAVI31)"), "consumer-gpu");
        assert_eq!(device_class(DeviceKind::Cpu, "llvmpipe"), "cpu");
    }

    #[test]
    fn default_profile_path_follows_xdg_then_home_then_the_current_directory() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            profile_path_in("h100", os("/x"), os("/home/u")),
            Path::new("/x/kaon/mine-h100.toml")
        );
        assert_eq!(
            profile_path_in("cpu", None, os("/home/u")),
            Path::new("/home/u/.config/kaon/mine-cpu.toml")
        );
        assert_eq!(
            profile_path_in("cpu", os(""), os("/home/u")),
            Path::new("/home/u/.config/kaon/mine-cpu.toml"),
            "an empty XDG_CONFIG_HOME is unset"
        );
        assert_eq!(
            profile_path_in("cpu", os("relative"), os("/home/u")),
            Path::new("/home/u/.config/kaon/mine-cpu.toml"),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(
            profile_path_in("lavapipe", None, None),
            Path::new("mine-lavapipe.toml")
        );
    }

    #[test]
    fn shipped_mining_profiles_parse_and_name_candidate_knobs() {
        let shipped = [
            (
                "lavapipe.toml",
                include_str!("../../../tuning/lavapipe.toml"),
            ),
            (
                "consumer-gpu.toml",
                include_str!("../../../tuning/consumer-gpu.toml"),
            ),
            ("h100.toml", include_str!("../../../tuning/h100.toml")),
            ("h200.toml", include_str!("../../../tuning/h200.toml")),
            ("cpu.toml", include_str!("../../../tuning/cpu.toml")),
        ];
        for (name, text) in shipped {
            let profile = MiningProfile::from_toml(text, Path::new(name)).unwrap();
            assert_eq!(format!("{}.toml", profile.class), name);
            match profile.device {
                DeviceKind::Gpu => {
                    assert!(
                        WORKGROUP_CANDIDATES.contains(&profile.workgroup_size()),
                        "{name}"
                    );
                    assert!(BATCH_CANDIDATES.contains(&profile.batch()), "{name}");
                }
                DeviceKind::Cpu => assert!(CHUNK_CANDIDATES.contains(&profile.chunk()), "{name}"),
            }
        }
    }
}
