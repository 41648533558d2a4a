//! A region of separate `kaon cn` / `kaon rn` processes on 127.0.0.1, as `kaon chaos` and the
//! multi-process tests run them: the child processes of a `kaon` binary, each CN's committed
//! blocks read from its stdout (`committed height H hash X …`), and a guard that kills every
//! child on every exit path.

use crate::crypto::bls::SecretKey;
use alloy_primitives::hex;
use rand::RngCore;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A command for the `kaon` binary whose process the kernel kills when the thread that
/// started it exits: a parent killed with SIGKILL runs no guard, and its children must not
/// keep ports and datadirs busy after it.
pub fn child_command(kaon: &Path) -> Command {
    let mut command = Command::new(kaon);
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// Committed (height → block hash) per CN, filled by threads reading each CN's stdout.
pub type Chains = Arc<Mutex<Vec<BTreeMap<u64, String>>>>;

/// An empty record for `cns` CNs.
pub fn new_chains(cns: usize) -> Chains {
    Arc::new(Mutex::new(vec![BTreeMap::new(); cns]))
}

/// A new, empty record at the end of `chains`; its index. A restarted CN records into a fresh
/// one, so what the new process commits is told apart from what the old one printed.
pub fn add_record(chains: &Chains) -> usize {
    let mut chains = chains.lock().unwrap_or_else(|e| e.into_inner());
    chains.push(BTreeMap::new());
    chains.len() - 1
}

/// The (height, hash) of a CN's `committed height H hash X …` line.
pub fn parse_committed(line: &str) -> Option<(u64, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["committed", "height", h, "hash", hash, ..] => Some((h.parse().ok()?, hash.to_string())),
        _ => None,
    }
}

/// Starts `kaon cn --config <dir>/cn<i>/config.toml` (written by `kaon init`), logging only
/// warnings (to nowhere), and records what it commits under index `i` of `chains`.
pub fn spawn_cn(kaon: &Path, dir: &Path, i: usize, chains: &Chains) -> std::io::Result<Child> {
    spawn_cn_into(kaon, dir, i, i, chains)
}

/// Where CN `i`'s warnings and errors go (appended across restarts).
pub fn cn_log(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("cn{i}/stderr.log"))
}

/// [`spawn_cn`] of CN `i`, recording into `record` (from [`add_record`]); its stderr is
/// appended to [`cn_log`].
pub fn spawn_cn_into(
    kaon: &Path,
    dir: &Path,
    i: usize,
    record: usize,
    chains: &Chains,
) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cn_log(dir, i))?;
    let mut child = child_command(kaon)
        .args(["--log", "warn", "--config"])
        .arg(dir.join(format!("cn{i}/config.toml")))
        .arg("cn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| {
        std::io::Error::other("kaon cn started without the stdout pipe it was given")
    })?;
    let chains = Arc::clone(chains);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((h, hash)) = parse_committed(&line) {
                if let Some(chain) = chains
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(record)
                {
                    chain.insert(h, hash);
                }
            }
        }
    });
    Ok(child)
}

/// The highest height CN `i` committed (0 before its first block).
pub fn height(chains: &Chains, i: usize) -> u64 {
    chains.lock().unwrap_or_else(|e| e.into_inner())[i]
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
}

/// Every CN's highest committed height.
pub fn heights(chains: &Chains) -> Vec<u64> {
    let chains = chains.lock().unwrap_or_else(|e| e.into_inner());
    chains
        .iter()
        .map(|c| c.keys().next_back().copied().unwrap_or(0))
        .collect()
}

/// Heights where two records (CN processes) hold different blocks, with the records and
/// hashes, lowest first.
pub fn forks(chains: &Chains) -> Vec<String> {
    let chains = chains.lock().unwrap_or_else(|e| e.into_inner());
    let mut found = Vec::new();
    let heights: std::collections::BTreeSet<u64> =
        chains.iter().flat_map(|c| c.keys().copied()).collect();
    for h in heights {
        let mut seen: Option<(usize, &String)> = None;
        for (i, chain) in chains.iter().enumerate() {
            let Some(hash) = chain.get(&h) else { continue };
            match seen {
                None => seen = Some((i, hash)),
                Some((j, other)) if other != hash => {
                    found.push(format!("height {h}: record {j} {other}, record {i} {hash}"));
                    break;
                }
                Some(_) => {}
            }
        }
    }
    found
}

/// How to start one `kaon rn`.
#[derive(Debug, Clone)]
pub struct RnLaunch {
    pub genesis: PathBuf,
    pub datadir: PathBuf,
    /// Its BLS node key ([`write_node_key`] writes one).
    pub key_file: PathBuf,
    /// A reward key: the RN registers for PoSC probes and rewards.
    pub reward_key_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub rpc: SocketAddr,
    /// The CNs, `index@host:port`.
    pub cns: Vec<String>,
    /// Other RNs to dial.
    pub rns: Vec<SocketAddr>,
}

/// Starts `kaon rn` as `launch` says, logging only warnings, its output discarded.
pub fn spawn_rn(kaon: &Path, launch: &RnLaunch) -> std::io::Result<Child> {
    let mut command = child_command(kaon);
    command
        .args(["--log", "warn", "--datadir"])
        .arg(&launch.datadir)
        .arg("rn")
        .arg("--genesis")
        .arg(&launch.genesis)
        .arg("--key-file")
        .arg(&launch.key_file)
        .args(["--listen", &launch.listen.to_string()])
        .args(["--rpc", &launch.rpc.to_string()]);
    if let Some(reward) = &launch.reward_key_file {
        command.arg("--reward-key-file").arg(reward);
    }
    for cn in &launch.cns {
        command.args(["--cn", cn]);
    }
    for rn in &launch.rns {
        command.args(["--rn", &rn.to_string()]);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
}

/// Writes a fresh BLS node key (hex, mode 0600) to `path`, as `kaon keygen` does.
pub fn write_node_key(path: &Path) -> anyhow::Result<()> {
    let mut ikm = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut ikm);
    let key = SecretKey::from_seed(&ikm)?;
    super::keyfile::write_secret(path, &hex::encode(key.to_bytes()))?;
    Ok(())
}

/// Child processes, killed (SIGKILL) and reaped when dropped: an early return or a failed
/// assertion must not leave CNs and RNs running.
#[derive(Debug, Default)]
pub struct KillOnDrop(pub Vec<Child>);

impl std::ops::Deref for KillOnDrop {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                // A SIGSTOPped child dies of SIGKILL too; nothing to resume first.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Sends `signal` to a child (SIGSTOP, SIGCONT, SIGTERM).
pub fn signal(child: &Child, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) on our own child's pid with a valid signal number has no memory effects.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_lines_parse_and_other_lines_do_not() {
        assert_eq!(
            parse_committed("committed height 12 hash 0xab txs 3"),
            Some((12, "0xab".to_string()))
        );
        assert_eq!(parse_committed("committed height x hash 0xab"), None);
        assert_eq!(parse_committed("shutting down"), None);
    }

    #[test]
    fn a_different_hash_at_a_shared_height_is_a_fork() {
        let chains = new_chains(3);
        {
            let mut c = chains.lock().unwrap();
            c[0].insert(1, "a".into());
            c[1].insert(1, "a".into());
            c[2].insert(2, "b".into());
            c[0].insert(2, "b".into());
        }
        assert!(forks(&chains).is_empty());
        chains.lock().unwrap()[1].insert(2, "c".into());
        assert_eq!(
            forks(&chains),
            vec!["height 2: record 0 b, record 1 c".to_string()]
        );
    }
}
