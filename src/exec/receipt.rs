//! Receipts: what each transaction of a segment did, in the segment's order. A transaction
//! that ran (successfully, reverted or halted) has paid gas; one marked invalid did not run,
//! changed nothing and paid nothing, but keeps its place in the segment.
//!
//! The canonical encoding is RLP:
//!
//! ```text
//! receipt = [status, detail, gas_used, cumulative_gas_used, effective_gas_price,
//!            contract_address (empty or 20 bytes), [[address, [topic…], data]…]]
//! status  = 1 success | 0 failed (detail: 0 revert, else the halt code) | 2 invalid (detail:
//!           the invalid reason)
//! ```
//!
//! The receipts root is the SHA-256 Merkle root ([`merkle_root`]) of the leaves
//! `sha256(0x00 ‖ rlp(receipt))`, so one receipt can be proven with `merkle_proof`.

use crate::crypto::hash::{merkle_root, sha256, sha256_pair};
use alloy_primitives::{Address, Bloom, BloomInput, Bytes, B256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

/// Why a transaction was marked invalid (kept in its segment, no state change, no fee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InvalidReason {
    Undecodable = 1,
    BadSignature = 2,
    /// The EIP-155 chain id is not the segment's servicechain.
    WrongChain = 3,
    BadNonce = 4,
    /// Balance below `gas_limit * max_fee + value`.
    InsufficientFunds = 5,
    /// Gas limit below the intrinsic gas (or the EIP-7623 calldata floor).
    IntrinsicGas = 6,
    Unsupported = 7,
    /// Gas limit above what the segment has left.
    SegmentGasExhausted = 8,
    /// Fee cap below the chain's base fee.
    FeeCapBelowBaseFee = 9,
    /// Priority fee above the fee cap.
    PriorityFeeAboveCap = 10,
    /// EIP-3607: the sender has code.
    SenderHasCode = 11,
    /// EIP-3860: init code over 49 152 bytes.
    InitCodeTooLarge = 12,
}

impl InvalidReason {
    const ALL: [Self; 12] = [
        Self::Undecodable,
        Self::BadSignature,
        Self::WrongChain,
        Self::BadNonce,
        Self::InsufficientFunds,
        Self::IntrinsicGas,
        Self::Unsupported,
        Self::SegmentGasExhausted,
        Self::FeeCapBelowBaseFee,
        Self::PriorityFeeAboveCap,
        Self::SenderHasCode,
        Self::InitCodeTooLarge,
    ];

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == code)
    }
}

impl std::fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Undecodable => "transaction does not decode",
            Self::BadSignature => "signature does not recover a sender",
            Self::WrongChain => "chain id is not this servicechain's",
            Self::BadNonce => "nonce is not the sender's next nonce",
            Self::InsufficientFunds => "insufficient funds for gas * price + value",
            Self::IntrinsicGas => "intrinsic gas too low",
            Self::Unsupported => "unsupported transaction",
            Self::SegmentGasExhausted => "gas limit exceeds the segment's remaining gas",
            Self::FeeCapBelowBaseFee => "max fee per gas below the base fee",
            Self::PriorityFeeAboveCap => "max priority fee per gas above max fee per gas",
            Self::SenderHasCode => "sender is a contract (EIP-3607)",
            Self::InitCodeTooLarge => "init code too large (EIP-3860)",
        })
    }
}

/// Why a transaction that ran halted (all its gas is spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Halt {
    OutOfGas = 1,
    InvalidOpcode = 2,
    InvalidJump = 3,
    StackUnderflowOrOverflow = 4,
    CallTooDeep = 5,
    OutOfFunds = 6,
    CreateCollision = 7,
    /// Contract code over the EIP-170 limit, starting with 0xEF, or init code too large.
    ContractCode = 8,
    PrecompileFailed = 9,
    NonceOverflow = 10,
    /// A state change inside a static call.
    StaticViolation = 11,
    Other = 255,
}

impl Halt {
    const ALL: [Self; 12] = [
        Self::OutOfGas,
        Self::InvalidOpcode,
        Self::InvalidJump,
        Self::StackUnderflowOrOverflow,
        Self::CallTooDeep,
        Self::OutOfFunds,
        Self::CreateCollision,
        Self::ContractCode,
        Self::PrecompileFailed,
        Self::NonceOverflow,
        Self::StaticViolation,
        Self::Other,
    ];

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|h| *h as u8 == code)
    }
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OutOfGas => "out of gas",
            Self::InvalidOpcode => "invalid opcode",
            Self::InvalidJump => "invalid jump destination",
            Self::StackUnderflowOrOverflow => "stack underflow or overflow",
            Self::CallTooDeep => "call too deep",
            Self::OutOfFunds => "insufficient balance for transfer",
            Self::CreateCollision => "contract address collision",
            Self::ContractCode => "contract code rejected",
            Self::PrecompileFailed => "precompile failed",
            Self::NonceOverflow => "nonce overflow",
            Self::StaticViolation => "write protection (state change in a static call)",
            Self::Other => "halted",
        })
    }
}

/// What happened to one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxOutcome {
    Success,
    /// Ran and failed: gas is charged, state changes other than the fee are undone.
    Reverted,
    Halted(Halt),
    /// Never ran: no state change, no fee.
    Invalid(InvalidReason),
}

impl TxOutcome {
    /// Ethereum's receipt status (EIP-658): 1 for success, 0 otherwise.
    pub fn status(&self) -> bool {
        matches!(self, Self::Success)
    }

    fn codes(&self) -> (u8, u8) {
        match self {
            Self::Success => (STATUS_SUCCESS, 0),
            Self::Reverted => (STATUS_FAILED, 0),
            Self::Halted(h) => (STATUS_FAILED, *h as u8),
            Self::Invalid(r) => (STATUS_INVALID, *r as u8),
        }
    }

    fn from_codes(status: u8, detail: u8) -> Option<Self> {
        match (status, detail) {
            (STATUS_SUCCESS, 0) => Some(Self::Success),
            (STATUS_FAILED, 0) => Some(Self::Reverted),
            (STATUS_FAILED, code) => Halt::from_code(code).map(Self::Halted),
            (STATUS_INVALID, code) => InvalidReason::from_code(code).map(Self::Invalid),
            _ => None,
        }
    }
}

const STATUS_FAILED: u8 = 0;
const STATUS_SUCCESS: u8 = 1;
const STATUS_INVALID: u8 = 2;

/// An event a contract emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, RlpEncodable, RlpDecodable)]
pub struct Log {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

/// The receipt of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub outcome: TxOutcome,
    /// Gas charged (after refunds); 0 for an invalid transaction.
    pub gas_used: u64,
    /// Gas used by the segment up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// Price per gas paid: `min(max_fee, base_fee + priority_fee)`, or the gas price; 0 when
    /// invalid.
    pub effective_gas_price: u128,
    /// The address a contract-creating transaction created (or would have, had it succeeded).
    pub contract_address: Option<Address>,
    pub logs: Vec<Log>,
}

impl Receipt {
    /// The receipt of a transaction marked invalid.
    pub fn invalid(reason: InvalidReason, cumulative_gas_used: u64) -> Self {
        Self {
            outcome: TxOutcome::Invalid(reason),
            gas_used: 0,
            cumulative_gas_used,
            effective_gas_price: 0,
            contract_address: None,
            logs: Vec::new(),
        }
    }

    /// Ethereum's 2048-bit bloom over this receipt's log addresses and topics.
    pub fn bloom(&self) -> Bloom {
        logs_bloom(std::slice::from_ref(self))
    }

    /// The canonical (RLP) bytes.
    pub fn encoded(&self) -> Vec<u8> {
        alloy_rlp::encode(self)
    }
}

/// The RLP layout of a receipt (see the module docs), as decoded.
#[derive(RlpEncodable, RlpDecodable)]
struct ReceiptRlp {
    status: u8,
    detail: u8,
    gas_used: u64,
    cumulative_gas_used: u64,
    effective_gas_price: u128,
    contract_address: Bytes,
    logs: Vec<Log>,
}

impl Receipt {
    fn contract_bytes(&self) -> &[u8] {
        self.contract_address.as_ref().map_or(&[], |a| a.as_slice())
    }

    /// Length of the list payload: the fields of [`ReceiptRlp`], in order.
    fn payload_length(&self) -> usize {
        let (status, detail) = self.outcome.codes();
        status.length()
            + detail.length()
            + self.gas_used.length()
            + self.cumulative_gas_used.length()
            + self.effective_gas_price.length()
            + self.contract_bytes().length()
            + alloy_rlp::list_length(&self.logs)
    }
}

/// Encodes exactly as [`ReceiptRlp`] does, without building one.
impl Encodable for Receipt {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        let (status, detail) = self.outcome.codes();
        alloy_rlp::Header {
            list: true,
            payload_length: self.payload_length(),
        }
        .encode(out);
        status.encode(out);
        detail.encode(out);
        self.gas_used.encode(out);
        self.cumulative_gas_used.encode(out);
        self.effective_gas_price.encode(out);
        self.contract_bytes().encode(out);
        alloy_rlp::encode_list(&self.logs, out);
    }

    fn length(&self) -> usize {
        let payload = self.payload_length();
        payload + alloy_rlp::length_of_length(payload)
    }
}

#[cfg(test)]
impl Receipt {
    fn to_rlp(&self) -> ReceiptRlp {
        let (status, detail) = self.outcome.codes();
        ReceiptRlp {
            status,
            detail,
            gas_used: self.gas_used,
            cumulative_gas_used: self.cumulative_gas_used,
            effective_gas_price: self.effective_gas_price,
            contract_address: self
                .contract_address
                .map_or_else(Bytes::new, |a| Bytes::copy_from_slice(a.as_slice())),
            logs: self.logs.clone(),
        }
    }
}

impl Decodable for Receipt {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let r = ReceiptRlp::decode(buf)?;
        let outcome = TxOutcome::from_codes(r.status, r.detail)
            .ok_or(alloy_rlp::Error::Custom("unknown receipt status"))?;
        let contract_address = match r.contract_address.len() {
            0 => None,
            20 => Some(Address::from_slice(&r.contract_address)),
            _ => return Err(alloy_rlp::Error::Custom("contract address is not 20 bytes")),
        };
        Ok(Self {
            outcome,
            gas_used: r.gas_used,
            cumulative_gas_used: r.cumulative_gas_used,
            effective_gas_price: r.effective_gas_price,
            contract_address,
            logs: r.logs,
        })
    }
}

/// The two parts of a log that blooms and filters look at. Implemented by the stored [`Log`]
/// and by the RPC layer's log view, so both are matched and bloomed by the same code.
pub trait LogFields {
    fn address(&self) -> &Address;
    fn topics(&self) -> &[B256];
}

impl LogFields for Log {
    fn address(&self) -> &Address {
        &self.address
    }
    fn topics(&self) -> &[B256] {
        &self.topics
    }
}

impl<T: LogFields + ?Sized> LogFields for &T {
    fn address(&self) -> &Address {
        (**self).address()
    }
    fn topics(&self) -> &[B256] {
        (**self).topics()
    }
}

/// The bloom over every log of `receipts` (a segment's bloom, for log queries).
pub fn logs_bloom(receipts: &[Receipt]) -> Bloom {
    bloom_of(receipts.iter().flat_map(|r| &r.logs))
}

/// Ethereum's 2048-bit bloom over the addresses and topics of `logs`.
pub fn bloom_of<'a, L: LogFields + 'a>(logs: impl IntoIterator<Item = &'a L>) -> Bloom {
    let mut bloom = Bloom::ZERO;
    for log in logs {
        bloom.accrue_raw_log(*log.address(), log.topics());
    }
    bloom
}

/// Which logs a query wants (the `address` and `topics` of an `eth_getLogs` filter or a `logs`
/// subscription), with geth's semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Empty: any address; otherwise the log's address must be one of these.
    pub addresses: Vec<Address>,
    /// Position `i`: `None` (or an empty list) matches anything, otherwise the log's topic `i`
    /// must be one of the list (OR). A log with fewer topics than positions does not match.
    pub topics: Vec<Option<Vec<B256>>>,
}

impl LogFilter {
    /// Whether `log` passes.
    pub fn matches(&self, log: &impl LogFields) -> bool {
        let topics = log.topics();
        (self.addresses.is_empty() || self.addresses.contains(log.address()))
            && self.topics.len() <= topics.len()
            && self
                .topic_lists()
                .all(|(i, list)| list.contains(&topics[i]))
    }

    /// Whether a segment whose logs have `bloom` may hold a matching log (false: it cannot).
    pub fn may_match(&self, bloom: &Bloom) -> bool {
        let has = |bytes: &[u8]| bloom.contains_input(BloomInput::Raw(bytes));
        (self.addresses.is_empty() || self.addresses.iter().any(|a| has(a.as_slice())))
            && self
                .topic_lists()
                .all(|(_, list)| list.iter().any(|t| has(t.as_slice())))
    }

    /// The constrained topic positions.
    fn topic_lists(&self) -> impl Iterator<Item = (usize, &Vec<B256>)> {
        self.topics
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().filter(|l| !l.is_empty()).map(|l| (i, l)))
    }
}

/// Merkle root over the receipts' canonical encodings, in segment order.
pub fn receipts_root(receipts: &[Receipt]) -> B256 {
    let mut leaves = Vec::with_capacity(receipts.len());
    let (mut first, mut second) = (Vec::new(), Vec::new());
    // Two at a time: a transfer's leaf is one block, and two blocks hash at once.
    for pair in receipts.chunks(2) {
        leaf_bytes(&pair[0], &mut first);
        match pair.get(1) {
            Some(next) => {
                leaf_bytes(next, &mut second);
                leaves.extend(sha256_pair(&first, &second));
            }
            None => leaves.push(sha256(&first)),
        }
    }
    merkle_root(&leaves)
}

/// `0x00 ‖ rlp(receipt)` into `out`: what a receipt's leaf hashes.
fn leaf_bytes(receipt: &Receipt, out: &mut Vec<u8>) {
    out.clear();
    out.push(0u8);
    receipt.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: TxOutcome) -> Receipt {
        Receipt {
            outcome,
            gas_used: 21_000,
            cumulative_gas_used: 42_000,
            effective_gas_price: 7,
            contract_address: Some(Address::repeat_byte(3)),
            logs: vec![Log {
                address: Address::repeat_byte(1),
                topics: vec![B256::repeat_byte(2)],
                data: Bytes::from_static(b"hi"),
            }],
        }
    }

    #[test]
    fn every_outcome_round_trips_and_unknown_codes_are_refused() {
        let outcomes = [TxOutcome::Success, TxOutcome::Reverted]
            .into_iter()
            .chain(Halt::ALL.map(TxOutcome::Halted))
            .chain(InvalidReason::ALL.map(TxOutcome::Invalid));
        for outcome in outcomes {
            let r = sample(outcome);
            let bytes = r.encoded();
            assert_eq!(bytes.len(), r.length());
            assert_eq!(
                bytes,
                alloy_rlp::encode(r.to_rlp()),
                "same layout as ReceiptRlp"
            );
            let no_address = Receipt {
                contract_address: None,
                logs: Vec::new(),
                ..r.clone()
            };
            assert_eq!(no_address.encoded(), alloy_rlp::encode(no_address.to_rlp()));
            assert_eq!(Receipt::decode(&mut bytes.as_slice()).unwrap(), r);
        }
        let mut bad = sample(TxOutcome::Success).to_rlp();
        bad.status = 3;
        assert!(Receipt::decode(&mut alloy_rlp::encode(&bad).as_slice()).is_err());
        bad.status = STATUS_INVALID;
        bad.detail = 0;
        assert!(Receipt::decode(&mut alloy_rlp::encode(&bad).as_slice()).is_err());
    }

    #[test]
    fn log_filters_follow_geth_and_the_bloom_never_misses() {
        let r = sample(TxOutcome::Success);
        let log = &r.logs[0];
        let t = |b: u8| B256::repeat_byte(b);
        let cases = [
            (LogFilter::default(), true),
            (
                LogFilter {
                    addresses: vec![Address::repeat_byte(1)],
                    topics: vec![],
                },
                true,
            ),
            (
                LogFilter {
                    addresses: vec![Address::repeat_byte(5)],
                    topics: vec![],
                },
                false,
            ),
            (
                LogFilter {
                    addresses: vec![],
                    topics: vec![Some(vec![t(7), t(2)])],
                },
                true,
            ),
            (
                LogFilter {
                    addresses: vec![],
                    topics: vec![Some(vec![t(7)])],
                },
                false,
            ),
            (
                LogFilter {
                    addresses: vec![],
                    topics: vec![None, None],
                },
                false,
            ),
            (
                LogFilter {
                    addresses: vec![],
                    topics: vec![Some(vec![])],
                },
                true,
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(filter.matches(log), expected, "{filter:?}");
            if expected {
                assert!(filter.may_match(&r.bloom()), "{filter:?}");
            }
        }
        assert!(!LogFilter {
            addresses: vec![Address::repeat_byte(5)],
            topics: vec![]
        }
        .may_match(&Bloom::ZERO));
    }

    /// The root hashes every leaf as `sha256(0x00 ‖ rlp)`, whether a leaf takes the paired
    /// one-block path (a transfer's) or not (one with logs), in any mix and count.
    #[test]
    fn receipts_root_is_the_merkle_root_of_each_leaf_digest() {
        let transfer = Receipt {
            logs: Vec::new(),
            contract_address: None,
            ..sample(TxOutcome::Success)
        };
        assert!(
            transfer.length() < 55,
            "a transfer's leaf must take the one-block path"
        );
        for count in 0..7usize {
            let receipts: Vec<Receipt> = (0..count)
                .map(|i| match i % 3 {
                    0 => sample(TxOutcome::Success),
                    _ => Receipt {
                        cumulative_gas_used: 21_000 * (i as u64 + 1),
                        ..transfer.clone()
                    },
                })
                .collect();
            let leaves: Vec<B256> = receipts
                .iter()
                .map(|r| sha256(&[&[0u8][..], &r.encoded()].concat()))
                .collect();
            assert_eq!(receipts_root(&receipts), merkle_root(&leaves), "{count}");
        }
    }

    #[test]
    fn bloom_holds_address_and_topics_and_root_binds_order() {
        let r = sample(TxOutcome::Success);
        let bloom = r.bloom();
        assert!(bloom.contains_raw_log(Address::repeat_byte(1), &[B256::repeat_byte(2)]));
        assert!(!bloom.contains_raw_log(Address::repeat_byte(9), &[]));
        let other = sample(TxOutcome::Reverted);
        assert_ne!(
            receipts_root(&[r.clone(), other.clone()]),
            receipts_root(&[other, r])
        );
    }
}
