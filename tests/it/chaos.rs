//! `kaon chaos`, bounded: a region of separate processes (4 CNs, 1 RN) under signed load
//! through JSON-RPC, one CN killed with SIGKILL and restarted after a downtime, one paused
//! with SIGSTOP … SIGCONT. Every acknowledged transaction must have a receipt at the end, the
//! CNs must agree at every height they share, and the summary line must say so.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KAON: &str = env!("CARGO_BIN_EXE_kaon");

/// The run is 20 s of load plus start, drain and checks; past this it is hung and is killed
/// (its own children die with it: they are started with a parent-death signal).
const RUN_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn a_killed_and_a_paused_cn_lose_nothing_acknowledged_and_fork_nothing() {
    let _turn = crate::processes_turn();
    let run = Command::new(KAON)
        .args([
            "chaos",
            "--seed",
            "7",
            "--seconds",
            "20",
            "--rate",
            "30",
            "--rns",
            "1",
            "--faults",
            "down,pause",
            // The test asserts safety (nothing lost, no fork); the liveness bounds are loosened
            // for a debug build sharing the machine with the rest of the suite.
            "--stall-bound",
            "30",
            "--catch-up-bound",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaon chaos");
    let run = output_within(run, RUN_DEADLINE);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        run.status.success(),
        "kaon chaos failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    let summary = parse_summary(last).unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert_eq!(summary.lost, 0, "{stdout}");
    assert_eq!(summary.forks, 0, "{stdout}");
    assert!(summary.faults >= 2, "{stdout}");
    assert!(summary.acknowledged > 0, "{stdout}");
}

/// The child's exit status and output, killing it if it runs past `deadline`.
fn output_within(mut child: Child, deadline: Duration) -> Output {
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll kaon chaos") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        panic!(
            "kaon chaos still running after {deadline:?}, killed:\n{}\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The counts of `chaos: <f> faults, <a> acknowledged, <l> lost, <k> forks, …`.
struct Summary {
    faults: u64,
    acknowledged: u64,
    lost: u64,
    forks: u64,
}

fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("chaos: ")?;
    let mut counts = rest.split(", ").map(|part| part.split_once(' '));
    let mut next = |word: &str| -> Option<u64> {
        let (n, w) = counts.next()??;
        (w == word).then(|| n.parse().ok())?
    };
    Some(Summary {
        faults: next("faults")?,
        acknowledged: next("acknowledged")?,
        lost: next("lost")?,
        forks: next("forks")?,
    })
}
