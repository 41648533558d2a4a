//! CN keys entering a CN set — genesis and CN-set changes: each needs a valid proof of
//! possession and may be listed once, so no CN can register a rogue key that cancels honest
//! keys inside a certificate's key sum.

use alloy_primitives::hex;
use alloy_primitives::U256;
use kaon::chain::genesis::{Genesis, GenesisCnError};
use kaon::consensus::governance::{approve, proof_of_possession, GovernanceError};
use kaon::consensus::selection::{CnSet, SelectionError};
use kaon::crypto::bls::{self, PublicKey, SecretKey};
use kaon::crypto::hash::sha256;
use kaon::types::{ChainId, CnIndex, Height};

const REGION: ChainId = ChainId(1000);

fn key(i: usize) -> SecretKey {
    SecretKey::from_seed(sha256(format!("cn-keys-test-{i}").as_bytes()).as_slice()).unwrap()
}

fn genesis(keys: &[SecretKey]) -> Genesis {
    Genesis::new(REGION, keys, 1, &[], U256::ZERO, 150, 100)
}

/// Writes `genesis` to a file and loads it back, as a node does at start.
fn load(genesis: &Genesis) -> anyhow::Result<Genesis> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("genesis.json");
    genesis.save(&path).unwrap();
    Genesis::load(&path)
}

/// The CN-key error a load failed with.
fn refusal(genesis: &Genesis) -> GenesisCnError {
    let err = load(genesis).expect_err("genesis must be refused");
    err.downcast_ref::<GenesisCnError>()
        .unwrap_or_else(|| panic!("not a CN-key refusal: {err:#}"))
        .clone()
}

fn hex_key(key: &PublicKey) -> String {
    hex::encode(key.to_bytes().0)
}

#[test]
fn genesis_without_a_valid_proof_of_possession_is_refused() {
    let keys: Vec<SecretKey> = (0..4).map(key).collect();
    let good = genesis(&keys);
    assert_eq!(load(&good).unwrap(), good);

    // A file from before proofs existed: the first CN is named.
    let mut none = good.clone();
    none.cn_pops.clear();
    assert_eq!(
        refusal(&none),
        GenesisCnError::MissingProof {
            index: 0,
            key: good.cns[0].clone()
        }
    );
    let mut short = good.clone();
    short.cn_pops.pop();
    assert!(matches!(
        refusal(&short),
        GenesisCnError::MissingProof { index: 3, .. }
    ));
    // Another CN's proof in its place.
    let mut borrowed = good.clone();
    borrowed.cn_pops[2] = borrowed.cn_pops[1].clone();
    assert!(matches!(
        refusal(&borrowed),
        GenesisCnError::BadProof { index: 2, .. }
    ));
    // An ordinary signature over the key's own bytes is not a proof (separate domain).
    let mut plain = good.clone();
    plain.cn_pops[1] = hex::encode(
        keys[1]
            .sign(&keys[1].public_key().to_bytes().0)
            .to_bytes()
            .0,
    );
    assert!(matches!(
        refusal(&plain),
        GenesisCnError::BadProof { index: 1, .. }
    ));
    let mut garbage = good.clone();
    garbage.cn_pops[3] = "0xzz".into();
    assert!(matches!(
        refusal(&garbage),
        GenesisCnError::BadProofEncoding { index: 3, .. }
    ));
    // The error names the entry for the operator.
    let message = format!("{:#}", load(&borrowed).unwrap_err());
    assert!(
        message.contains("CN 2") && message.contains(&good.cns[2]),
        "{message}"
    );
}

#[test]
fn a_key_listed_twice_is_refused_in_genesis_and_in_a_change() {
    let keys: Vec<SecretKey> = (0..4).map(key).collect();
    let mut twice = genesis(&keys);
    // The copy carries a valid proof: only the duplicate rule can refuse it.
    twice.cns[3] = twice.cns[0].clone();
    twice.cn_pops[3] = twice.cn_pops[0].clone();
    assert_eq!(
        refusal(&twice),
        GenesisCnError::Set(SelectionError::DuplicateKey {
            first: CnIndex(0),
            second: CnIndex(3)
        })
    );
    let wire = vec![
        keys[1].public_key().to_bytes(),
        keys[1].public_key().to_bytes(),
    ];
    assert_eq!(
        CnSet::from_bytes(&wire),
        Err(SelectionError::DuplicateKey {
            first: CnIndex(0),
            second: CnIndex(1)
        })
    );

    let current = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    let mut new_set: Vec<_> = keys.iter().map(|k| k.public_key().to_bytes()).collect();
    let mut pops: Vec<_> = keys.iter().map(proof_of_possession).collect();
    new_set.push(new_set[2]);
    pops.push(pops[2]);
    let approvers: Vec<_> = (0..3).map(|i| (CnIndex(i as u32), &keys[i])).collect();
    let change = approve(REGION, &current, Height(12), new_set, pops, &approvers).unwrap();
    match change.verify(REGION, &current, Height(10)) {
        Err(GovernanceError::Malformed(why)) => assert!(why.contains("CN 4"), "{why}"),
        other => panic!("a change listing a key twice passed: {other:?}"),
    }
}

/// `-pk`: a compressed G1 point negates by flipping its y-sign bit (bit 5 of the first byte).
fn negate(pk: &PublicKey) -> PublicKey {
    let mut bytes = pk.to_bytes().0;
    bytes[0] ^= 0x20;
    PublicKey::from_bytes(&bytes).unwrap()
}

#[test]
fn rogue_key_cancelling_an_honest_key_is_refused() {
    let honest = key(0);
    let attacker = key(1);
    // From public data only: pk_rogue = pk_attacker - pk_honest. Nobody knows its secret.
    let rogue = bls::aggregate_public_keys([&attacker.public_key(), &negate(&honest.public_key())])
        .unwrap();

    // The attack this prevents: in a set {honest, rogue} the attacker alone signs for both.
    let msg = b"commit vote for a block the honest CN never saw";
    let forged = attacker.sign(msg);
    assert!(bls::fast_aggregate_verify(
        &[honest.public_key(), rogue],
        msg,
        &forged
    ));

    // Genesis listing the rogue key, with the best proofs the attacker can make, is refused.
    let mut entry = genesis(&[honest.clone(), key(2), key(3)]);
    entry.cns[1] = hex_key(&rogue);
    for proof in [
        attacker.prove_possession(),
        attacker.sign(&rogue.to_bytes().0),
    ] {
        entry.cn_pops[1] = hex::encode(proof.to_bytes().0);
        assert_eq!(
            refusal(&entry),
            GenesisCnError::BadProof {
                index: 1,
                key: hex_key(&rogue)
            }
        );
    }

    // So is a change that adds it to a running set.
    let keys: Vec<SecretKey> = (0..4).map(key).collect();
    let current = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    let mut new_set: Vec<_> = keys.iter().map(|k| k.public_key().to_bytes()).collect();
    let mut pops: Vec<_> = keys.iter().map(proof_of_possession).collect();
    new_set.push(rogue.to_bytes());
    pops.push(attacker.prove_possession().to_bytes());
    let approvers: Vec<_> = (0..3).map(|i| (CnIndex(i as u32), &keys[i])).collect();
    let change = approve(REGION, &current, Height(12), new_set, pops, &approvers).unwrap();
    assert_eq!(
        change.verify(REGION, &current, Height(10)),
        Err(GovernanceError::BadPop(4))
    );
}

/// Round timeouts must be able to grow (liveness after GST): a zero base or a cap below the
/// base is refused with both numbers named.
#[test]
fn genesis_whose_round_timeouts_cannot_grow_is_refused() {
    let keys: Vec<SecretKey> = (0..4).map(key).collect();
    let good = genesis(&keys);
    for (base, max) in [(0, 1_000), (2_000, 1_000)] {
        let mut bad = good.clone();
        (bad.base_timeout_ms, bad.max_timeout_ms) = (base, max);
        let err = format!("{:#}", load(&bad).expect_err("refused"));
        assert!(
            err.contains("round timeouts must grow")
                && err.contains(&base.to_string())
                && err.contains(&max.to_string()),
            "{err}"
        );
    }
}
