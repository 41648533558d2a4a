//! One way to run and stop a node's parts, shared by consensus nodes
//! ([`super::topology::CnNode`]) and ranger nodes ([`crate::rn::RnHandle`]).
//!
//! A node registers its long-running threads here as it assembles itself; each is critical (a
//! thread that fails or panics stops the process loudly, [`super::spawn_critical`]). Stopping
//! is the same for every node kind:
//!
//! ```text
//!  shutdown ─► stop hooks, in order (stop flags, prober aborted, network closed)
//!           ─► every thread joined, in the order registered (each ends once its input closes)
//!           ─► stopped hooks (a network the threads used to the end closed)
//!           ─► the node's runtime, if it is its own, shut down last
//! ```
//!
//! Both node kinds run on a [`NodeRuntime`] their caller chooses: one of their own, or the
//! process's (a `kaon cn` process, a devnet's CNs) shared with other parts that outlive them.
//!
//! Dropping a supervisor that was not shut down runs the same hooks, waits a bounded while for
//! its threads (one may be held up by a sender its owner still has) and logs what is left.
//! May import: `link`, `pipeline::stage` (below it); nothing above `pipeline`.

use super::stage::{spawn_critical, spawn_critical_stage, Stage, StageHandle};
use crate::link::LinkReceiver;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a node's own runtime gets to finish its tasks at shutdown.
const RUNTIME_GRACE: Duration = Duration::from_secs(2);
/// How long a dropped supervisor waits for its threads before leaving them detached.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// Where a node's network and async tasks run.
pub enum NodeRuntime {
    /// Built for this node alone: shut down last when it stops.
    Own(tokio::runtime::Runtime),
    /// The process's, shared with parts that outlive the node: left running when it stops.
    Shared(tokio::runtime::Handle),
}

impl NodeRuntime {
    /// A multi-threaded runtime of the node's own, `workers` threads named `name`.
    pub fn own(name: &str, workers: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .map(Self::Own)
    }

    /// Where to spawn the node's tasks, whoever owns the runtime.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        match self {
            Self::Own(runtime) => runtime.handle(),
            Self::Shared(handle) => handle,
        }
    }
}

/// A thread of a running node.
enum Part {
    Thread(&'static str, JoinHandle<anyhow::Result<()>>),
    Stage(StageHandle),
}

impl Part {
    fn name(&self) -> &'static str {
        match self {
            Part::Thread(name, _) => name,
            Part::Stage(stage) => stage.name(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Part::Thread(_, thread) => thread.is_finished(),
            Part::Stage(stage) => stage.is_finished(),
        }
    }

    fn join(self) -> anyhow::Result<()> {
        match self {
            Part::Thread(name, thread) => match thread.join() {
                Ok(result) => result.map_err(|e| e.context(format!("{name} failed"))),
                Err(_) => Err(anyhow::anyhow!("{name} panicked")),
            },
            Part::Stage(stage) => stage.join().map(|_| ()),
        }
    }
}

/// The running parts of one node and the one path that stops them.
pub struct Supervisor {
    node: String,
    stops: Vec<Box<dyn FnOnce() + Send>>,
    stopped_hooks: Vec<Box<dyn FnOnce() + Send>>,
    parts: Vec<Part>,
    runtime: Option<NodeRuntime>,
    stopped: bool,
}

impl Supervisor {
    /// An empty supervisor for the node called `node` in logs and errors ("CN 2", "RN").
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            stops: Vec::new(),
            stopped_hooks: Vec::new(),
            parts: Vec::new(),
            runtime: None,
            stopped: false,
        }
    }

    /// Runs `body` on a critical thread named `name`, joined at shutdown.
    pub fn spawn(
        &mut self,
        name: &'static str,
        body: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let thread = spawn_critical(name, body)?;
        self.parts.push(Part::Thread(name, thread));
        Ok(())
    }

    /// Starts `stage` on a critical thread reading `input`, joined at shutdown.
    pub fn stage<S: Stage>(
        &mut self,
        stage: S,
        input: LinkReceiver<S::Input>,
    ) -> std::io::Result<()> {
        self.parts
            .push(Part::Stage(spawn_critical_stage(stage, input)?));
        Ok(())
    }

    /// Runs `stop` first at shutdown (after the hooks registered before it).
    pub fn on_stop(&mut self, stop: impl FnOnce() + Send + 'static) {
        self.stops.push(Box::new(stop));
    }

    /// Runs `hook` at shutdown once every thread has been joined (before the runtime goes).
    pub fn on_stopped(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.stopped_hooks.push(Box::new(hook));
    }

    /// The runtime the node's network and tasks run on: shut down last if it is the node's
    /// own.
    pub fn run_on(&mut self, runtime: NodeRuntime) {
        self.runtime = Some(runtime);
    }

    /// The threads registered so far, by name, in join order.
    pub fn names(&self) -> Vec<&'static str> {
        self.parts.iter().map(Part::name).collect()
    }

    /// Stops the node: hooks, then every thread joined, then its runtime if it is its own.
    /// The first failure is returned (with the thread's name); every part is stopped
    /// regardless.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        self.run_hooks();
        let mut first_error = None;
        for part in self.parts.drain(..) {
            if let Err(e) = part.join() {
                first_error.get_or_insert(e.context(format!("{} stopped badly", self.node)));
            }
        }
        self.release_runtime();
        first_error.map_or(Ok(()), Err)
    }

    fn run_hooks(&mut self) {
        self.stopped = true;
        for stop in self.stops.drain(..) {
            stop();
        }
    }

    fn release_runtime(&mut self) {
        for hook in self.stopped_hooks.drain(..) {
            hook();
        }
        if let Some(NodeRuntime::Own(runtime)) = self.runtime.take() {
            runtime.shutdown_timeout(RUNTIME_GRACE);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.run_hooks();
        let deadline = std::time::Instant::now() + DROP_GRACE;
        while !self.parts.iter().all(Part::is_finished) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut detached = false;
        for part in self.parts.drain(..) {
            let name = part.name();
            if !part.is_finished() {
                detached = true;
                tracing::warn!(node = %self.node, thread = name, "still running when its node was dropped; left detached");
            } else if let Err(e) = part.join() {
                tracing::error!(node = %self.node, error = %format!("{e:#}"), "node stopped with an error");
            }
        }
        if detached {
            // What a detached thread still uses stays up: no network closed under it, and the
            // runtime is leaked rather than shut down.
            self.stopped_hooks.clear();
            if let Some(NodeRuntime::Own(runtime)) = self.runtime.take() {
                std::mem::forget(runtime);
            }
            return;
        }
        self.release_runtime();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn shutdown_runs_the_hooks_in_order_then_joins_every_thread() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut supervisor = Supervisor::new("test node");
        for name in ["first", "second"] {
            let (stop, order) = (Arc::clone(&stop), Arc::clone(&order));
            supervisor
                .spawn(name, move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    order.lock().unwrap().push(name);
                    Ok(())
                })
                .unwrap();
        }
        let hooks = Arc::new(AtomicUsize::new(0));
        for expected in 0..2 {
            let (hooks, stop) = (Arc::clone(&hooks), Arc::clone(&stop));
            supervisor.on_stop(move || {
                assert_eq!(
                    hooks.fetch_add(1, Ordering::SeqCst),
                    expected,
                    "hooks in order"
                );
                if expected == 1 {
                    stop.store(true, Ordering::Release);
                }
            });
        }
        assert_eq!(supervisor.names(), vec!["first", "second"]);
        supervisor.shutdown().unwrap();
        assert_eq!(hooks.load(Ordering::SeqCst), 2);
        let mut stopped = order.lock().unwrap().clone();
        stopped.sort();
        assert_eq!(stopped, vec!["first", "second"], "every thread joined");
    }

    #[test]
    fn a_supervisor_dropped_without_shutdown_still_stops_its_parts() {
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        {
            let mut supervisor = Supervisor::new("dropped node");
            let (flag, done) = (Arc::clone(&stop), Arc::clone(&ended));
            supervisor
                .spawn("worker", move || {
                    while !flag.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    done.store(true, Ordering::Release);
                    Ok(())
                })
                .unwrap();
            let flag = Arc::clone(&stop);
            supervisor.on_stop(move || flag.store(true, Ordering::Release));
        }
        assert!(ended.load(Ordering::Acquire), "the drop joined the thread");
    }
}
