//! Proof of Storage and Service Capacity (PoSC): CNs probe ranger nodes with reads, and RNs
//! that do not answer are penalized, then slashed.
//!
//! ```text
//!  RN operator ── RegisterRn (reward address, endpoint, node key; signed by the reward key) ─► segment 0
//!  container h commits ─► every CN ranks the registered RNs by sha256(mix(h) ‖ h ‖ "posc" ‖ reward)
//!                          and probes the `probes_per_round` lowest: block h over QUIC, with a deadline
//!  probe fails        ─► the CN signs a ProbeAttestation (BLS over region ‖ h ‖ RN) and gossips it
//!  proposer           ─► folds a quorum of attestations for (h, RN) into one Penalty
//!                          (signer bitmap over the CN set + aggregate signature) in segment 0
//!  Penalty commits    ─► the RN's count grows; beyond `penalty_limit` its rewards are slashed
//! ```
//!
//! The selection is the evidence: every node recomputes it from the committed `mix(h)`, so a
//! penalty names a round and an RN and is refused unless that RN was selected then. A penalty
//! needs strictly more than two thirds of the CN set: with at most `f` Byzantine CNs, an RN
//! that answered every honest CN can never be penalized, whatever the Byzantine ones sign.

use crate::consensus::selection::{quorum, CnSet};
use crate::crypto::bls::{self, PublicKeyBytes, SecretKey, Signature, SignatureBytes};
use crate::crypto::hash::sha256_concat;
use crate::crypto::tx::{AccountSigned, Signable};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{ChainId, CnIndex, Height, SignerBitmap};
use alloy_primitives::{keccak256, Address, Bytes, B256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use thiserror::Error;

/// Containers after its registration before an RN is probed (time to sync).
pub const PROBE_GRACE: u64 = 16;
/// Containers after a probe round during which its penalty may still be committed.
pub const PENALTY_WINDOW: u64 = 32;
/// Longest endpoint string accepted.
pub const MAX_ENDPOINT_LEN: usize = 64;
/// Most RN registrations one container accepts.
pub const MAX_REGISTRATIONS_PER_CONTAINER: usize = 64;
/// Most penalties one container accepts.
pub const MAX_PENALTIES_PER_CONTAINER: usize = 64;

const REGISTRATION_DOMAIN: &[u8] = b"KAON/rn-registration/v1";
const ATTESTATION_DOMAIN: &[u8] = b"KAON/posc/attestation/v1";
const RANK_DOMAIN: &[u8] = b"posc";
const NODE_PROOF_DOMAIN: &[u8] = b"KAON/rn-node-key/v1";

/// Settings fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoscParams {
    /// RNs probed after every container.
    pub probes_per_round: u32,
    /// Penalties tolerated; one more slashes the RN's rewards and resets its count (`k`).
    pub penalty_limit: u32,
    /// How long a CN waits for a probe's answer (the RN may take half of it to receive the
    /// probed block).
    pub probe_deadline_ms: u64,
}

impl Default for PoscParams {
    fn default() -> Self {
        Self {
            probes_per_round: 1,
            penalty_limit: 3,
            probe_deadline_ms: 2_000,
        }
    }
}

/// What an RN operator registers.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct RnSpec {
    /// The regionchain joined (a registration cannot be replayed in another region).
    pub region: ChainId,
    /// Where rewards are paid; its key signs the registration.
    pub reward: Address,
    /// The RN-network address CNs probe (`host:port`).
    pub endpoint: String,
    /// The BLS node key the RN proves on every connection.
    pub node_key: PublicKeyBytes,
    /// Strictly increasing per reward address: a newer registration replaces the older one,
    /// and an old one cannot be replayed over it.
    pub sequence: u64,
    /// The node key's BLS signature over [`RnSpec::node_message`]: the registrant holds the
    /// key, so nobody registers another RN's endpoint and key to be answered for.
    pub node_proof: SignatureBytes,
}

impl RnSpec {
    /// What the node key signs: every field but the proof itself.
    pub fn node_message(&self) -> Vec<u8> {
        [
            NODE_PROOF_DOMAIN,
            &self.region.0.to_be_bytes(),
            self.reward.as_slice(),
            self.endpoint.as_bytes(),
            &self.node_key.0,
            &self.sequence.to_be_bytes(),
        ]
        .concat()
    }

    /// Sets the proof with the node's secret key.
    pub fn prove_node_key(mut self, node_key: &SecretKey) -> Self {
        self.node_key = node_key.public_key().to_bytes();
        self.node_proof = node_key.sign(&self.node_message()).to_bytes();
        self
    }
}

impl Signable for RnSpec {
    /// The digest the reward key signs.
    fn digest(&self) -> B256 {
        keccak256([REGISTRATION_DOMAIN, &canonical(self)].concat())
    }
}

/// An RN registration signed with its reward address's key.
pub type RnRegistration = AccountSigned<RnSpec>;

/// "CN `signer` probed the RN selected at `round` and it did not answer." Gossiped between CNs
/// as a system transaction; never committed itself, only folded into a [`Penalty`].
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct ProbeAttestation {
    pub round: Height,
    pub rn: Address,
    pub signer: CnIndex,
    pub signature: SignatureBytes,
}

/// A quorum of the CN set attesting that the RN selected at `round` failed its probe.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Penalty {
    pub round: Height,
    pub rn: Address,
    /// Bit `i` = CN `i` of the set in force where the penalty is committed.
    pub signers: SignerBitmap,
    pub aggregate: SignatureBytes,
}

/// Why a PoSC transaction was refused (it is then marked invalid and changes nothing).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PoscError {
    #[error(transparent)]
    Framing(#[from] SystemTxError),
    #[error("registration is for region {got}, this is {expected}")]
    WrongRegion { got: ChainId, expected: ChainId },
    #[error(
        "endpoint {0:?} is not a host:port socket address of at most {MAX_ENDPOINT_LEN} bytes"
    )]
    BadEndpoint(String),
    #[error("node key is not a valid BLS public key, or its proof does not verify")]
    BadNodeKey,
    #[error("node key already registered by {0}")]
    NodeKeyTaken(Address),
    #[error("signature is not the reward address's")]
    NotRewardOwner,
    #[error("sequence {got} does not exceed the registered {registered}")]
    StaleSequence { got: u64, registered: u64 },
    #[error("container already holds {0} such transactions")]
    ContainerFull(usize),
    #[error("round {round} is not before container {container}")]
    FutureRound { round: Height, container: Height },
    #[error(
        "round {round} is past the penalty window (container {container}, window {PENALTY_WINDOW})"
    )]
    Expired { round: Height, container: Height },
    #[error("RN {rn} was not selected for probing at round {round}")]
    NotSelected { round: Height, rn: Address },
    #[error("RN {rn} is already penalized for round {round}")]
    AlreadyPenalized { round: Height, rn: Address },
    #[error("signer bitmap does not fit a CN set of {0}")]
    BadBitmap(usize),
    #[error("{signers} attesting CNs is short of the quorum of {quorum}")]
    NoQuorum { signers: usize, quorum: usize },
    #[error("aggregate attestation signature does not verify")]
    BadSignature,
    #[error("probe attestations travel between CNs; only a penalty is a transaction")]
    BareAttestation,
}

impl RnRegistration {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::RegisterRn, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, PoscError> {
        Ok(system::decode(raw, SystemKind::RegisterRn)?)
    }

    /// The endpoint as a socket address, once [`verify`](Self::verify) passed.
    pub fn endpoint(&self) -> Result<SocketAddr, PoscError> {
        let endpoint = &self.spec.endpoint;
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(PoscError::BadEndpoint(endpoint.chars().take(16).collect()));
        }
        match endpoint.parse::<SocketAddr>() {
            // CNs must be able to dial it.
            Ok(addr) if !addr.ip().is_unspecified() && addr.port() != 0 => Ok(addr),
            _ => Err(PoscError::BadEndpoint(endpoint.clone())),
        }
    }

    /// Everything that does not depend on the registered set: region, endpoint, node key, and
    /// the reward key's signature.
    pub fn verify(&self, region: ChainId) -> Result<(), PoscError> {
        let spec = &self.spec;
        if spec.region != region {
            return Err(PoscError::WrongRegion {
                got: spec.region,
                expected: region,
            });
        }
        self.endpoint()?;
        let node_key =
            bls::PublicKey::try_from(&spec.node_key).map_err(|_| PoscError::BadNodeKey)?;
        let proven = Signature::try_from(&spec.node_proof)
            .is_ok_and(|sig| sig.verify(&node_key, &spec.node_message()));
        if !proven {
            return Err(PoscError::BadNodeKey);
        }
        if self.is_signed_by(spec.reward) {
            Ok(())
        } else {
            Err(PoscError::NotRewardOwner)
        }
    }
}

/// The message a CN signs to attest a failed probe.
pub fn attestation_message(region: ChainId, round: Height, rn: Address) -> Vec<u8> {
    [
        ATTESTATION_DOMAIN,
        &region.0.to_be_bytes(),
        &round.0.to_be_bytes(),
        rn.as_slice(),
    ]
    .concat()
}

impl ProbeAttestation {
    /// CN `signer`'s attestation that `rn` failed its probe of `round`.
    pub fn sign(
        region: ChainId,
        round: Height,
        rn: Address,
        signer: CnIndex,
        key: &SecretKey,
    ) -> Self {
        let signature = key.sign(&attestation_message(region, round, rn)).to_bytes();
        Self {
            round,
            rn,
            signer,
            signature,
        }
    }

    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::ProbeAttestation, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, PoscError> {
        Ok(system::decode(raw, SystemKind::ProbeAttestation)?)
    }

    /// Whether the signer is in `set` and its signature verifies.
    pub fn verify(&self, region: ChainId, set: &CnSet) -> bool {
        let Ok(key) = set.key(self.signer) else {
            return false;
        };
        Signature::try_from(&self.signature)
            .is_ok_and(|sig| sig.verify(key, &attestation_message(region, self.round, self.rn)))
    }
}

impl Penalty {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::Penalty, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, PoscError> {
        Ok(system::decode(raw, SystemKind::Penalty)?)
    }

    /// Checks the quorum and the aggregate signature against `set`.
    pub fn verify_signatures(&self, region: ChainId, set: &CnSet) -> Result<(), PoscError> {
        if !self.signers.fits(set.len()) {
            return Err(PoscError::BadBitmap(set.len()));
        }
        let (signers, needed) = (self.signers.count(), quorum(set.len()));
        if signers < needed {
            return Err(PoscError::NoQuorum {
                signers,
                quorum: needed,
            });
        }
        let keys: Vec<_> = self
            .signers
            .signers()
            .filter_map(|i| set.keys().get(i))
            .collect();
        let message = attestation_message(region, self.round, self.rn);
        let valid = bls::aggregate_public_keys(keys.iter().copied())
            .ok()
            .zip(Signature::try_from(&self.aggregate).ok())
            .is_some_and(|(key, sig)| sig.verify(&key, &message));
        if valid {
            Ok(())
        } else {
            Err(PoscError::BadSignature)
        }
    }
}

/// What the regionchain keeps per registered RN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RnEntry {
    pub endpoint: SocketAddr,
    pub node_key: PublicKeyBytes,
    pub sequence: u64,
    /// Height of the container that first registered it (probes start after a grace).
    pub registered_at: Height,
}

/// An RN a CN must probe after a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub round: Height,
    pub rn: Address,
    pub endpoint: SocketAddr,
    pub node_key: PublicKeyBytes,
}

/// Registered RNs and the recent probe selections.
#[derive(Debug, Clone, Default)]
pub struct PoscState {
    pub params: PoscParams,
    pub rns: BTreeMap<Address, RnEntry>,
    /// RNs selected at each round of the penalty window.
    selections: BTreeMap<Height, Vec<Address>>,
    /// (round, RN) pairs penalized within the window.
    penalized: BTreeSet<(Height, Address)>,
}

/// The public rank of RN `rn` for the probes after container `round`, given `mix(round)`.
pub fn rank(mix: B256, round: Height, rn: &Address) -> B256 {
    sha256_concat(&[
        mix.as_slice(),
        &round.0.to_be_bytes(),
        RANK_DOMAIN,
        rn.as_slice(),
    ])
}

impl PoscState {
    pub fn new(params: PoscParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// The RNs probed after container `round`: the `probes_per_round` lowest ranks among the
    /// RNs registered at least [`PROBE_GRACE`] containers before.
    pub fn select(&self, mix: B256, round: Height) -> Vec<Address> {
        let mut ranked: Vec<(B256, Address)> = self
            .rns
            .iter()
            .filter(|(_, e)| e.registered_at.0 + PROBE_GRACE <= round.0)
            .map(|(a, _)| (rank(mix, round, a), *a))
            .collect();
        let n = (self.params.probes_per_round as usize).min(ranked.len());
        if n < ranked.len() {
            ranked.select_nth_unstable(n);
            ranked.truncate(n);
        }
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, a)| a).collect()
    }

    /// The RNs selected at `round` (empty outside the penalty window).
    pub fn selected(&self, round: Height) -> &[Address] {
        self.selections.get(&round).map_or(&[], Vec::as_slice)
    }

    /// What to probe after container `round`, with where to reach each RN.
    pub fn targets(&self, round: Height) -> Vec<ProbeTarget> {
        self.selected(round)
            .iter()
            .filter_map(|rn| {
                self.rns.get(rn).map(|e| ProbeTarget {
                    round,
                    rn: *rn,
                    endpoint: e.endpoint,
                    node_key: e.node_key,
                })
            })
            .collect()
    }

    /// Checks a registration for container `container` given the ones it accepted before.
    pub fn check_registration(
        &self,
        registration: &RnRegistration,
        region: ChainId,
        earlier: &[RnRegistration],
    ) -> Result<(), PoscError> {
        if earlier.len() >= MAX_REGISTRATIONS_PER_CONTAINER {
            return Err(PoscError::ContainerFull(MAX_REGISTRATIONS_PER_CONTAINER));
        }
        registration.verify(region)?;
        let spec = &registration.spec;
        let registered = earlier
            .iter()
            .rev()
            .find(|r| r.spec.reward == spec.reward)
            .map(|r| r.spec.sequence)
            .or_else(|| self.rns.get(&spec.reward).map(|e| e.sequence));
        if let Some(registered) = registered.filter(|r| spec.sequence <= *r) {
            return Err(PoscError::StaleSequence {
                got: spec.sequence,
                registered,
            });
        }
        let taken = self
            .rns
            .iter()
            .map(|(a, e)| (*a, e.node_key))
            .chain(earlier.iter().map(|r| (r.spec.reward, r.spec.node_key)))
            .find(|(a, key)| *key == spec.node_key && *a != spec.reward);
        match taken {
            Some((owner, _)) => Err(PoscError::NodeKeyTaken(owner)),
            None => Ok(()),
        }
    }

    /// Checks that `(round, rn)` may be penalized in container `container` (the selection
    /// evidence and the window), ignoring signatures.
    pub fn check_claim(
        &self,
        round: Height,
        rn: Address,
        container: Height,
        earlier: &[Penalty],
    ) -> Result<(), PoscError> {
        if round >= container {
            return Err(PoscError::FutureRound { round, container });
        }
        if container.0 - round.0 > PENALTY_WINDOW {
            return Err(PoscError::Expired { round, container });
        }
        if !self.selected(round).contains(&rn) {
            return Err(PoscError::NotSelected { round, rn });
        }
        let done = self.penalized.contains(&(round, rn))
            || earlier.iter().any(|p| p.round == round && p.rn == rn);
        if done {
            return Err(PoscError::AlreadyPenalized { round, rn });
        }
        Ok(())
    }

    /// Checks a penalty for container `container` against the CN set in force there.
    pub fn check_penalty(
        &self,
        penalty: &Penalty,
        container: Height,
        region: ChainId,
        set: &CnSet,
        earlier: &[Penalty],
    ) -> Result<(), PoscError> {
        if earlier.len() >= MAX_PENALTIES_PER_CONTAINER {
            return Err(PoscError::ContainerFull(MAX_PENALTIES_PER_CONTAINER));
        }
        self.check_claim(penalty.round, penalty.rn, container, earlier)?;
        penalty.verify_signatures(region, set)
    }

    /// Applies a committed container's registrations and penalties, and records the probe
    /// selection for `round` from `mix(round)`. Returns the RNs whose penalties were counted.
    pub fn apply(
        &mut self,
        round: Height,
        mix: B256,
        registrations: &[RnRegistration],
        penalties: &[Penalty],
    ) -> Vec<Address> {
        for registration in registrations {
            // Verified before it was accepted; the endpoint parses.
            if let Ok(endpoint) = registration.endpoint() {
                let spec = &registration.spec;
                // The grace runs from the first registration: re-registering (a new endpoint
                // or key) must not buy another grace away from probes.
                let registered_at = self
                    .rns
                    .get(&spec.reward)
                    .map_or(round, |e| e.registered_at);
                self.rns.insert(
                    spec.reward,
                    RnEntry {
                        endpoint,
                        node_key: spec.node_key,
                        sequence: spec.sequence,
                        registered_at,
                    },
                );
            }
        }
        for penalty in penalties {
            self.penalized.insert((penalty.round, penalty.rn));
        }
        let selection = self.select(mix, round);
        if !selection.is_empty() {
            self.selections.insert(round, selection);
        }
        let oldest = Height(round.0.saturating_sub(PENALTY_WINDOW));
        self.selections = self.selections.split_off(&oldest);
        self.penalized.retain(|(r, _)| *r >= oldest);
        penalties.iter().map(|p| p.rn).collect()
    }

    /// Folds valid attestations into penalties a proposer can include in container
    /// `container`: one per (round, RN) that a quorum of `set` attests. Each group's aggregate
    /// is verified once; a group whose aggregate fails is checked one signature at a time and
    /// the forgeries dropped.
    pub fn assemble(
        &self,
        attestations: &[ProbeAttestation],
        container: Height,
        region: ChainId,
        set: &CnSet,
    ) -> Vec<Penalty> {
        let mut groups: BTreeMap<(Height, Address), BTreeMap<CnIndex, &ProbeAttestation>> =
            BTreeMap::new();
        for a in attestations {
            if (a.signer.0 as usize) < set.len() {
                groups
                    .entry((a.round, a.rn))
                    .or_default()
                    .insert(a.signer, a);
            }
        }
        let mut penalties: Vec<Penalty> = Vec::new();
        for ((round, rn), signed) in groups {
            if penalties.len() >= MAX_PENALTIES_PER_CONTAINER
                || signed.len() < quorum(set.len())
                || self.check_claim(round, rn, container, &penalties).is_err()
            {
                continue;
            }
            let mut penalty = fold(set.len(), signed.values().copied());
            if penalty.verify_signatures(region, set).is_err() {
                let honest = signed.values().copied().filter(|a| a.verify(region, set));
                penalty = fold(set.len(), honest);
                if penalty.verify_signatures(region, set).is_err() {
                    continue;
                }
            }
            penalties.push(penalty);
        }
        penalties
    }

    /// Whether an attestation can still become (part of) a penalty.
    pub fn attestation_live(&self, a: &ProbeAttestation, container: Height) -> bool {
        a.round <= container
            && container.0 - a.round.0 <= PENALTY_WINDOW
            && !self.penalized.contains(&(a.round, a.rn))
    }
}

/// One penalty from attestations of a single (round, RN), all assumed to verify.
fn fold<'a>(members: usize, attestations: impl Iterator<Item = &'a ProbeAttestation>) -> Penalty {
    let mut signers = SignerBitmap::with_members(members);
    let mut sigs = Vec::new();
    let (mut round, mut rn) = (Height(0), Address::ZERO);
    for a in attestations {
        if let Ok(sig) = Signature::try_from(&a.signature) {
            signers.set(a.signer.0 as usize);
            sigs.push(sig);
            (round, rn) = (a.round, a.rn);
        }
    }
    let aggregate = bls::aggregate_signatures(&sigs)
        .map(|s| s.to_bytes())
        .unwrap_or_default();
    Penalty {
        round,
        rn,
        signers,
        aggregate,
    }
}
