//! The canonical encoding and the wire frame of `kaon::types`: round trips, truncation and
//! bit-flip rejection, robustness of the bare RLP against arbitrary mutation (never a panic,
//! never a non-canonical acceptance), the frame's error variants, header hashing, signer
//! bitmaps and equivocation evidence.

use alloy_primitives::{Address, Bytes, B256};
use alloy_rlp::{Decodable, Encodable};
use kaon::crypto::bls::{PublicKeyBytes, SignatureBytes, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use kaon::crypto::hash::sha256;
use kaon::types::block::{HEADER_VERSION, MAX_HEADER_BYTES};
use kaon::types::codec::{
    canonical, decode_exact, decode_frame, encode_frame, Kind, FRAME_OVERHEAD, WIRE_VERSION,
};
use kaon::types::{
    Block, BlockHash, ChainId, CnIndex, CodecError, CommitCertificate, ConsensusMessage,
    EquivocationEvidence, Header, Height, PorShare, QuorumCertificate, Round, SealedHeader,
    Segment, SegmentCommitment, SignerBitmap, Vote, VoteKind, WireMessage,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::fmt::Debug;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Integers biased towards the RLP edge cases: zero, single-byte values, and the full range.
fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        1u64..0x80,
        0x80u64..0x1_0000,
        any::<u64>(),
        Just(u64::MAX)
    ]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        1u32..0x80,
        0x80u32..0x1_0000,
        any::<u32>(),
        Just(u32::MAX)
    ]
}

fn b256() -> impl Strategy<Value = B256> {
    any::<[u8; 32]>().prop_map(B256::from)
}

fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from)
}

fn public_key() -> impl Strategy<Value = PublicKeyBytes> {
    vec(any::<u8>(), PUBLIC_KEY_LEN)
        .prop_map(|v| PublicKeyBytes(v.try_into().expect("PUBLIC_KEY_LEN bytes")))
}

fn signature() -> impl Strategy<Value = SignatureBytes> {
    vec(any::<u8>(), SIGNATURE_LEN)
        .prop_map(|v| SignatureBytes(v.try_into().expect("SIGNATURE_LEN bytes")))
}

fn segment_commitment() -> impl Strategy<Value = SegmentCommitment> {
    (u64s(), u32s(), b256(), b256(), b256()).prop_map(
        |(chain_id, tx_count, tx_root, receipts_root, state_root)| SegmentCommitment {
            chain_id: ChainId(chain_id),
            tx_count,
            tx_root,
            receipts_root,
            state_root,
        },
    )
}

fn header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![Just(HEADER_VERSION), any::<u8>()],
        u64s(),
        u64s(),
        u32s(),
        b256(),
        u64s(),
        u32s(),
        signature(),
        b256(),
        b256(),
        vec(public_key(), 0..3),
        vec(segment_commitment(), 0..4),
    )
        .prop_map(
            |(
                version,
                region,
                height,
                round,
                parent,
                timestamp_ms,
                proposer,
                random_reveal,
                mix,
                cn_set_root,
                next_cn_set,
                segments,
            )| Header {
                version,
                region: ChainId(region),
                height: Height(height),
                round: Round(round),
                parent: BlockHash(parent),
                timestamp_ms,
                proposer: CnIndex(proposer),
                random_reveal,
                mix,
                cn_set_root,
                next_cn_set,
                segments,
            },
        )
}

fn certificate() -> impl Strategy<Value = CommitCertificate> {
    (u32s(), vec(any::<u8>(), 0..16), signature()).prop_map(|(round, bitmap, aggregate)| {
        CommitCertificate {
            round: Round(round),
            signers: SignerBitmap(Bytes::from(bitmap)),
            aggregate,
        }
    })
}

/// A leader's certificate as the consensus message that carries it.
fn quorum_certificate() -> impl Strategy<Value = ConsensusMessage> {
    (vote_kind(), u64s(), certificate(), b256()).prop_map(|(kind, height, c, hash)| {
        ConsensusMessage::Certificate(Box::new(QuorumCertificate {
            kind,
            height: Height(height),
            round: c.round,
            block_hash: BlockHash(hash),
            signers: c.signers,
            aggregate: c.aggregate,
        }))
    })
}

fn sealed_header() -> impl Strategy<Value = SealedHeader> {
    (header(), certificate()).prop_map(|(header, seal)| SealedHeader { header, seal })
}

/// Raw transactions of 0..200 bytes; short ones exercise RLP's single-byte encoding.
fn raw_tx() -> impl Strategy<Value = Bytes> {
    prop_oneof![vec(any::<u8>(), 0..2), vec(any::<u8>(), 0..200)].prop_map(Bytes::from)
}

fn segment() -> impl Strategy<Value = Segment> {
    (u64s(), vec(raw_tx(), 0..4)).prop_map(|(chain_id, txs)| Segment {
        chain_id: ChainId(chain_id),
        txs,
    })
}

fn block() -> impl Strategy<Value = Block> {
    (sealed_header(), vec(segment(), 0..3))
        .prop_map(|(sealed, segments)| Block { sealed, segments })
}

fn vote_kind() -> impl Strategy<Value = VoteKind> {
    prop_oneof![Just(VoteKind::Prepare), Just(VoteKind::Commit)]
}

fn vote() -> impl Strategy<Value = Vote> {
    (vote_kind(), u64s(), u32s(), b256(), u32s(), signature()).prop_map(
        |(kind, height, round, block_hash, voter, signature)| Vote {
            kind,
            height: Height(height),
            round: Round(round),
            block_hash: BlockHash(block_hash),
            voter: CnIndex(voter),
            signature,
        },
    )
}

fn por_share() -> impl Strategy<Value = PorShare> {
    (u64s(), address(), u64s()).prop_map(|(height, miner, nonce)| PorShare {
        height: Height(height),
        miner,
        nonce,
    })
}

/// Evidence as it may arrive from a peer: usually a real conflict (same height), sometimes not;
/// the codec must carry both.
fn evidence() -> impl Strategy<Value = EquivocationEvidence> {
    (sealed_header(), sealed_header(), any::<bool>()).prop_map(|(first, mut second, same)| {
        if same {
            second.header.height = first.header.height;
        }
        EquivocationEvidence { first, second }
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    Insert(Index, u8),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Set(i, v) if len > 0 => bytes[i.index(len)] = *v,
            Mutation::Truncate(i) if len > 0 => bytes.truncate(i.index(len)),
            Mutation::Append(tail) => bytes.extend_from_slice(tail),
            Mutation::Insert(i, v) => bytes.insert(i.index(len + 1), *v),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            _ => {}
        }
    }
}

/// Random positions used to sample truncations and bit flips of big frames.
fn samples() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 64)
}

// ---------------------------------------------------------------------------------------------
// Properties, generic over the type
// ---------------------------------------------------------------------------------------------

/// Frames up to this many bytes are checked exhaustively (every cut, every bit); bigger ones
/// are sampled.
const EXHAUSTIVE_FRAME: usize = 512;

/// Canonical bytes round trip, and every strict prefix of them is an error (the outer list
/// header promises more bytes than a prefix holds).
fn check_canonical<T>(x: &T) -> Result<(), TestCaseError>
where
    T: Encodable + Decodable + PartialEq + Debug,
{
    let bytes = canonical(x);
    prop_assert_eq!(bytes.len(), x.length());
    prop_assert_eq!(&decode_exact::<T>(&bytes)?, x);
    for cut in 0..bytes.len() {
        prop_assert!(
            decode_exact::<T>(&bytes[..cut]).is_err(),
            "prefix of {} of {} canonical bytes decoded",
            cut,
            bytes.len()
        );
    }
    Ok(())
}

/// Property 1 for framed types: both round trips, and the frame is exactly the canonical
/// bytes between the version/kind bytes and the checksum.
fn check_roundtrip<T>(x: &T) -> Result<(), TestCaseError>
where
    T: WireMessage + PartialEq + Debug,
{
    check_canonical(x)?;
    let frame = encode_frame(x);
    prop_assert_eq!(&decode_frame::<T>(&frame)?, x);
    prop_assert_eq!(frame.len(), canonical(x).len() + FRAME_OVERHEAD);
    prop_assert_eq!(&frame[2..frame.len() - 4], &canonical(x)[..]);
    Ok(())
}

/// Property 2: every strict prefix of the frame is refused: too short for the frame overhead,
/// or a checksum mismatch. (A prefix whose last four bytes happen to equal the crc32c of the
/// rest would pass the checksum; for generated values that is a 2^-32 event per cut.)
fn check_truncations<T>(x: &T, picks: &[Index]) -> Result<(), TestCaseError>
where
    T: WireMessage + Debug,
{
    let frame = encode_frame(x);
    let n = frame.len();
    let cuts: Vec<usize> = if n <= EXHAUSTIVE_FRAME {
        (0..n).collect()
    } else {
        let mut cuts = vec![0, 1, 5, n - 4, n - 1];
        cuts.extend(picks.iter().take(32).map(|i| i.index(n)));
        cuts
    };
    for cut in cuts {
        let result = decode_frame::<T>(&frame[..cut]);
        if cut < FRAME_OVERHEAD {
            prop_assert_eq!(result.unwrap_err(), CodecError::TooShort(cut));
        } else {
            prop_assert!(
                matches!(result, Err(CodecError::Checksum { .. })),
                "prefix of {} of {} frame bytes gave {:?}",
                cut,
                n,
                result
            );
        }
    }
    Ok(())
}

/// Property 3: every single-bit flip of the frame is caught by the checksum.
fn check_bit_flips<T>(x: &T, picks: &[Index]) -> Result<(), TestCaseError>
where
    T: WireMessage + Debug,
{
    let frame = encode_frame(x);
    let bits = frame.len() * 8;
    let positions: Vec<usize> = if frame.len() <= EXHAUSTIVE_FRAME {
        (0..bits).collect()
    } else {
        // The version, kind and checksum bytes always, plus random payload bits.
        let mut p: Vec<usize> = (0..16).chain(bits - 32..bits).collect();
        p.extend(picks.iter().map(|i| i.index(bits)));
        p
    };
    let mut flipped = frame.clone();
    for bit in positions {
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = decode_frame::<T>(&flipped);
        prop_assert!(
            matches!(result, Err(CodecError::Checksum { .. })),
            "flip of bit {} of {} gave {:?}",
            bit,
            bits,
            result
        );
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
    prop_assert_eq!(flipped, frame);
    Ok(())
}

/// Property 4: arbitrary mutations of the bare canonical bytes never panic, and whatever still
/// decodes is canonical (re-encoding gives back exactly the bytes that were accepted).
fn check_mutated<T>(x: &T, edits: &[Mutation]) -> Result<(), TestCaseError>
where
    T: Encodable + Decodable + PartialEq + Debug,
{
    let mut bytes = canonical(x);
    apply(&mut bytes, edits);
    if let Ok(decoded) = decode_exact::<T>(&bytes) {
        prop_assert_eq!(
            canonical(&decoded),
            bytes,
            "non-canonical bytes accepted as {:?}",
            decoded
        );
    }
    Ok(())
}

/// Mutated frames never panic either; a frame the checksum lets through must decode to a
/// value whose frame is exactly those bytes.
fn check_mutated_frame<T>(x: &T, edits: &[Mutation]) -> Result<(), TestCaseError>
where
    T: WireMessage + PartialEq + Debug,
{
    let mut frame = encode_frame(x);
    apply(&mut frame, edits);
    if let Ok(decoded) = decode_frame::<T>(&frame) {
        prop_assert_eq!(encode_frame(&decoded), frame);
    }
    Ok(())
}

fn check_all<T>(x: &T, picks: &[Index], edits: &[Mutation]) -> Result<(), TestCaseError>
where
    T: WireMessage + PartialEq + Debug,
{
    check_roundtrip(x)?;
    check_truncations(x, picks)?;
    check_bit_flips(x, picks)?;
    check_mutated(x, edits)?;
    check_mutated_frame(x, edits)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn header_canonical(h in header(), edits in mutations()) {
        check_canonical(&h)?;
        check_mutated(&h, &edits)?;
        let decoded: Header = decode_exact(&canonical(&h))?;
        prop_assert_eq!(decoded.hash(), h.hash());
        prop_assert_eq!(h.hash(), BlockHash(sha256(&canonical(&h))));
    }

    #[test]
    fn segment_commitment_canonical(c in segment_commitment(), edits in mutations()) {
        check_canonical(&c)?;
        check_mutated(&c, &edits)?;
    }

    #[test]
    fn segment_canonical(s in segment(), edits in mutations()) {
        check_canonical(&s)?;
        check_mutated(&s, &edits)?;
    }

    #[test]
    fn sealed_header_codec(x in sealed_header(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
        let decoded: SealedHeader = decode_frame(&encode_frame(&x))?;
        prop_assert_eq!(decoded.hash(), x.hash());
        prop_assert_eq!(x.hash(), x.header.hash());
    }

    #[test]
    fn certificate_codec(x in certificate(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
    }

    #[test]
    fn block_codec(x in block(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
        let decoded: Block = decode_frame(&encode_frame(&x))?;
        prop_assert_eq!(decoded.hash(), x.header().hash());
    }

    #[test]
    fn vote_codec(x in vote(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
    }

    #[test]
    fn quorum_certificate_codec(x in quorum_certificate(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
    }

    #[test]
    fn por_share_codec(x in por_share(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
    }

    #[test]
    fn evidence_codec(x in evidence(), picks in samples(), edits in mutations()) {
        check_all(&x, &picks, &edits)?;
        let decoded: EquivocationEvidence = decode_frame(&encode_frame(&x))?;
        prop_assert_eq!(decoded.is_conflict(), x.is_conflict());
    }

    /// Arbitrary bytes (not derived from a valid value) never panic any decoder, and nothing
    /// non-canonical is accepted.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        fn check<T: Encodable + Decodable + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(v) = decode_exact::<T>(bytes) {
                prop_assert_eq!(canonical(&v), bytes.to_vec());
            }
            Ok(())
        }
        check::<Header>(&bytes)?;
        check::<SealedHeader>(&bytes)?;
        check::<CommitCertificate>(&bytes)?;
        check::<Block>(&bytes)?;
        check::<Vote>(&bytes)?;
        check::<PorShare>(&bytes)?;
        check::<EquivocationEvidence>(&bytes)?;
        check::<VoteKind>(&bytes)?;
        let _ = decode_frame::<Block>(&bytes);
        let _ = decode_frame::<Vote>(&bytes);
        let _ = decode_frame::<PorShare>(&bytes);
    }

    /// Two different headers never share a hash (and equal ones always do).
    #[test]
    fn header_hash_is_injective_on_samples(a in header(), b in header()) {
        prop_assert_eq!(a == b, a.hash() == b.hash());
    }

    /// A bitmap built by `set` reports exactly the indices set, fits its committee, and stops
    /// fitting a committee whose size disagrees on the byte count or excludes a signer.
    #[test]
    fn signer_bitmap_model(members in 1usize..100, raw in vec(any::<Index>(), 0..40)) {
        let mut bitmap = SignerBitmap::with_members(members);
        let mut set: Vec<usize> = raw.iter().map(|i| i.index(members)).collect();
        for &i in &set {
            bitmap.set(i);
        }
        set.sort_unstable();
        set.dedup();
        prop_assert_eq!(bitmap.0.len(), members.div_ceil(8));
        prop_assert_eq!(bitmap.count(), set.len());
        prop_assert_eq!(bitmap.signers().collect::<Vec<_>>(), set.clone());
        for i in 0..members + 16 {
            prop_assert_eq!(bitmap.get(i), set.binary_search(&i).is_ok());
        }
        prop_assert!(bitmap.fits(members));
        // A committee needing one more byte, or one byte fewer, never fits.
        prop_assert!(!bitmap.fits(members.div_ceil(8) * 8 + 1));
        if members > 8 {
            prop_assert!(!bitmap.fits((members.div_ceil(8) - 1) * 8));
        }
        // A smaller committee with the same byte count fits iff no signer falls outside it.
        let smaller = (members.div_ceil(8) - 1) * 8 + 1;
        if smaller <= members {
            prop_assert_eq!(bitmap.fits(smaller), set.iter().all(|&i| i < smaller));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------------------

fn sample_header() -> Header {
    Header {
        version: HEADER_VERSION,
        region: ChainId(7),
        height: Height(42),
        round: Round(3),
        parent: BlockHash(B256::repeat_byte(0x11)),
        timestamp_ms: 1_700_000_000_000,
        proposer: CnIndex(5),
        random_reveal: SignatureBytes([0x22; SIGNATURE_LEN]),
        mix: B256::repeat_byte(0x33),
        cn_set_root: B256::repeat_byte(0x44),
        next_cn_set: vec![PublicKeyBytes([0x55; PUBLIC_KEY_LEN])],
        segments: vec![SegmentCommitment {
            chain_id: ChainId(7),
            tx_count: 2,
            tx_root: B256::repeat_byte(0x66),
            receipts_root: B256::repeat_byte(0x77),
            state_root: B256::repeat_byte(0x88),
        }],
    }
}

fn sample_certificate() -> CommitCertificate {
    let mut signers = SignerBitmap::with_members(10);
    signers.set(0);
    signers.set(9);
    CommitCertificate {
        round: Round(3),
        signers,
        aggregate: SignatureBytes([0x99; SIGNATURE_LEN]),
    }
}

fn sample_sealed() -> SealedHeader {
    SealedHeader {
        header: sample_header(),
        seal: sample_certificate(),
    }
}

fn sample_vote(kind: VoteKind) -> Vote {
    Vote {
        kind,
        height: Height(42),
        round: Round(3),
        block_hash: sample_header().hash(),
        voter: CnIndex(9),
        signature: SignatureBytes([0xbb; SIGNATURE_LEN]),
    }
}

/// A frame built by hand: version, kind, payload, then a valid crc32c (little endian) of all
/// that precedes it.
fn hand_frame(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![version, kind];
    frame.extend_from_slice(payload);
    let crc = crc32c::crc32c(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

#[test]
fn frame_layout_is_version_kind_payload_crc() {
    let vote = sample_vote(VoteKind::Commit);
    assert_eq!(
        encode_frame(&vote),
        hand_frame(WIRE_VERSION, Kind::Vote as u8, &canonical(&vote))
    );
    let share = PorShare {
        height: Height(1),
        miner: Address::repeat_byte(1),
        nonce: 2,
    };
    assert_eq!(
        encode_frame(&share),
        hand_frame(WIRE_VERSION, Kind::PorShare as u8, &canonical(&share))
    );
}

#[test]
fn both_vote_kinds_round_trip_and_differ() {
    let prepare = sample_vote(VoteKind::Prepare);
    let commit = sample_vote(VoteKind::Commit);
    assert_eq!(
        decode_frame::<Vote>(&encode_frame(&prepare)),
        Ok(prepare.clone())
    );
    assert_eq!(
        decode_frame::<Vote>(&encode_frame(&commit)),
        Ok(commit.clone())
    );
    assert_ne!(canonical(&prepare), canonical(&commit));
}

#[test]
fn oversized_frame_is_refused_unread() {
    // 10 KB of zeros: the checksum would also fail, but the size check comes first.
    let frame = vec![0u8; 10 * 1024];
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::TooLarge {
            kind: Kind::Vote,
            len: 10 * 1024,
            max: Vote::MAX_PAYLOAD + FRAME_OVERHEAD,
        })
    );
}

#[test]
fn size_limit_boundary_is_exact() {
    fn at_limit<T: WireMessage + Debug>() {
        let max = T::MAX_PAYLOAD + FRAME_OVERHEAD;
        // At the limit the frame is read (and fails its checksum); one byte more is refused.
        assert!(matches!(
            decode_frame::<T>(&vec![0u8; max]),
            Err(CodecError::Checksum { .. })
        ));
        assert_eq!(
            decode_frame::<T>(&vec![0u8; max + 1]).unwrap_err(),
            CodecError::TooLarge {
                kind: T::KIND,
                len: max + 1,
                max
            }
        );
    }
    at_limit::<Vote>();
    at_limit::<PorShare>();
    at_limit::<CommitCertificate>();
    at_limit::<SealedHeader>();
}

#[test]
fn largest_values_fit_their_limits() {
    // Every field at its widest.
    let vote = Vote {
        height: Height(u64::MAX),
        round: Round(u32::MAX),
        voter: CnIndex(u32::MAX),
        ..sample_vote(VoteKind::Commit)
    };
    assert_eq!(decode_frame::<Vote>(&encode_frame(&vote)), Ok(vote));
    let share = PorShare {
        height: Height(u64::MAX),
        miner: Address::repeat_byte(0xff),
        nonce: u64::MAX,
    };
    assert_eq!(decode_frame::<PorShare>(&encode_frame(&share)), Ok(share));
    // The certificate limit is documented to hold a bitmap for 8 192 members.
    let mut signers = SignerBitmap::with_members(8192);
    for i in 0..8192 {
        signers.set(i);
    }
    let cert = CommitCertificate {
        round: Round(u32::MAX),
        signers,
        aggregate: SignatureBytes([0xff; SIGNATURE_LEN]),
    };
    assert_eq!(
        decode_frame::<CommitCertificate>(&encode_frame(&cert)),
        Ok(cert)
    );
}

#[test]
fn short_frames_are_too_short() {
    let frame = encode_frame(&sample_vote(VoteKind::Prepare));
    for len in 0..FRAME_OVERHEAD {
        assert_eq!(
            decode_frame::<Vote>(&frame[..len]),
            Err(CodecError::TooShort(len))
        );
    }
}

#[test]
fn checksum_mismatch_reports_both_values() {
    let mut frame = encode_frame(&sample_vote(VoteKind::Prepare));
    let n = frame.len();
    let good = u32::from_le_bytes(frame[n - 4..].try_into().unwrap());
    frame[n - 4] ^= 0x01;
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::Checksum {
            stored: good ^ 0x01,
            computed: good
        })
    );
}

#[test]
fn wrong_kind_is_refused() {
    let vote = sample_vote(VoteKind::Commit);
    let share = PorShare {
        height: Height(42),
        miner: Address::repeat_byte(7),
        nonce: 9,
    };
    // A genuine PorShare frame offered to a Vote decoder.
    assert_eq!(
        decode_frame::<Vote>(&encode_frame(&share)),
        Err(CodecError::WrongKind {
            expected: Kind::Vote,
            got: Kind::PorShare as u8
        })
    );
    // A genuine Vote frame is bigger than any PorShare may be: the size check, which comes
    // first, refuses it before the kind is looked at.
    let frame = encode_frame(&vote);
    assert_eq!(
        decode_frame::<PorShare>(&frame),
        Err(CodecError::TooLarge {
            kind: Kind::PorShare,
            len: frame.len(),
            max: PorShare::MAX_PAYLOAD + FRAME_OVERHEAD
        })
    );
    // Hand-built frames with a valid checksum and a Vote kind byte around a PorShare payload
    // (and the reverse): the kind check, not the RLP, rejects them.
    let frame = hand_frame(WIRE_VERSION, Kind::Vote as u8, &canonical(&share));
    assert_eq!(
        decode_frame::<PorShare>(&frame),
        Err(CodecError::WrongKind {
            expected: Kind::PorShare,
            got: Kind::Vote as u8
        })
    );
    let frame = hand_frame(WIRE_VERSION, Kind::PorShare as u8, &canonical(&vote));
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::WrongKind {
            expected: Kind::Vote,
            got: Kind::PorShare as u8
        })
    );
    // An unassigned kind byte.
    let frame = hand_frame(WIRE_VERSION, 0xee, &canonical(&vote));
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::WrongKind {
            expected: Kind::Vote,
            got: 0xee
        })
    );
}

#[test]
fn wrong_version_is_refused() {
    let vote = sample_vote(VoteKind::Commit);
    for version in [0u8, WIRE_VERSION + 1, 0xff] {
        let frame = hand_frame(version, Kind::Vote as u8, &canonical(&vote));
        assert_eq!(
            decode_frame::<Vote>(&frame),
            Err(CodecError::Version(version))
        );
    }
    // The version is checked before the kind.
    let frame = hand_frame(WIRE_VERSION + 1, Kind::PorShare as u8, &canonical(&vote));
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::Version(WIRE_VERSION + 1))
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let vote = sample_vote(VoteKind::Prepare);
    let mut payload = canonical(&vote);
    payload.push(0x80);
    assert_eq!(
        decode_exact::<Vote>(&payload),
        Err(CodecError::TrailingBytes(1))
    );
    let frame = hand_frame(WIRE_VERSION, Kind::Vote as u8, &payload);
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::TrailingBytes(1))
    );

    let sealed = sample_sealed();
    let mut payload = canonical(&sealed);
    payload.extend_from_slice(&canonical(&sealed));
    let frame = hand_frame(WIRE_VERSION, Kind::SealedHeader as u8, &payload);
    assert_eq!(
        decode_frame::<SealedHeader>(&frame),
        Err(CodecError::TrailingBytes(canonical(&sealed).len()))
    );
}

#[test]
fn empty_payload_is_an_rlp_error() {
    let frame = hand_frame(WIRE_VERSION, Kind::Vote as u8, &[]);
    assert_eq!(
        decode_frame::<Vote>(&frame),
        Err(CodecError::Rlp(alloy_rlp::Error::InputTooShort))
    );
}

/// Only 0 and 1 are vote kinds; every other integer byte value is an RLP error.
#[test]
fn every_vote_kind_byte() {
    for v in 0..=u8::MAX {
        let result = decode_exact::<VoteKind>(&canonical(&v));
        match v {
            0 => assert_eq!(result, Ok(VoteKind::Prepare)),
            1 => assert_eq!(result, Ok(VoteKind::Commit)),
            _ => assert_eq!(
                result,
                Err(CodecError::Rlp(alloy_rlp::Error::Custom(
                    "unknown vote kind"
                ))),
                "kind byte {v}"
            ),
        }
    }
}

#[test]
fn unknown_vote_kind_is_an_rlp_error() {
    let vote = sample_vote(VoteKind::Commit);
    let mut payload = canonical(&vote);
    // The vote is a long list (two header bytes); its first field is the kind, one byte.
    assert_eq!(payload[0], 0xf8);
    assert_eq!(payload[2], 0x01);
    payload[2] = 0x02;
    let expected = || CodecError::Rlp(alloy_rlp::Error::Custom("unknown vote kind"));
    assert_eq!(decode_exact::<Vote>(&payload), Err(expected()));
    let frame = hand_frame(WIRE_VERSION, Kind::Vote as u8, &payload);
    assert_eq!(decode_frame::<Vote>(&frame), Err(expected()));
}

#[test]
fn non_canonical_integers_are_refused() {
    // Height 5 must be the single byte 0x05: 0x81 0x05 and a leading zero are refused.
    let share = PorShare {
        height: Height(5),
        miner: Address::repeat_byte(1),
        nonce: 0x0100,
    };
    let good = canonical(&share);
    assert_eq!(good[1], 0x05);
    let mut long_single = vec![good[0] + 1, 0x81, 0x05];
    long_single.extend_from_slice(&good[2..]);
    assert_eq!(
        decode_exact::<PorShare>(&long_single),
        Err(CodecError::Rlp(alloy_rlp::Error::NonCanonicalSingleByte))
    );
    // nonce 0x0100 is 0x82 0x01 0x00; with a leading zero it is 0x83 0x00 0x01 0x00.
    let n = good.len();
    assert_eq!(&good[n - 3..], &[0x82, 0x01, 0x00]);
    let mut leading_zero = vec![good[0] + 1];
    leading_zero.extend_from_slice(&good[1..n - 3]);
    leading_zero.extend_from_slice(&[0x83, 0x00, 0x01, 0x00]);
    assert_eq!(
        decode_exact::<PorShare>(&leading_zero),
        Err(CodecError::Rlp(alloy_rlp::Error::LeadingZero))
    );
}

/// A named one-field change to a header.
type HeaderEdit = (&'static str, fn(&mut Header));

#[test]
fn header_hash_covers_every_field() {
    let base = sample_header();
    let edits: Vec<HeaderEdit> = vec![
        ("version", |h| h.version += 1),
        ("region", |h| h.region.0 += 1),
        ("height", |h| h.height = h.height.next()),
        ("round", |h| h.round = h.round.next()),
        ("parent", |h| h.parent.0[31] ^= 1),
        ("timestamp_ms", |h| h.timestamp_ms += 1),
        ("proposer", |h| h.proposer.0 += 1),
        ("random_reveal", |h| h.random_reveal.0[95] ^= 1),
        ("mix", |h| h.mix[0] ^= 0x80),
        ("cn_set_root", |h| h.cn_set_root[5] ^= 4),
        ("next_cn_set", |h| h.next_cn_set.clear()),
        ("next_cn_set key", |h| h.next_cn_set[0].0[0] ^= 1),
        ("segments", |h| h.segments.push(h.segments[0].clone())),
        ("segment chain", |h| h.segments[0].chain_id.0 += 1),
        ("segment tx_count", |h| h.segments[0].tx_count += 1),
        ("segment tx_root", |h| h.segments[0].tx_root[0] ^= 1),
        ("segment receipts_root", |h| {
            h.segments[0].receipts_root[0] ^= 1
        }),
        ("segment state_root", |h| h.segments[0].state_root[0] ^= 1),
    ];
    let mut seen = vec![base.hash()];
    for (field, edit) in edits {
        let mut h = base.clone();
        edit(&mut h);
        let hash = h.hash();
        assert!(
            !seen.contains(&hash),
            "changing {field} left the hash unchanged"
        );
        seen.push(hash);
        // Stable across the frame and the bare encoding.
        assert_eq!(decode_exact::<Header>(&canonical(&h)).unwrap().hash(), hash);
        let sealed = SealedHeader {
            header: h,
            seal: sample_certificate(),
        };
        assert_eq!(
            decode_frame::<SealedHeader>(&encode_frame(&sealed))
                .unwrap()
                .hash(),
            hash
        );
    }
    // The hash is a pure function of the header.
    assert_eq!(base.hash(), sample_header().hash());
    assert_eq!(base.hash(), BlockHash(sha256(&canonical(&base))));
}

#[test]
fn seal_is_not_part_of_the_hash() {
    let a = sample_sealed();
    let mut b = a.clone();
    b.seal.round = b.seal.round.next();
    b.seal.aggregate.0[0] ^= 1;
    b.seal.signers.set(1);
    assert_ne!(canonical(&a), canonical(&b));
    assert_eq!(a.hash(), b.hash());
    let block = Block {
        sealed: a.clone(),
        segments: vec![Segment {
            chain_id: ChainId(7),
            txs: vec![Bytes::from_static(b"tx")],
        }],
    };
    assert_eq!(block.hash(), a.hash());
}

#[test]
fn signer_bitmap_basics() {
    assert_eq!(SignerBitmap::with_members(0).0.len(), 0);
    assert_eq!(SignerBitmap::with_members(1).0.len(), 1);
    assert_eq!(SignerBitmap::with_members(8).0.len(), 1);
    assert_eq!(SignerBitmap::with_members(9).0.len(), 2);

    let mut b = SignerBitmap::with_members(10);
    assert_eq!(b.count(), 0);
    assert!(b.fits(10));
    b.set(0);
    b.set(9);
    b.set(9);
    // LSB-first within each byte.
    assert_eq!(b.0.as_ref(), &[0b0000_0001, 0b0000_0010]);
    assert!(b.get(0) && b.get(9));
    assert!(!b.get(1) && !b.get(8) && !b.get(10));
    assert!(!b.get(1_000_000), "outside the bitmap is not a signer");
    assert_eq!(b.count(), 2);
    assert_eq!(b.signers().collect::<Vec<_>>(), vec![0, 9]);

    assert!(b.fits(10));
    assert!(b.fits(16), "same byte count, every signer inside");
    assert!(!b.fits(9), "signer 9 is past a 9-member committee");
    assert!(!b.fits(8), "wrong length for 8 members");
    assert!(!b.fits(17), "wrong length for 17 members");
    assert!(!b.fits(0));

    // A bit past the member count in the last byte, as a peer might send it.
    let peer = SignerBitmap(Bytes::from(vec![0x00, 0b0000_0100]));
    assert_eq!(peer.count(), 1);
    assert!(!peer.fits(10));
    assert!(peer.fits(11));
    // The empty bitmap fits only the empty committee.
    assert!(SignerBitmap::default().fits(0));
    assert!(!SignerBitmap::default().fits(1));
}

#[test]
#[should_panic(expected = "signer 8 outside a bitmap of 1 bytes")]
fn signer_bitmap_set_outside_panics() {
    SignerBitmap::with_members(8).set(8);
}

#[test]
fn evidence_requires_a_real_conflict() {
    let first = sample_sealed();

    // The same header twice is not a conflict, even under a different seal.
    assert!(EquivocationEvidence::new(first.clone(), first.clone()).is_none());
    let mut reseal = first.clone();
    reseal.seal.round = reseal.seal.round.next();
    assert!(EquivocationEvidence::new(first.clone(), reseal).is_none());

    // Different heights are not a conflict.
    let mut later = first.clone();
    later.header.height = later.header.height.next();
    assert!(EquivocationEvidence::new(first.clone(), later).is_none());

    // Two different headers at one height are.
    let mut other = first.clone();
    other.header.mix[0] ^= 1;
    let evidence = EquivocationEvidence::new(first.clone(), other.clone()).expect("a conflict");
    assert!(evidence.is_conflict());
    assert_eq!(evidence.height(), Height(42));
    assert_eq!(evidence.first, first);
    assert_eq!(evidence.second, other);
    let decoded: EquivocationEvidence = decode_frame(&encode_frame(&evidence)).unwrap();
    assert_eq!(decoded, evidence);
    assert!(decoded.is_conflict());

    // The codec carries a non-conflict too; `is_conflict` is what rejects it.
    let bogus = EquivocationEvidence {
        first: first.clone(),
        second: first,
    };
    let decoded: EquivocationEvidence = decode_frame(&encode_frame(&bogus)).unwrap();
    assert!(!decoded.is_conflict());
}

/// A sealed header whose canonical encoding is exactly `MAX_HEADER_BYTES`, padded through the
/// signer bitmap.
fn max_size_sealed_header(mix: u8) -> SealedHeader {
    let commitment = SegmentCommitment {
        chain_id: ChainId(1),
        tx_count: 1,
        tx_root: B256::repeat_byte(1),
        receipts_root: B256::repeat_byte(2),
        state_root: B256::repeat_byte(3),
    };
    let per_segment = canonical(&commitment).len();
    let mut sealed = sample_sealed();
    sealed.header.mix = B256::repeat_byte(mix);
    // Bitmaps of 300..600 bytes keep both the bitmap's and the seal's RLP headers at 3 bytes.
    sealed.seal.signers = SignerBitmap(Bytes::from(vec![0u8; 300]));
    sealed.header.segments.clear();
    let mut count = (MAX_HEADER_BYTES - canonical(&sealed).len()) / per_segment;
    // Growing list headers may overshoot by a few bytes; step back until it fits.
    sealed.header.segments = vec![commitment; count];
    while canonical(&sealed).len() > MAX_HEADER_BYTES {
        count -= 1;
        sealed.header.segments.truncate(count);
    }
    let short = MAX_HEADER_BYTES - canonical(&sealed).len();
    assert!(short < 300, "{short}");
    sealed.seal.signers = SignerBitmap(Bytes::from(vec![0u8; 300 + short]));
    assert_eq!(canonical(&sealed).len(), MAX_HEADER_BYTES);
    sealed
}

/// Evidence must be able to carry any two sealed headers that are themselves accepted on the
/// wire; otherwise equivocators can make their evidence unsendable by proposing near-maximal
/// headers.
#[test]
fn evidence_of_two_maximal_sealed_headers_fits() {
    let first = max_size_sealed_header(1);
    let second = max_size_sealed_header(2);
    // Each header alone is accepted. (Compared without `assert_eq!`: the values are 4 MiB.)
    let frame = encode_frame(&first);
    match decode_frame::<SealedHeader>(&frame) {
        Ok(decoded) => assert!(decoded == first),
        Err(e) => panic!("a maximal sealed header was refused: {e}"),
    }
    let evidence = EquivocationEvidence::new(first, second).expect("a conflict");
    // Today: TooLarge ("frame of 8388618 bytes exceeds the 8388614-byte limit"): the payload
    // is 2 * MAX_HEADER_BYTES plus the 4-byte RLP header of the evidence's own list.
    match decode_frame::<EquivocationEvidence>(&encode_frame(&evidence)) {
        Ok(decoded) => assert!(decoded == evidence),
        Err(e) => panic!("evidence of two accepted headers was refused: {e}"),
    }
}
