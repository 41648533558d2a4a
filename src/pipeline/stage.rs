//! A stage: one thread that owns its state and the receiving end of its input link.
//!
//! The thread runs the stage's handler on each item inside a tracing span named after the
//! stage, ends when its input is closed and drained, and reports how much it processed. A
//! handler error stops the stage (and, as its links close, the stages around it) and is
//! returned from [`StageHandle::join`] with the stage's name as context.

use crate::link::LinkReceiver;
use std::thread::JoinHandle;

/// The work of one stage.
pub trait Stage: Send + 'static {
    /// What arrives on the input link (usually a batch).
    type Input: Send + 'static;

    /// Stable name used for the thread, the tracing span and metrics.
    fn name(&self) -> &'static str;

    /// Handles one input item.
    fn handle(&mut self, input: Self::Input) -> anyhow::Result<()>;

    /// Runs once after the input closed and drained: flush, persist, close outputs.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a stage did before it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    pub name: &'static str,
    pub items: u64,
}

/// Handle to a running stage.
#[derive(Debug)]
pub struct StageHandle {
    name: &'static str,
    thread: JoinHandle<anyhow::Result<StageReport>>,
}

/// Exit status of a node process one of whose critical threads died.
pub const EXIT_STAGE_DIED: i32 = 70;

/// Starts `stage` on its own thread, consuming `input`; its error comes back from
/// [`StageHandle::join`].
pub fn spawn_stage<S: Stage>(
    stage: S,
    input: LinkReceiver<S::Input>,
) -> std::io::Result<StageHandle> {
    let name = stage.name();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run_stage(stage, input))?;
    Ok(StageHandle { name, thread })
}

/// Starts `stage` as a critical part of a running node: if it fails or panics, the process
/// exits (see [`spawn_critical`]). Stopping after its input closes is a normal end.
pub fn spawn_critical_stage<S: Stage>(
    stage: S,
    input: LinkReceiver<S::Input>,
) -> std::io::Result<StageHandle> {
    let name = stage.name();
    let thread = spawn_critical(name, move || run_stage(stage, input))?;
    Ok(StageHandle { name, thread })
}

fn run_stage<S: Stage>(mut stage: S, input: LinkReceiver<S::Input>) -> anyhow::Result<StageReport> {
    let name = stage.name();
    let span = tracing::info_span!("stage", name);
    let _entered = span.enter();
    let mut items = 0u64;
    while let Some(input) = input.recv() {
        stage.handle(input)?;
        items += 1;
    }
    stage.finish()?;
    tracing::debug!(items, "stage stopped");
    Ok(StageReport { name, items })
}

/// Runs `body` on a thread named `name` as a critical part of a running node. If it returns
/// an error or panics, the error is logged and the process exits with [`EXIT_STAGE_DIED`]: a
/// node missing a stage would otherwise keep its sockets open and look alive while doing
/// nothing (a remote crash that goes unnoticed).
pub fn spawn_critical<T: Send + 'static>(
    name: &'static str,
    body: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::io::Result<JoinHandle<anyhow::Result<T>>> {
    std::thread::Builder::new().name(name.to_string()).spawn(
        move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => die(name, &format!("{e:#}")),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                die(name, &format!("panicked: {why}"))
            }
        },
    )
}

fn die(name: &str, why: &str) -> ! {
    tracing::error!(stage = name, error = why, "stage died; stopping the node");
    eprintln!("kaon: stage {name} died: {why}; stopping the node");
    std::process::exit(EXIT_STAGE_DIED)
}

impl StageHandle {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the stage's thread has ended (joining it will not wait).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the stage to stop; its error or panic comes back with the stage's name.
    pub fn join(self) -> anyhow::Result<StageReport> {
        match self.thread.join() {
            Ok(result) => result.map_err(|e| e.context(format!("stage {} failed", self.name))),
            Err(_) => anyhow::bail!("stage {} panicked", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{link, LinkSender};

    struct Doubler(LinkSender<u64>);

    impl Stage for Doubler {
        type Input = u64;
        fn name(&self) -> &'static str {
            "doubler"
        }
        fn handle(&mut self, input: u64) -> anyhow::Result<()> {
            anyhow::ensure!(input != 13, "unlucky input");
            Ok(self.0.send(input * 2)?)
        }
    }

    #[test]
    fn drains_input_then_stops_and_closes_output() {
        let (in_tx, in_rx) = link("src_doubler", 4);
        let (out_tx, out_rx) = link("doubler_sink", 64);
        let handle = spawn_stage(Doubler(out_tx), in_rx).unwrap();
        for i in 0..10 {
            in_tx.send(i).unwrap();
        }
        drop(in_tx);
        let report = handle.join().unwrap();
        assert_eq!(
            report,
            StageReport {
                name: "doubler",
                items: 10
            }
        );
        let out: Vec<u64> = std::iter::from_fn(|| out_rx.recv()).collect();
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn handler_error_stops_the_stage_with_its_name() {
        let (in_tx, in_rx) = link("src_doubler", 4);
        let (out_tx, _out_rx) = link("doubler_sink", 4);
        let handle = spawn_stage(Doubler(out_tx), in_rx).unwrap();
        in_tx.send(13).unwrap();
        let err = handle.join().unwrap_err();
        assert!(
            format!("{err:#}").contains("stage doubler failed: unlucky input"),
            "{err:#}"
        );
    }
}
