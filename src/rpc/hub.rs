//! Fan-out of chain events to WebSocket subscriptions: one bounded broadcast channel per chain
//! that has subscribers. The node pushes without ever blocking; a subscriber that falls more
//! than the channel's capacity behind is disconnected by its session (it would otherwise miss
//! events silently), so memory stays bounded whatever clients do.

use super::types::RpcLog;
use crate::types::ChainId;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What subscribers of one chain hear.
#[derive(Debug)]
pub(crate) enum ChainEvent {
    /// A new head, already encoded as a `newHeads` result (encoded once for all subscribers).
    Head(Box<RawValue>),
    /// The logs of a new block, in order; each subscription applies its own filter.
    Logs(Vec<RpcLog>),
}

pub(crate) type EventReceiver = broadcast::Receiver<Arc<ChainEvent>>;

/// The per-chain channels.
pub(crate) struct Hub {
    capacity: usize,
    chains: Mutex<HashMap<ChainId, broadcast::Sender<Arc<ChainEvent>>>>,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            chains: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn subscribe(&self, chain: ChainId) -> EventReceiver {
        let mut chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        chains
            .entry(chain)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Chains with at least one subscriber (channels whose subscribers all left are dropped).
    pub(crate) fn subscribed_chains(&self) -> Vec<ChainId> {
        let mut chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        chains.retain(|_, sender| sender.receiver_count() > 0);
        chains.keys().copied().collect()
    }

    /// Sends the event `make` builds, if anyone listens to `chain` (nothing is built
    /// otherwise). A channel whose last subscriber left is dropped here.
    pub(crate) fn publish(&self, chain: ChainId, make: impl FnOnce() -> Option<ChainEvent>) {
        let mut chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = chains.get(&chain) else {
            return;
        };
        if sender.receiver_count() == 0 {
            chains.remove(&chain);
            return;
        }
        if let Some(event) = make() {
            // Fails only without receivers, which was just ruled out under the lock.
            let _ = sender.send(Arc::new(event));
        }
    }
}
