//! The transaction pool: nonce-ordered runs per sender, best fee first across senders, the
//! refusals a client sees, replacement and eviction rules, commits, and a model-checked
//! property test of the pool's bookkeeping.

use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::crypto::tx::{address_of, Eip1559Tx, LegacyTx, RecoveredTx, Transaction, TxKind};
use kaon::mempool::{Mempool, MempoolConfig, MempoolError};
use kaon::types::ChainId;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const CHAIN: ChainId = ChainId(1001);
const OTHER_CHAIN: ChainId = ChainId(1002);

/// A signed EIP-1559 transfer; `value` only varies the hash (same slot, different tx).
fn signed(secret: u8, chain: ChainId, nonce: u64, fee: u128, value: u64) -> RecoveredTx {
    let tx = Transaction::Eip1559(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: 1,
        max_fee_per_gas: fee,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(0x42)),
        value: U256::from(value),
        input: Bytes::new(),
        access_list: Default::default(),
    });
    RecoveredTx::recover(tx.sign(&[secret; 32]).expect("valid secret")).expect("recoverable")
}

fn tx(secret: u8, nonce: u64, fee: u128) -> RecoveredTx {
    signed(secret, CHAIN, nonce, fee, 0)
}

fn hash(tx: &RecoveredTx) -> B256 {
    tx.tx().hash()
}

fn sender(secret: u8) -> Address {
    address_of(&[secret; 32]).expect("valid secret")
}

fn hashes(txs: &[RecoveredTx]) -> Vec<B256> {
    txs.iter().map(hash).collect()
}

fn pool_with(config: MempoolConfig) -> Mempool {
    Mempool::new(config, [CHAIN, OTHER_CHAIN])
}

fn pool() -> Mempool {
    pool_with(MempoolConfig::default())
}

#[test]
fn ready_is_contiguous_runs_from_the_account_nonce_best_fee_first() {
    let mut pool = pool();
    // Sender 1: account nonce 3, nonces 3, 4, 5 and then a gap before 7.
    let a: Vec<RecoveredTx> = [3, 4, 5, 7].iter().map(|&n| tx(1, n, 50)).collect();
    for t in &a {
        pool.insert(t.clone(), 3).unwrap();
    }
    // Sender 2: a well paying head and a cheap follower.
    let b = [tx(2, 0, 80), tx(2, 1, 10)];
    for t in &b {
        pool.insert(t.clone(), 0).unwrap();
    }
    // Sender 3 pays the most but its run starts after a gap: never ready.
    let c = tx(3, 1, 1_000);
    pool.insert(c.clone(), 0).unwrap();
    assert_eq!(pool.len(), 7);

    let ready = pool.ready(CHAIN, 100);
    assert_eq!(
        hashes(&ready),
        hashes(&[
            b[0].clone(),
            a[0].clone(),
            a[1].clone(),
            a[2].clone(),
            b[1].clone()
        ]),
        "best head first, each sender in nonce order, nothing after a gap"
    );
    // `ready` does not drain.
    assert_eq!(pool.len(), 7);
    assert_eq!(hashes(&pool.ready(CHAIN, 100)), hashes(&ready));
    // Capped at `max`, keeping the best prefix.
    assert_eq!(hashes(&pool.ready(CHAIN, 2)), hashes(&ready[..2]));
    assert!(pool.ready(CHAIN, 0).is_empty());
    assert!(pool.ready(OTHER_CHAIN, 100).is_empty());
    assert!(pool.ready(ChainId(9), 100).is_empty());

    // Filling the gap makes the rest of sender 1's run ready, right after nonce 5.
    let a6 = tx(1, 6, 50);
    pool.insert(a6.clone(), 3).unwrap();
    let ready = pool.ready(CHAIN, 100);
    assert_eq!(
        hashes(&ready),
        hashes(&[
            b[0].clone(),
            a[0].clone(),
            a[1].clone(),
            a[2].clone(),
            a6,
            a[3].clone(),
            b[1].clone()
        ])
    );
    // Filling sender 3's gap puts its run first: its head (90) beats sender 2's 80, and its
    // 1 000 follows at once.
    let c0 = tx(3, 0, 90);
    pool.insert(c0.clone(), 0).unwrap();
    let ready = pool.ready(CHAIN, 3);
    assert_eq!(hashes(&ready), hashes(&[c0, c, b[0].clone()]));
}

#[test]
fn ready_never_returns_a_nonce_below_the_account_nonce_or_twice() {
    let mut pool = pool();
    for n in 0..6 {
        pool.insert(tx(1, n, 10 + u128::from(n)), 0).unwrap();
        pool.insert(tx(2, n, 60 - u128::from(n)), 0).unwrap();
    }
    let ready = pool.ready(CHAIN, 100);
    assert_eq!(ready.len(), 12);
    let mut next: HashMap<Address, u64> = HashMap::new();
    for t in &ready {
        let expected = next.entry(t.sender()).or_insert(0);
        assert_eq!(t.tx().nonce(), *expected, "nonces of one sender in order");
        *expected += 1;
    }
    // Fees are per transaction; sender 2's whole run (60..55) beats sender 1's (10..15).
    assert!(ready[..6].iter().all(|t| t.sender() == sender(2)));
}

#[test]
fn refusals_name_their_reason() {
    let mut pool = pool_with(MempoolConfig {
        max_txs: 100,
        max_per_account: 2,
        max_queued_per_account: 5,
        ..MempoolConfig::default()
    });
    assert_eq!(
        pool.insert(tx(1, 2, 10), 3),
        Err(MempoolError::NonceTooLow {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        pool.insert(tx(1, 8, 10), 3),
        Err(MempoolError::NonceTooHigh {
            expected: 3,
            got: 8,
            limit: 5
        })
    );
    // Nonces up to the pending run's end + max_queued_per_account - 1 are queued.
    pool.insert(tx(1, 7, 10), 3).unwrap();
    // The pool remembers the account nonce it learned, even if a caller passes an older one.
    assert_eq!(
        pool.insert(tx(1, 2, 10), 0),
        Err(MempoolError::NonceTooLow {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        pool.insert(signed(1, ChainId(7), 3, 10, 0), 3),
        Err(MempoolError::UnknownChain(ChainId(7)))
    );
    let unprotected = Transaction::Legacy(LegacyTx {
        chain_id: None,
        nonce: 3,
        gas_price: 10,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(0x42)),
        value: U256::ZERO,
        input: Bytes::new(),
    });
    let unprotected = RecoveredTx::recover(unprotected.sign(&[1; 32]).unwrap()).unwrap();
    assert_eq!(
        pool.insert(unprotected, 3),
        Err(MempoolError::MissingChainId)
    );

    let t = tx(1, 3, 10);
    pool.insert(t.clone(), 3).unwrap();
    assert_eq!(pool.insert(t, 3), Err(MempoolError::AlreadyKnown));
    assert_eq!(
        pool.insert(tx(1, 4, 10), 3),
        Err(MempoolError::AccountFull(2))
    );
    // A full account may still replace one of its transactions.
    pool.insert(tx(1, 3, 11), 3).unwrap();
    // The limit is per sender and per chain.
    pool.insert(tx(2, 0, 10), 0).unwrap();
    pool.insert(signed(1, OTHER_CHAIN, 0, 10, 0), 0).unwrap();
    assert_eq!(pool.len(), 4);
}

#[test]
fn replacement_needs_a_ten_percent_higher_fee_cap() {
    let mut pool = pool();
    let old = tx(1, 0, 100);
    pool.insert(old.clone(), 0).unwrap();
    let underpriced = signed(1, CHAIN, 0, 109, 1);
    assert_eq!(
        pool.insert(underpriced.clone(), 0),
        Err(MempoolError::ReplacementUnderpriced { needed: 110 })
    );
    assert!(pool.get(&hash(&underpriced)).is_none());
    assert_eq!(hashes(&pool.ready(CHAIN, 10)), vec![hash(&old)]);

    let new = signed(1, CHAIN, 0, 110, 2);
    pool.insert(new.clone(), 0).unwrap();
    assert_eq!(pool.len(), 1);
    assert_eq!(hashes(&pool.ready(CHAIN, 10)), vec![hash(&new)]);
    assert!(pool.get(&hash(&old)).is_none());
    assert_eq!(pool.get(&hash(&new)), Some(&new));

    // The bar moves with the pooled transaction, and the old one cannot come back cheaply.
    assert_eq!(
        pool.insert(old, 0),
        Err(MempoolError::ReplacementUnderpriced { needed: 121 })
    );
    // Tiny fee caps still need a strictly higher one.
    let cheap = tx(2, 0, 5);
    pool.insert(cheap, 0).unwrap();
    assert_eq!(
        pool.insert(signed(2, CHAIN, 0, 5, 1), 0),
        Err(MempoolError::ReplacementUnderpriced { needed: 6 })
    );
    pool.insert(signed(2, CHAIN, 0, 6, 1), 0).unwrap();
    assert_eq!(pool.len(), 2);
}

#[test]
fn replacement_of_a_huge_fee_cap_does_not_overflow() {
    let mut pool = pool();
    pool.insert(tx(1, 0, u128::MAX), 0).unwrap();
    let result = pool.insert(signed(1, CHAIN, 0, u128::MAX, 1), 0);
    assert!(
        matches!(result, Err(MempoolError::ReplacementUnderpriced { .. })),
        "got {result:?}"
    );
    pool.insert(tx(2, 0, u128::MAX / 5), 0).unwrap();
    let result = pool.insert(signed(2, CHAIN, 0, u128::MAX / 5 + 1, 1), 0);
    assert!(
        matches!(result, Err(MempoolError::ReplacementUnderpriced { .. })),
        "got {result:?}"
    );
    assert_eq!(pool.len(), 2);
}

#[test]
fn a_full_pool_refuses_cheap_transactions_and_evicts_for_better_ones() {
    let mut pool = pool_with(MempoolConfig {
        max_txs: 4,
        ..MempoolConfig::default()
    });
    let rich = [tx(1, 0, 50), tx(1, 1, 50)];
    // The cheapest sender, on the other chain: the limit is across every chain.
    let poor = [
        signed(2, OTHER_CHAIN, 0, 20, 0),
        signed(2, OTHER_CHAIN, 1, 20, 0),
    ];
    for t in rich.iter().chain(&poor) {
        pool.insert(t.clone(), 0).unwrap();
    }
    assert_eq!(pool.len(), 4);

    assert_eq!(pool.insert(tx(3, 0, 5), 0), Err(MempoolError::PoolFull));
    // Paying the same as the cheapest is not enough to evict it.
    assert_eq!(pool.insert(tx(3, 0, 20), 0), Err(MempoolError::PoolFull));
    assert_eq!(pool.len(), 4);

    let better = tx(3, 0, 30);
    pool.insert(better.clone(), 0).unwrap();
    assert_eq!(pool.len(), 4, "one in, one out");
    assert!(
        pool.get(&hash(&poor[1])).is_none(),
        "the cheapest sender's highest nonce goes"
    );
    assert!(pool.get(&hash(&poor[0])).is_some(), "its lower nonce stays");
    assert!(rich.iter().all(|t| pool.get(&hash(t)).is_some()));
    assert_eq!(pool.get(&hash(&better)), Some(&better));
    assert_eq!(hashes(&pool.ready(OTHER_CHAIN, 10)), vec![hash(&poor[0])]);

    // Next eviction takes the remaining cheapest: the 20 on the other chain.
    pool.insert(tx(4, 0, 40), 0).unwrap();
    assert_eq!(pool.len(), 4);
    assert!(pool.get(&hash(&poor[0])).is_none());
    assert!(pool.ready(OTHER_CHAIN, 10).is_empty());
    assert_eq!(pool.ready(CHAIN, 10).len(), 4);
    // Now the cheapest pays 30: a 30 cannot get in, a replacement still can (no growth).
    assert_eq!(pool.insert(tx(5, 0, 30), 0), Err(MempoolError::PoolFull));
    pool.insert(signed(3, CHAIN, 0, 33, 1), 0).unwrap();
    assert_eq!(pool.len(), 4);
}

#[test]
fn a_refused_transaction_leaves_no_trace() {
    let mut pool = Mempool::new(
        MempoolConfig {
            max_txs: 1,
            ..MempoolConfig::default()
        },
        [CHAIN, OTHER_CHAIN],
    );
    pool.insert(tx(1, 0, 100), 0).unwrap();
    assert_eq!(
        pool.insert(signed(2, OTHER_CHAIN, 0, 1, 0), 0),
        Err(MempoolError::PoolFull)
    );
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.active_chains(), vec![CHAIN]);
}

#[test]
fn eviction_never_strands_the_incoming_transaction_behind_a_gap() {
    let mut pool = pool_with(MempoolConfig {
        max_txs: 2,
        ..MempoolConfig::default()
    });
    pool.insert(tx(1, 0, 100), 0).unwrap();
    pool.insert(tx(2, 0, 1), 0).unwrap();
    // The only cheaper victim is the sender's own nonce 0: evicting it would strand nonce 1
    // behind a gap, so the pool refuses instead.
    let stranded = tx(2, 1, 50);
    assert_eq!(
        pool.insert(stranded.clone(), 0),
        Err(MempoolError::PoolFull)
    );
    assert_eq!(pool.len(), 2);
    assert!(!hashes(&pool.ready(CHAIN, 10)).contains(&hash(&stranded)));
    // Paying more than another sender's transaction evicts that one, and the incoming
    // transaction follows its own nonce 0 in the ready run.
    let next = tx(2, 1, 200);
    pool.insert(next.clone(), 0).unwrap();
    let ready = hashes(&pool.ready(CHAIN, 10));
    assert_eq!(ready, vec![hash(&tx(2, 0, 1)), hash(&next)]);
}

#[test]
fn committed_drops_transactions_below_the_next_nonce() {
    let mut pool = pool();
    let run: Vec<RecoveredTx> = (0..5).map(|n| tx(1, n, 10)).collect();
    for t in &run {
        pool.insert(t.clone(), 0).unwrap();
    }
    let other = tx(2, 0, 10);
    pool.insert(other.clone(), 0).unwrap();
    let elsewhere = signed(1, OTHER_CHAIN, 0, 10, 0);
    pool.insert(elsewhere.clone(), 0).unwrap();
    assert_eq!(pool.len(), 7);

    pool.committed(CHAIN, sender(1), 3);
    assert_eq!(pool.len(), 4);
    for t in &run[..3] {
        assert!(pool.get(&hash(t)).is_none());
    }
    for t in &run[3..] {
        assert_eq!(pool.get(&hash(t)), Some(t));
    }
    // Other senders and the same sender on another chain are untouched.
    assert_eq!(pool.get(&hash(&other)), Some(&other));
    assert_eq!(pool.get(&hash(&elsewhere)), Some(&elsewhere));
    let ready: Vec<B256> = pool
        .ready(CHAIN, 10)
        .iter()
        .filter(|t| t.sender() == sender(1))
        .map(hash)
        .collect();
    assert_eq!(
        ready,
        hashes(&run[3..]),
        "the run now starts at the new nonce"
    );
    // Committed nonces are refused even if a caller's state is stale.
    assert_eq!(
        pool.insert(tx(1, 2, 99), 0),
        Err(MempoolError::NonceTooLow {
            expected: 3,
            got: 2
        })
    );

    // A commit for a chain or sender the pool does not hold changes nothing.
    pool.committed(ChainId(9), sender(1), 100);
    pool.committed(CHAIN, sender(7), 100);
    assert_eq!(pool.len(), 4);

    pool.committed(CHAIN, sender(1), 10);
    pool.committed(CHAIN, sender(2), 1);
    assert_eq!(pool.len(), 1);
    assert!(pool.ready(CHAIN, 10).is_empty());
    assert_eq!(pool.active_chains(), vec![OTHER_CHAIN]);
    pool.committed(OTHER_CHAIN, sender(1), 1);
    assert!(pool.is_empty());
    assert!(pool.active_chains().is_empty());
}

#[test]
fn get_finds_pooled_transactions_only() {
    let mut pool = pool();
    let a = tx(1, 0, 10);
    let b = signed(2, OTHER_CHAIN, 4, 10, 0);
    pool.insert(a.clone(), 0).unwrap();
    pool.insert(b.clone(), 0).unwrap();
    assert_eq!(pool.get(&hash(&a)), Some(&a));
    assert_eq!(pool.get(&hash(&b)), Some(&b));
    assert_eq!(
        pool.get(&hash(&b)).map(RecoveredTx::sender),
        Some(sender(2))
    );
    assert!(pool.get(&B256::repeat_byte(0xab)).is_none());
    assert!(pool.get(&hash(&tx(1, 1, 10))).is_none());
}

#[test]
fn remove_by_hash_drops_one_transaction_and_leaves_the_rest_waiting() {
    let mut pool = pool();
    let (a0, a1, b0) = (tx(1, 0, 10), tx(1, 1, 10), tx(2, 0, 10));
    for t in [&a0, &a1, &b0] {
        pool.insert(t.clone(), 0).unwrap();
    }
    pool.remove_by_hash(&hash(&a0));
    pool.remove_by_hash(&B256::repeat_byte(0xab));
    assert_eq!(pool.len(), 2);
    assert!(pool.get(&hash(&a0)).is_none());
    // a1 waits behind the gap; b0 is ready.
    assert_eq!(hashes(&pool.ready(CHAIN, 10)), vec![hash(&b0)]);
    // The same nonce can come back.
    pool.insert(a0.clone(), 0).unwrap();
    assert_eq!(pool.ready(CHAIN, 10).len(), 3);
}

#[test]
fn active_chains_lists_only_chains_with_transactions() {
    let third = ChainId(1003);
    let mut pool = Mempool::new(MempoolConfig::default(), [third, OTHER_CHAIN, CHAIN]);
    assert!(pool.active_chains().is_empty());
    pool.insert(signed(1, OTHER_CHAIN, 0, 10, 0), 0).unwrap();
    assert_eq!(pool.active_chains(), vec![OTHER_CHAIN]);
    // A transaction behind a gap still makes its chain active (it is pooled).
    pool.insert(signed(1, third, 5, 10, 0), 0).unwrap();
    pool.insert(tx(2, 0, 10), 0).unwrap();
    assert_eq!(pool.active_chains(), vec![CHAIN, OTHER_CHAIN, third]);
    // Refusals do not activate a chain.
    assert_eq!(
        pool.insert(signed(3, ChainId(4), 0, 10, 0), 0),
        Err(MempoolError::UnknownChain(ChainId(4)))
    );
    pool.committed(OTHER_CHAIN, sender(1), 1);
    assert_eq!(pool.active_chains(), vec![CHAIN, third]);
    pool.committed(third, sender(1), 6);
    pool.committed(CHAIN, sender(2), 1);
    assert!(pool.active_chains().is_empty());
    assert!(pool.is_empty());
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Insert {
        secret: u8,
        other_chain: bool,
        nonce: u64,
        fee: u128,
        account_nonce: u64,
    },
    Commit {
        secret: u8,
        other_chain: bool,
        next_nonce: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..=4, any::<bool>(), 0u64..7, 1u128..40, 0u64..3).prop_map(
            |(secret, other_chain, nonce, fee, account_nonce)| Op::Insert {
                secret,
                other_chain,
                nonce,
                fee,
                account_nonce,
            }
        ),
        1 => (1u8..=4, any::<bool>(), 0u64..7).prop_map(|(secret, other_chain, next_nonce)| {
            Op::Commit {
                secret,
                other_chain,
                next_nonce,
            }
        }),
    ]
}

fn chain_of(other_chain: bool) -> ChainId {
    if other_chain {
        OTHER_CHAIN
    } else {
        CHAIN
    }
}

/// Pooled transactions as the test believes them: slot → hash.
type Model = HashMap<(ChainId, Address, u64), B256>;

fn check_ready(pool: &Mempool, model: &Model, max: usize) -> Result<(), TestCaseError> {
    for chain in [CHAIN, OTHER_CHAIN] {
        let ready = pool.ready(chain, max);
        prop_assert!(ready.len() <= max);
        let mut seen = HashSet::new();
        let mut last: HashMap<Address, u64> = HashMap::new();
        for t in &ready {
            let (s, n) = (t.sender(), t.tx().nonce());
            prop_assert!(seen.insert((s, n)), "({s}, {n}) returned twice");
            prop_assert_eq!(model.get(&(chain, s, n)), Some(&hash(t)));
            if let Some(prev) = last.insert(s, n) {
                prop_assert_eq!(n, prev + 1, "sender {}'s run skips a nonce", s);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn bookkeeping_matches_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let config = MempoolConfig {
            max_txs: 8,
            max_per_account: 4,
            max_queued_per_account: 5,
            ..MempoolConfig::default()
        };
        let mut pool = pool_with(config.clone());
        let mut model = Model::new();
        let mut inserted: HashSet<B256> = HashSet::new();
        for op in ops {
            match op {
                Op::Insert { secret, other_chain, nonce, fee, account_nonce } => {
                    let chain = chain_of(other_chain);
                    let t = signed(secret, chain, nonce, fee, 0);
                    let slot = (chain, t.sender(), nonce);
                    let len_before = pool.len();
                    match pool.insert(t.clone(), account_nonce) {
                        Ok(replaced) => {
                            inserted.insert(hash(&t));
                            let old = model.insert(slot, hash(&t));
                            prop_assert_eq!(replaced.as_ref().map(hash), old, "what was replaced");
                            if let Some(old) = old {
                                prop_assert_eq!(pool.len(), len_before, "a replacement");
                                prop_assert!(pool.get(&old).is_none());
                            } else if len_before == config.max_txs {
                                // Exactly one other transaction was evicted.
                                let gone: Vec<_> = model
                                    .iter()
                                    .filter(|(_, h)| pool.get(h).is_none())
                                    .map(|(k, _)| *k)
                                    .collect();
                                prop_assert_eq!(gone.len(), 1, "evicted {:?}", gone);
                                let (c, s, n) = gone[0];
                                // Highest among what was pooled before this insert.
                                prop_assert!(
                                    !model.keys().any(|&(c2, s2, n2)| {
                                        (c2, s2, n2) != slot && c2 == c && s2 == s && n2 > n
                                    }),
                                    "evicted a nonce that was not its sender's highest"
                                );
                                model.remove(&gone[0]);
                            } else {
                                prop_assert_eq!(pool.len(), len_before + 1);
                            }
                        }
                        Err(MempoolError::AlreadyKnown) => {
                            prop_assert_eq!(model.get(&slot), Some(&hash(&t)));
                        }
                        Err(_) => {
                            prop_assert_eq!(pool.len(), len_before);
                            prop_assert_ne!(model.get(&slot), Some(&hash(&t)));
                        }
                    }
                }
                Op::Commit { secret, other_chain, next_nonce } => {
                    let chain = chain_of(other_chain);
                    let s = sender(secret);
                    pool.committed(chain, s, next_nonce);
                    let dropped: Vec<_> = model
                        .keys()
                        .filter(|&&(c, s2, n)| c == chain && s2 == s && n < next_nonce)
                        .copied()
                        .collect();
                    for slot in dropped {
                        let h = model.remove(&slot).expect("listed above");
                        prop_assert!(pool.get(&h).is_none());
                    }
                }
            }
            // Every pooled hash is reachable, and nothing else is counted.
            let reachable = inserted.iter().filter(|h| pool.get(h).is_some()).count();
            prop_assert_eq!(pool.len(), reachable);
            prop_assert_eq!(pool.len(), model.len());
            for (&(c, s, n), h) in &model {
                let t = pool.get(h);
                prop_assert!(t.is_some(), "pooled {} not found", h);
                let t = t.expect("checked above");
                prop_assert_eq!((t.tx().chain_id(), t.sender(), t.tx().nonce()), (Some(c), s, n));
            }
            check_ready(&pool, &model, 3)?;
            check_ready(&pool, &model, 100)?;
        }
    }
}

#[test]
fn future_nonces_are_queued_and_promoted_when_the_gap_fills() {
    let mut pool = pool();
    let s = sender(1);
    pool.insert(tx(1, 3, 10), 0).unwrap();
    pool.insert(tx(1, 2, 10), 0).unwrap();
    assert_eq!((pool.queued(), pool.pending_nonce(CHAIN, s, 0)), (2, 0));
    assert!(pool.ready(CHAIN, 10).is_empty(), "nothing executable yet");
    pool.insert(tx(1, 0, 10), 0).unwrap();
    assert_eq!((pool.queued(), pool.pending_nonce(CHAIN, s, 0)), (2, 1));
    pool.insert(tx(1, 1, 10), 0).unwrap();
    assert_eq!((pool.queued(), pool.pending_nonce(CHAIN, s, 0)), (0, 4));
    let nonces: Vec<u64> = pool
        .ready(CHAIN, 10)
        .iter()
        .map(|t| t.tx().nonce())
        .collect();
    assert_eq!(nonces, [0, 1, 2, 3]);
    // Commits move the run; a later gap queues again.
    pool.committed(CHAIN, s, 2);
    pool.insert(tx(1, 6, 10), 2).unwrap();
    assert_eq!((pool.queued(), pool.pending_nonce(CHAIN, s, 2)), (1, 4));
    assert_eq!(pool.len(), 3);
}

#[test]
fn nonce_too_high_beyond_the_per_account_queue() {
    let mut pool = pool_with(MempoolConfig {
        max_queued_per_account: 4,
        ..MempoolConfig::default()
    });
    let refused = pool.insert(tx(1, 4, 10), 0).unwrap_err();
    assert_eq!(
        refused,
        MempoolError::NonceTooHigh {
            expected: 0,
            got: 4,
            limit: 4
        }
    );
    assert!(
        refused.to_string().starts_with("nonce too high"),
        "{refused}"
    );
    pool.insert(tx(1, 3, 10), 0).unwrap();
    // The window follows the end of the pending run, not the committed nonce.
    for n in 0..3 {
        pool.insert(tx(1, n, 10), 0).unwrap();
    }
    assert_eq!(pool.pending_nonce(CHAIN, sender(1), 0), 4);
    pool.insert(tx(1, 7, 10), 0).unwrap();
    assert!(matches!(
        pool.insert(tx(1, 8, 10), 0),
        Err(MempoolError::NonceTooHigh {
            expected: 4,
            got: 8,
            ..
        })
    ));
    // The bound is per account.
    pool.insert(tx(2, 3, 10), 0).unwrap();
    // A nonce at u64::MAX is judged without overflow.
    assert!(matches!(
        pool.insert(tx(3, u64::MAX, 10), u64::MAX - 1),
        Err(MempoolError::NonceTooHigh { .. }) | Ok(None)
    ));
}

#[test]
fn txpool_is_full_when_the_global_queue_or_bytes_bound_is_reached() {
    let mut pool = pool_with(MempoolConfig {
        max_queued: 2,
        ..MempoolConfig::default()
    });
    pool.insert(tx(1, 5, 10), 0).unwrap();
    pool.insert(tx(2, 5, 10), 0).unwrap();
    let refused = pool.insert(tx(3, 5, 10), 0).unwrap_err();
    assert_eq!(refused, MempoolError::PoolFull);
    assert_eq!(refused.to_string(), "txpool is full");
    // Executable transactions are not held back by the queued bound.
    pool.insert(tx(3, 0, 10), 0).unwrap();
    assert_eq!((pool.len(), pool.queued()), (3, 2));

    let size = tx(1, 0, 10).tx().raw().len();
    let mut pool = pool_with(MempoolConfig {
        max_bytes: 2 * size,
        ..MempoolConfig::default()
    });
    pool.insert(tx(1, 0, 10), 0).unwrap();
    pool.insert(tx(2, 0, 10), 0).unwrap();
    assert_eq!(pool.bytes(), 2 * size);
    assert_eq!(pool.insert(tx(3, 0, 10), 0), Err(MempoolError::PoolFull));
    // A better paying one evicts the cheapest; the bytes stay within the bound.
    pool.insert(tx(3, 0, 20), 0).unwrap();
    assert_eq!((pool.len(), pool.bytes()), (2, 2 * size));
}

#[test]
fn refusals_start_with_geths_wording() {
    let cases = [
        (
            MempoolError::NonceTooLow {
                expected: 3,
                got: 1,
            },
            "nonce too low",
        ),
        (
            MempoolError::NonceTooHigh {
                expected: 3,
                got: 9_999,
                limit: 1_024,
            },
            "nonce too high",
        ),
        (MempoolError::AlreadyKnown, "already known"),
        (
            MempoolError::ReplacementUnderpriced { needed: 11 },
            "replacement transaction underpriced",
        ),
        (MempoolError::PoolFull, "txpool is full"),
        (MempoolError::AccountFull(4_096), "account limit exceeded"),
    ];
    for (error, prefix) in cases {
        assert!(error.to_string().starts_with(prefix), "{error}");
    }
}

/// An insert whose read of committed state predates a commit the pool already knows must not
/// take the sender's nonce back: the pool would look for an included nonce, report nothing
/// ready and propose none of the sender's transactions until something else corrected it.
/// Kills "an insert expects the larger of its read and the pool's committed nonce".
#[test]
fn a_stale_committed_nonce_read_does_not_take_the_pool_back() {
    let mut pool = pool();
    pool.insert(tx(1, 9, 50), 9).unwrap();
    pool.insert(tx(1, 10, 50), 9).unwrap();
    pool.committed(CHAIN, sender(1), 10);
    // Read before that commit: account nonce 9.
    pool.insert(tx(1, 11, 50), 9).unwrap();
    assert!(pool.has_ready(), "nonce 10 is the sender's next");
    assert_eq!(
        hashes(&pool.ready(CHAIN, 10)),
        hashes(&[tx(1, 10, 50), tx(1, 11, 50)])
    );
}
