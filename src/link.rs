//! Bounded crossbeam channels that count what passes through them.
//!
//! The counters are what a CN operator needs to find the bottleneck stage: items sent and
//! received, the current depth against the capacity, and how often a sender found the link full
//! and had to wait (backpressure).

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Counters of one link, shared by both ends and by telemetry.
#[derive(Debug)]
pub struct LinkStats {
    name: &'static str,
    capacity: usize,
    sent: AtomicU64,
    received: AtomicU64,
    backpressure: AtomicU64,
}

/// A point-in-time copy of a link's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub name: &'static str,
    pub capacity: usize,
    pub depth: usize,
    pub sent: u64,
    pub received: u64,
    /// Sends that found the link full and waited.
    pub backpressure: u64,
}

/// The receiving side hung up: the downstream stage has stopped.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("link {0} is closed: its consumer stopped")]
pub struct LinkClosed(pub &'static str);

/// Sending end of a link; clone it for several producers.
#[derive(Debug)]
pub struct LinkSender<T> {
    inner: Sender<T>,
    stats: Arc<LinkStats>,
}

impl<T> Clone for LinkSender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stats: Arc::clone(&self.stats),
        }
    }
}

/// Receiving end of a link, owned by exactly one stage.
#[derive(Debug)]
pub struct LinkReceiver<T> {
    inner: Receiver<T>,
    stats: Arc<LinkStats>,
}

/// Creates a link named `producer_consumer` holding at most `capacity` items.
pub fn link<T>(name: &'static str, capacity: usize) -> (LinkSender<T>, LinkReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let stats = Arc::new(LinkStats {
        name,
        capacity,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        backpressure: AtomicU64::new(0),
    });
    (
        LinkSender {
            inner: tx,
            stats: Arc::clone(&stats),
        },
        LinkReceiver { inner: rx, stats },
    )
}

impl<T> LinkSender<T> {
    /// Sends, waiting while the link is full (backpressure is counted, never dropped).
    pub fn send(&self, item: T) -> Result<(), LinkClosed> {
        let item = match self.inner.try_send(item) {
            Ok(()) => return self.sent(),
            Err(TrySendError::Disconnected(_)) => return Err(LinkClosed(self.stats.name)),
            Err(TrySendError::Full(item)) => item,
        };
        self.stats.backpressure.fetch_add(1, Ordering::Relaxed);
        self.inner
            .send(item)
            .map_err(|_| LinkClosed(self.stats.name))?;
        self.sent()
    }

    /// Sends only if there is room; gives the item back otherwise. For producers that must
    /// never block (network ingress), which then shed load with a counted reason.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.inner.try_send(item)?;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sent(&self) -> Result<(), LinkClosed> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }
}

impl<T> LinkReceiver<T> {
    /// Waits for the next item; `None` once every sender is gone and the link is drained.
    pub fn recv(&self) -> Option<T> {
        let item = self.inner.recv().ok()?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(item)
    }

    /// Waits at most `timeout`; `Err(true)` when the link is closed and drained, `Err(false)`
    /// on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, bool> {
        match self.inner.recv_timeout(timeout) {
            Ok(item) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                Ok(item)
            }
            Err(RecvTimeoutError::Disconnected) => Err(true),
            Err(RecvTimeoutError::Timeout) => Err(false),
        }
    }

    /// Takes everything queued right now without waiting (for batching stages).
    pub fn drain_ready(&self, max: usize) -> Vec<T> {
        let items: Vec<T> = self.inner.try_iter().take(max).collect();
        self.stats
            .received
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        items
    }

    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Items queued now.
    pub fn depth(&self) -> usize {
        self.inner.len()
    }
}

impl LinkStats {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A copy of the counters. Depth is derived as sent − received, so telemetry needs no
    /// handle on the channel itself (and never keeps it open).
    pub fn snapshot(&self) -> LinkSnapshot {
        let received = self.received.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        LinkSnapshot {
            name: self.name,
            capacity: self.capacity,
            depth: sent.saturating_sub(received) as usize,
            sent,
            received,
            backpressure: self.backpressure.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_items_and_depth() {
        let (tx, rx) = link::<u32>("a_b", 2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let producer = std::thread::spawn(move || tx.send(3));
        // The third send can only complete once we make room; it must count as backpressure.
        assert_eq!(rx.recv(), Some(1));
        producer.join().unwrap().unwrap();
        assert_eq!(rx.drain_ready(10), vec![2, 3]);
        assert_eq!(rx.recv(), None, "closed once the producer is gone");
        let snap = rx.stats().snapshot();
        // The refused try_send is not counted as sent.
        assert_eq!(
            (snap.sent, snap.received, snap.depth, snap.capacity),
            (3, 3, 0, 2)
        );
    }

    #[test]
    fn send_after_consumer_left_is_an_error() {
        let (tx, rx) = link::<u8>("x_y", 1);
        drop(rx);
        assert_eq!(tx.send(1), Err(LinkClosed("x_y")));
    }
}
