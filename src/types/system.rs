//! Framing of regionchain system transactions (segment 0): `0xfe ‖ kind ‖ RLP(payload)`.
//!
//! `0xfe` is not a valid start of an Ethereum envelope (typed envelopes use 0x00–0x7f, legacy
//! ones ≥ 0xc0), so a system transaction can never be confused with a user transaction. The
//! kind byte says which payload follows; each payload type decodes and verifies itself.

use alloy_primitives::Bytes;
use thiserror::Error;

/// First byte of every system transaction.
pub const SYSTEM_TX_PREFIX: u8 = 0xfe;

/// Largest system transaction accepted anywhere (pool, segment 0, RPC): a CN-set change for
/// the largest set, or a registration with its maximum allocations, fits with room to spare.
pub const MAX_SYSTEM_TX_BYTES: usize = 256 << 10;

/// What a system transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SystemKind {
    /// Replacement of the CN set ([`crate::consensus::governance::CnSetChange`]).
    CnSetChange = 1,
    /// Registration of a servicechain ([`crate::chain::servicechain::Registration`]).
    RegisterServicechain = 2,
    /// A proof-of-replication share ([`crate::chain::pop::ShareSubmission`]).
    PorShare = 3,
    /// Registration of a ranger node for PoSC probes and rewards
    /// ([`crate::chain::posc::RnRegistration`]).
    RegisterRn = 4,
    /// A CN's attestation of a failed probe, gossiped between CNs only
    /// ([`crate::chain::posc::ProbeAttestation`]).
    ProbeAttestation = 5,
    /// A quorum's penalty of an RN that failed its probe ([`crate::chain::posc::Penalty`]).
    Penalty = 6,
    /// Withdrawal of unlocked rewards to a servicechain account
    /// ([`crate::chain::withdrawal::Withdrawal`]).
    Withdrawal = 7,
    /// Addition of a region to the region directory
    /// ([`crate::chain::directory::RegionCreation`]).
    CreateRegion = 8,
    /// Another region's sealed header, recorded in the directory region's regionchain
    /// ([`crate::chain::region_checkpoint::RegionCheckpoint`]).
    RegionCheckpoint = 9,
    /// A region's order to move one of its servicechains to another region
    /// ([`crate::chain::migration::MoveOrder`]).
    MoveServicechain = 10,
    /// A region's start of a servicechain moved to it
    /// ([`crate::chain::migration::Adoption`]).
    AdoptServicechain = 11,
    /// One more chunk of the state of a chain being adopted
    /// ([`crate::chain::migration::AdoptionChunk`]).
    AdoptionChunk = 12,
}

impl SystemKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::CnSetChange),
            2 => Some(Self::RegisterServicechain),
            3 => Some(Self::PorShare),
            4 => Some(Self::RegisterRn),
            5 => Some(Self::ProbeAttestation),
            6 => Some(Self::Penalty),
            7 => Some(Self::Withdrawal),
            8 => Some(Self::CreateRegion),
            9 => Some(Self::RegionCheckpoint),
            10 => Some(Self::MoveServicechain),
            11 => Some(Self::AdoptServicechain),
            12 => Some(Self::AdoptionChunk),
            _ => None,
        }
    }
}

/// Why bytes are not a well-formed system transaction.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SystemTxError {
    #[error("not a system transaction")]
    NotSystem,
    #[error("system transaction of {0} bytes exceeds the {MAX_SYSTEM_TX_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("unknown system transaction kind {0}")]
    UnknownKind(u8),
    #[error("system transaction is a {got:?}, expected a {expected:?}")]
    WrongKind {
        got: SystemKind,
        expected: SystemKind,
    },
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed { kind: SystemKind, reason: String },
}

/// Whether raw bytes are a system transaction rather than an Ethereum one.
pub fn is_system_tx(raw: &[u8]) -> bool {
    raw.first() == Some(&SYSTEM_TX_PREFIX)
}

/// `payload` framed as a system transaction of `kind`.
pub fn encode<T: alloy_rlp::Encodable>(kind: SystemKind, payload: &T) -> Bytes {
    let mut out = vec![SYSTEM_TX_PREFIX, kind as u8];
    payload.encode(&mut out);
    Bytes::from(out)
}

/// The kind of a framed system transaction and its payload bytes.
pub fn split(raw: &[u8]) -> Result<(SystemKind, &[u8]), SystemTxError> {
    if raw.len() > MAX_SYSTEM_TX_BYTES {
        return Err(SystemTxError::TooLarge(raw.len()));
    }
    match raw {
        [SYSTEM_TX_PREFIX, kind, payload @ ..] => SystemKind::from_byte(*kind)
            .map(|k| (k, payload))
            .ok_or(SystemTxError::UnknownKind(*kind)),
        _ => Err(SystemTxError::NotSystem),
    }
}

/// Decodes a system transaction that must be of `expected` kind.
pub fn decode<T: alloy_rlp::Decodable>(
    raw: &[u8],
    expected: SystemKind,
) -> Result<T, SystemTxError> {
    let (got, payload) = split(raw)?;
    if got != expected {
        return Err(SystemTxError::WrongKind { got, expected });
    }
    super::codec::decode_exact(payload).map_err(|e| SystemTxError::Malformed {
        kind: expected,
        reason: e.to_string(),
    })
}
