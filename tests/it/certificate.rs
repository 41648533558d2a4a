//! Commit certificates: aggregation from votes, verification against the round's committee,
//! and batch verification across many blocks.

use crate::selection::{cn_set, keys};
use alloy_primitives::B256;
use kaon::consensus::certificate::{
    aggregate_commit_votes, certificate_claim, verify_certificate, verify_certificates,
    CertificateError,
};
use kaon::consensus::selection::{CnSet, Committee};
use kaon::crypto::bls::{SecretKey, Signature};
use kaon::crypto::hash::sha256;
use kaon::types::{
    BlockHash, CnIndex, CommitCertificate, Height, Round, SignerBitmap, Vote, VoteKind,
};

fn commit_votes(
    sk: &[SecretKey],
    c: &Committee,
    hash: BlockHash,
    signers: usize,
) -> Vec<(CnIndex, Signature)> {
    let msg = Vote::signing_message(VoteKind::Commit, c.height, c.round, hash);
    c.members
        .iter()
        .take(signers)
        .map(|&cn| (cn, sk[cn.0 as usize].sign(&msg)))
        .collect()
}

fn setup(n: usize, size: usize) -> (Vec<SecretKey>, CnSet, Committee, BlockHash) {
    let sk = keys(n);
    let set = cn_set(&sk);
    let c = set.committee(sha256(b"mix"), Height(4), Round(1), size);
    (sk, set, c, BlockHash(sha256(b"block")))
}

#[test]
fn quorum_of_votes_makes_a_certificate_that_verifies() {
    let (sk, set, c, hash) = setup(7, 10);
    let cert = aggregate_commit_votes(&c, &commit_votes(&sk, &c, hash, c.quorum())).unwrap();
    assert_eq!(cert.signers.count(), 5);
    assert_eq!(verify_certificate(&set, &c, hash, &cert), Ok(()));
    // The same certificate says nothing about another block or round.
    assert_eq!(
        verify_certificate(&set, &c, BlockHash(B256::ZERO), &cert),
        Err(CertificateError::BadSignature)
    );
    let later = set.committee(c.mix, c.height, Round(2), 10);
    assert_eq!(
        verify_certificate(&set, &later, hash, &cert),
        Err(CertificateError::WrongRound {
            got: 1,
            expected: 2
        })
    );
}

#[test]
fn short_of_quorum_is_refused_both_when_building_and_verifying() {
    let (sk, set, c, hash) = setup(7, 10);
    let votes = commit_votes(&sk, &c, hash, c.quorum() - 1);
    assert_eq!(
        aggregate_commit_votes(&c, &votes),
        Err(CertificateError::NoQuorum {
            signers: 4,
            quorum: 5
        })
    );
    // A hand-made certificate with a valid aggregate of too few signers.
    let mut signers = SignerBitmap::with_members(c.size());
    (0..4).for_each(|i| signers.set(i));
    let sigs: Vec<Signature> = votes.iter().map(|v| v.1).collect();
    let cert = CommitCertificate {
        round: c.round,
        signers,
        aggregate: kaon::crypto::bls::aggregate_signatures(&sigs)
            .unwrap()
            .to_bytes(),
    };
    assert_eq!(
        verify_certificate(&set, &c, hash, &cert),
        Err(CertificateError::NoQuorum {
            signers: 4,
            quorum: 5
        })
    );
}

#[test]
fn duplicate_votes_count_once_and_outsiders_are_refused() {
    let (sk, _set, c, hash) = setup(12, 8);
    let mut votes = commit_votes(&sk, &c, hash, c.quorum() - 1);
    votes.push(votes[0]);
    assert!(matches!(
        aggregate_commit_votes(&c, &votes),
        Err(CertificateError::NoQuorum { .. })
    ));
    let outsider = (0..12)
        .map(CnIndex)
        .find(|cn| c.position(*cn).is_none())
        .unwrap();
    let msg = Vote::signing_message(VoteKind::Commit, c.height, c.round, hash);
    let mut votes = commit_votes(&sk, &c, hash, c.quorum());
    votes.push((outsider, sk[outsider.0 as usize].sign(&msg)));
    assert_eq!(
        aggregate_commit_votes(&c, &votes),
        Err(CertificateError::NotOnCommittee(outsider))
    );
}

#[test]
fn tampered_bitmaps_are_refused() {
    let (sk, set, c, hash) = setup(7, 10);
    let mut cert = aggregate_commit_votes(&c, &commit_votes(&sk, &c, hash, c.quorum())).unwrap();
    // Claim a sixth signer who did not sign: the aggregate key no longer matches.
    cert.signers.set(6);
    assert_eq!(
        verify_certificate(&set, &c, hash, &cert),
        Err(CertificateError::BadSignature)
    );
    // A bitmap sized for another committee.
    cert.signers = SignerBitmap(vec![0xff, 0x01].into());
    assert_eq!(
        verify_certificate(&set, &c, hash, &cert),
        Err(CertificateError::BadBitmap { members: 7 })
    );
    // A prepare-vote aggregate is not a commit certificate.
    let prepare = Vote::signing_message(VoteKind::Prepare, c.height, c.round, hash);
    let sigs: Vec<Signature> = c
        .members
        .iter()
        .take(5)
        .map(|cn| sk[cn.0 as usize].sign(&prepare))
        .collect();
    let mut signers = SignerBitmap::with_members(7);
    (0..5).for_each(|i| signers.set(i));
    let cert = CommitCertificate {
        round: c.round,
        signers,
        aggregate: kaon::crypto::bls::aggregate_signatures(&sigs)
            .unwrap()
            .to_bytes(),
    };
    assert_eq!(
        verify_certificate(&set, &c, hash, &cert),
        Err(CertificateError::BadSignature)
    );
}

#[test]
fn batch_of_certificates_names_the_forged_ones() {
    let (sk, set, _, _) = setup(10, 16);
    let mut claims = Vec::new();
    for i in 0..12u64 {
        let c = set.committee(sha256(&i.to_be_bytes()), Height(i + 1), Round(0), 16);
        let hash = BlockHash(sha256(&[i as u8; 3]));
        let signed_for = if i == 4 || i == 9 {
            BlockHash(B256::ZERO)
        } else {
            hash
        };
        let cert =
            aggregate_commit_votes(&c, &commit_votes(&sk, &c, signed_for, c.quorum())).unwrap();
        claims.push(certificate_claim(&set, &c, hash, &cert).unwrap());
    }
    let failure = verify_certificates(&claims).unwrap_err();
    assert_eq!(failure.bad, vec![4, 9]);
    claims.remove(9);
    claims.remove(4);
    assert_eq!(verify_certificates(&claims), Ok(()));
}

#[test]
fn committees_larger_than_100_certify_with_one_aggregate() {
    let (sk, set, c, hash) = setup(130, 128);
    assert_eq!((c.size(), c.quorum()), (128, 86));
    let cert = aggregate_commit_votes(&c, &commit_votes(&sk, &c, hash, 86)).unwrap();
    assert_eq!(verify_certificate(&set, &c, hash, &cert), Ok(()));
}
