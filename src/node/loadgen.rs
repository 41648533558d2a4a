//! Load generator: development accounts sending signed value transfers at a target rate,
//! spread over servicechains and CNs, with per-account nonce tracking that resynchronises from
//! committed state when transactions are lost.

use crate::crypto::hash::sha256;
use crate::crypto::tx::{address_of, Eip1559Tx, Transaction, TxKind};
use crate::exec::StateRead;
use crate::types::ChainId;
use alloy_primitives::{Address, Bytes, B256, U256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Transactions an account may have in flight before it waits for commits.
const MAX_IN_FLIGHT: u64 = 64;
/// In-flight transactions not committed for this long are presumed lost and resent.
const RESYNC_AFTER: Duration = Duration::from_secs(3);

/// A development account: deterministic key, documented derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevAccount {
    pub secret: [u8; 32],
    pub address: Address,
}

/// The `i`-th development account: secret key `sha256("kaon-devnet-account-" ‖ i)`.
pub fn dev_account(i: usize) -> DevAccount {
    let secret = sha256(format!("kaon-devnet-account-{i}").as_bytes()).0;
    // Invariant: a SHA-256 output is a valid secp256k1 key except with negligible probability,
    // and the first accounts are checked by the tests.
    let address = address_of(&secret).expect("valid development key");
    DevAccount { secret, address }
}

struct Sender {
    account: DevAccount,
    chain: ChainId,
    next_nonce: u64,
    last_progress: Instant,
    committed_nonce: u64,
}

/// Finality bookkeeping: when each transaction was submitted, and latencies once committed.
#[derive(Debug, Default)]
pub struct FinalityTracker {
    submitted: Mutex<HashMap<B256, Instant>>,
    latencies_ms: Mutex<Vec<u64>>,
}

/// Bound on transactions tracked at once (memory stays bounded if commits stall).
const MAX_TRACKED: usize = 1 << 20;

impl FinalityTracker {
    pub fn submitted(&self, hashes: impl IntoIterator<Item = B256>) {
        let mut map = self.submitted.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for h in hashes {
            if map.len() < MAX_TRACKED {
                map.insert(h, now);
            }
        }
    }

    /// Records the finality latency of every tracked transaction in `hashes`.
    pub fn finalized(&self, hashes: impl IntoIterator<Item = B256>) {
        let mut map = self.submitted.lock().unwrap_or_else(|e| e.into_inner());
        let mut lat = self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner());
        for h in hashes {
            if let Some(at) = map.remove(&h) {
                lat.push(at.elapsed().as_millis() as u64);
            }
        }
    }

    /// Latencies recorded since the last call, sorted.
    pub fn take_latencies(&self) -> Vec<u64> {
        let mut lat =
            std::mem::take(&mut *self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()));
        lat.sort_unstable();
        lat
    }
}

/// `p`-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as u64 * p / 100) as usize;
    Some(sorted[rank])
}

/// A signed EIP-1559 transfer of 1 wei from `secret`'s account to `to` on `chain`, with a fee
/// cap every development network accepts: the load generator's and `kaon chaos`'s transaction.
pub fn transfer(chain: ChainId, nonce: u64, secret: &[u8; 32], to: Address) -> Bytes {
    let tx = Transaction::Eip1559(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: 1,
        max_fee_per_gas: 1_000_000_000,
        gas_limit: crate::exec::TRANSFER_GAS,
        to: TxKind::Call(to),
        value: U256::from(1u64),
        input: Bytes::new(),
        access_list: Default::default(),
    });
    // Invariant: development keys are valid and the fields are encodable.
    tx.sign(secret).expect("signable transfer").raw().clone()
}

/// Generates transfers among `accounts` on `chains`.
pub struct LoadGen {
    senders: Vec<Sender>,
    cursor: usize,
    recipient: Address,
}

impl LoadGen {
    /// One sender per (account, chain).
    pub fn new(accounts: &[DevAccount], chains: &[ChainId]) -> Self {
        let senders = chains
            .iter()
            .flat_map(|&chain| {
                accounts.iter().map(move |a| Sender {
                    account: a.clone(),
                    chain,
                    next_nonce: 0,
                    last_progress: Instant::now(),
                    committed_nonce: 0,
                })
            })
            .collect();
        Self {
            senders,
            cursor: 0,
            recipient: Address::repeat_byte(0xee),
        }
    }

    /// Up to `count` signed transfers, round-robin over senders that are not saturated;
    /// `state` is committed state, used to learn what committed and to resend lost nonces.
    pub fn next_batch(&mut self, count: usize, state: &dyn StateRead) -> Vec<Bytes> {
        for s in &mut self.senders {
            let committed = match state.nonce(s.chain, &s.account.address) {
                Ok(nonce) => nonce,
                Err(e) => {
                    tracing::warn!(error = %e, "load generator cannot read committed nonces");
                    s.committed_nonce
                }
            };
            if committed > s.committed_nonce {
                s.committed_nonce = committed;
                s.last_progress = Instant::now();
            }
            if s.next_nonce > committed && s.last_progress.elapsed() > RESYNC_AFTER {
                s.next_nonce = committed;
                s.last_progress = Instant::now();
            }
            s.next_nonce = s.next_nonce.max(committed);
        }
        let mut out = Vec::with_capacity(count);
        let mut idle = 0;
        while out.len() < count && idle < self.senders.len() {
            let i = self.cursor % self.senders.len();
            self.cursor += 1;
            let s = &mut self.senders[i];
            if s.next_nonce - s.committed_nonce >= MAX_IN_FLIGHT {
                idle += 1;
                continue;
            }
            idle = 0;
            let signed = transfer(s.chain, s.next_nonce, &s.account.secret, self.recipient);
            s.next_nonce += 1;
            out.push(signed);
        }
        out
    }
}
