//! Slots for connections anyone can open: ranger nodes on a CN, RN peers on an RN.
//!
//! A node key costs nothing to make, so a bound on the total alone lets one host (or one key,
//! reconnecting) hold every slot. Each admission is bounded three ways — in total, per node key
//! and per remote IP address — and the slot is released when its [`Slot`] drops, however the
//! connection ends. The idle half of the defence is [`super::PeerScore::idle_for`]: a peer
//! that holds a slot must keep using it.

use crate::crypto::bls::PublicKeyBytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Connections one node key may hold on one node: one, and one more so that a reconnect is
/// not refused while the node has not yet noticed the old connection died.
pub const DEFAULT_MAX_PER_KEY: usize = 2;
/// Connections one IP address may hold on one node (several RNs may share a host or a NAT).
pub const DEFAULT_MAX_PER_ADDRESS: usize = 8;

/// The three bounds of one kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_key: usize,
    pub per_address: usize,
}

/// Why a connection got no slot.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    #[error("all {0} slots are taken")]
    Full(usize),
    #[error("this key already holds {0} connections")]
    Key(usize),
    #[error("this address already holds {0} connections")]
    Address(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_key: HashMap<PublicKeyBytes, usize>,
    by_address: HashMap<IpAddr, usize>,
}

/// Admission for one kind of connection.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    key: PublicKeyBytes,
    address: IpAddr,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counters only change together under the lock: a poisoned guard is still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `key` connecting from `address`, or why not.
    pub fn admit(self: &Arc<Self>, key: PublicKeyBytes, address: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.counts();
        let limits = self.limits;
        if counts.total >= limits.total {
            return Err(Refusal::Full(limits.total));
        }
        if counts.by_key.get(&key).copied().unwrap_or(0) >= limits.per_key {
            return Err(Refusal::Key(limits.per_key));
        }
        if counts.by_address.get(&address).copied().unwrap_or(0) >= limits.per_address {
            return Err(Refusal::Address(limits.per_address));
        }
        counts.total += 1;
        *counts.by_key.entry(key).or_default() += 1;
        *counts.by_address.entry(address).or_default() += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            key,
            address,
        })
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.counts().total
    }
}

/// Decrements `key`'s count in `map`, forgetting it at zero (the maps never outgrow the slots).
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.total -= 1;
        release(&mut counts.by_key, &self.key);
        release(&mut counts.by_address, &self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKeyBytes {
        PublicKeyBytes([n; 48])
    }

    #[test]
    fn each_bound_refuses_on_its_own_and_a_dropped_slot_is_free_again() {
        let admission = Admission::new(Limits {
            total: 5,
            per_key: 2,
            per_address: 3,
        });
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = admission.admit(key(1), a).unwrap();
        let _second = admission.admit(key(1), b).unwrap();
        assert_eq!(admission.admit(key(1), b).unwrap_err(), Refusal::Key(2));
        let _third = admission.admit(key(2), a).unwrap();
        let _fourth = admission.admit(key(3), a).unwrap();
        assert_eq!(admission.admit(key(4), a).unwrap_err(), Refusal::Address(3));
        let _fifth = admission.admit(key(4), b).unwrap();
        assert_eq!(admission.admit(key(5), b).unwrap_err(), Refusal::Full(5));
        assert_eq!(admission.held(), 5, "refusals take nothing");
        drop(first);
        assert_eq!(admission.held(), 4);
        let _again = admission.admit(key(1), a).unwrap();
    }
}
