//! The unsigned transaction types and the RLP of their fields, shared by the signing hash
//! (what the sender signs) and the signed envelope (what goes on the wire).

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::{BufMut, Encodable, Header, EMPTY_STRING_CODE};
use std::fmt;

use crate::types::ChainId;

/// EIP-2718 transaction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxType {
    /// Untyped RLP list; EIP-155 replay protection folded into `v`.
    Legacy,
    /// Type `0x01`: explicit chain id and an access list.
    Eip2930,
    /// Type `0x02`: base fee + priority fee pricing.
    Eip1559,
}

impl TxType {
    /// The envelope's leading type byte; `None` for legacy, which has none.
    pub const fn type_byte(self) -> Option<u8> {
        match self {
            Self::Legacy => None,
            Self::Eip2930 => Some(0x01),
            Self::Eip1559 => Some(0x02),
        }
    }
}

impl fmt::Display for TxType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy",
            Self::Eip2930 => "eip2930",
            Self::Eip1559 => "eip1559",
        })
    }
}

/// The `to` field (a call to an account, or contract creation: the empty string on the wire)
/// and the EIP-2930 access list are alloy's types, the ones revm executes: a transaction goes
/// to the EVM without converting them.
pub use alloy_eip2930::{AccessList, AccessListItem};
pub use alloy_primitives::TxKind;

/// A legacy transaction; `chain_id` is `Some` when it is EIP-155 replay protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LegacyTx {
    pub chain_id: Option<ChainId>,
    pub nonce: u64,
    pub gas_price: u128,
    pub gas_limit: u64,
    pub to: TxKind,
    pub value: U256,
    pub input: Bytes,
}

/// An EIP-2930 (type `0x01`) transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Eip2930Tx {
    pub chain_id: ChainId,
    pub nonce: u64,
    pub gas_price: u128,
    pub gas_limit: u64,
    pub to: TxKind,
    pub value: U256,
    pub input: Bytes,
    pub access_list: AccessList,
}

/// An EIP-1559 (type `0x02`) transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Eip1559Tx {
    pub chain_id: ChainId,
    pub nonce: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    pub to: TxKind,
    pub value: U256,
    pub input: Bytes,
    pub access_list: AccessList,
}

/// An unsigned transaction of any supported type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transaction {
    Legacy(LegacyTx),
    Eip2930(Eip2930Tx),
    Eip1559(Eip1559Tx),
}

impl From<LegacyTx> for Transaction {
    fn from(tx: LegacyTx) -> Self {
        Self::Legacy(tx)
    }
}

impl From<Eip2930Tx> for Transaction {
    fn from(tx: Eip2930Tx) -> Self {
        Self::Eip2930(tx)
    }
}

impl From<Eip1559Tx> for Transaction {
    fn from(tx: Eip1559Tx) -> Self {
        Self::Eip1559(tx)
    }
}

impl Transaction {
    pub const fn tx_type(&self) -> TxType {
        match self {
            Self::Legacy(_) => TxType::Legacy,
            Self::Eip2930(_) => TxType::Eip2930,
            Self::Eip1559(_) => TxType::Eip1559,
        }
    }

    /// The chain (regionchain or servicechain) the signature is bound to; `None` only for an
    /// unprotected legacy transaction.
    pub const fn chain_id(&self) -> Option<ChainId> {
        match self {
            Self::Legacy(tx) => tx.chain_id,
            Self::Eip2930(tx) => Some(tx.chain_id),
            Self::Eip1559(tx) => Some(tx.chain_id),
        }
    }

    pub const fn nonce(&self) -> u64 {
        match self {
            Self::Legacy(tx) => tx.nonce,
            Self::Eip2930(tx) => tx.nonce,
            Self::Eip1559(tx) => tx.nonce,
        }
    }

    pub const fn gas_limit(&self) -> u64 {
        match self {
            Self::Legacy(tx) => tx.gas_limit,
            Self::Eip2930(tx) => tx.gas_limit,
            Self::Eip1559(tx) => tx.gas_limit,
        }
    }

    pub const fn value(&self) -> U256 {
        match self {
            Self::Legacy(tx) => tx.value,
            Self::Eip2930(tx) => tx.value,
            Self::Eip1559(tx) => tx.value,
        }
    }

    pub const fn kind(&self) -> TxKind {
        match self {
            Self::Legacy(tx) => tx.to,
            Self::Eip2930(tx) => tx.to,
            Self::Eip1559(tx) => tx.to,
        }
    }

    /// The callee, `None` for contract creation.
    pub const fn to(&self) -> Option<Address> {
        match self.kind() {
            TxKind::Call(address) => Some(address),
            TxKind::Create => None,
        }
    }

    /// Call data, or init code for contract creation.
    pub const fn input(&self) -> &Bytes {
        match self {
            Self::Legacy(tx) => &tx.input,
            Self::Eip2930(tx) => &tx.input,
            Self::Eip1559(tx) => &tx.input,
        }
    }

    pub const fn access_list(&self) -> Option<&AccessList> {
        match self {
            Self::Legacy(_) => None,
            Self::Eip2930(tx) => Some(&tx.access_list),
            Self::Eip1559(tx) => Some(&tx.access_list),
        }
    }

    /// The most the sender pays per gas: `gas_price`, or `max_fee_per_gas` for EIP-1559.
    pub const fn max_fee_per_gas(&self) -> u128 {
        match self {
            Self::Legacy(tx) => tx.gas_price,
            Self::Eip2930(tx) => tx.gas_price,
            Self::Eip1559(tx) => tx.max_fee_per_gas,
        }
    }

    /// `max_priority_fee_per_gas` for EIP-1559; `None` for types that only have a gas price.
    pub const fn max_priority_fee_per_gas(&self) -> Option<u128> {
        match self {
            Self::Eip1559(tx) => Some(tx.max_priority_fee_per_gas),
            _ => None,
        }
    }

    /// Price per gas actually paid in a block with `base_fee` (`None`: no base fee, pay the
    /// maximum): `min(max_fee, base_fee + priority_fee)` for EIP-1559, the gas price otherwise.
    pub fn effective_gas_price(&self, base_fee: Option<u64>) -> u128 {
        match (self, base_fee) {
            (Self::Eip1559(tx), Some(base_fee)) => tx
                .max_fee_per_gas
                .min((base_fee as u128).saturating_add(tx.max_priority_fee_per_gas)),
            _ => self.max_fee_per_gas(),
        }
    }

    /// Tip per gas the block producer receives above `base_fee`; `None` when the transaction
    /// cannot pay the base fee at all (the mempool orders by this).
    pub fn effective_tip_per_gas(&self, base_fee: u64) -> Option<u128> {
        let above_base = self.max_fee_per_gas().checked_sub(base_fee as u128)?;
        Some(match self.max_priority_fee_per_gas() {
            Some(priority) => priority.min(above_base),
            None => above_base,
        })
    }

    /// The balance the sender needs for the transaction to be executable:
    /// `gas_limit * max_fee_per_gas + value`, saturating (a saturated cost is unaffordable).
    pub fn max_cost(&self) -> U256 {
        U256::from(self.gas_limit())
            .saturating_mul(U256::from(self.max_fee_per_gas()))
            .saturating_add(self.value())
    }

    /// The hash the sender signs: keccak-256 of the signing payload (EIP-155 for protected
    /// legacy transactions, `type ‖ rlp(fields)` for typed ones).
    pub fn signing_hash(&self) -> B256 {
        let mut payload = Vec::with_capacity(self.signing_payload_len());
        self.encode_signing_payload(&mut payload);
        keccak256(&payload)
    }

    fn signing_payload_len(&self) -> usize {
        let fields = self.fields_len() + self.legacy_eip155_tail_len();
        self.type_prefix_len()
            + Header {
                list: true,
                payload_length: fields,
            }
            .length_with_payload()
    }

    /// Writes the bytes whose hash is [`Self::signing_hash`].
    pub fn encode_signing_payload(&self, out: &mut dyn BufMut) {
        if let Some(ty) = self.tx_type().type_byte() {
            out.put_u8(ty);
        }
        let payload_length = self.fields_len() + self.legacy_eip155_tail_len();
        Header {
            list: true,
            payload_length,
        }
        .encode(out);
        self.encode_fields(out);
        if let Self::Legacy(LegacyTx {
            chain_id: Some(chain_id),
            ..
        }) = self
        {
            // EIP-155: the chain id and two empty strings in place of v, r, s.
            chain_id.encode(out);
            out.put_u8(EMPTY_STRING_CODE);
            out.put_u8(EMPTY_STRING_CODE);
        }
    }

    fn legacy_eip155_tail_len(&self) -> usize {
        match self {
            Self::Legacy(LegacyTx {
                chain_id: Some(chain_id),
                ..
            }) => chain_id.length() + 2,
            _ => 0,
        }
    }

    pub(super) fn type_prefix_len(&self) -> usize {
        usize::from(self.tx_type().type_byte().is_some())
    }

    /// Total RLP length of the fields that are signed (before v/y, r, s).
    pub(super) fn fields_len(&self) -> usize {
        match self {
            Self::Legacy(tx) => {
                tx.nonce.length()
                    + tx.gas_price.length()
                    + tx.gas_limit.length()
                    + tx.to.length()
                    + tx.value.length()
                    + tx.input.length()
            }
            Self::Eip2930(tx) => {
                tx.chain_id.length()
                    + tx.nonce.length()
                    + tx.gas_price.length()
                    + tx.gas_limit.length()
                    + tx.to.length()
                    + tx.value.length()
                    + tx.input.length()
                    + tx.access_list.length()
            }
            Self::Eip1559(tx) => {
                tx.chain_id.length()
                    + tx.nonce.length()
                    + tx.max_priority_fee_per_gas.length()
                    + tx.max_fee_per_gas.length()
                    + tx.gas_limit.length()
                    + tx.to.length()
                    + tx.value.length()
                    + tx.input.length()
                    + tx.access_list.length()
            }
        }
    }

    /// The signed fields in wire order, without a list header.
    pub(super) fn encode_fields(&self, out: &mut dyn BufMut) {
        match self {
            Self::Legacy(tx) => {
                tx.nonce.encode(out);
                tx.gas_price.encode(out);
                tx.gas_limit.encode(out);
                tx.to.encode(out);
                tx.value.encode(out);
                tx.input.encode(out);
            }
            Self::Eip2930(tx) => {
                tx.chain_id.encode(out);
                tx.nonce.encode(out);
                tx.gas_price.encode(out);
                tx.gas_limit.encode(out);
                tx.to.encode(out);
                tx.value.encode(out);
                tx.input.encode(out);
                tx.access_list.encode(out);
            }
            Self::Eip1559(tx) => {
                tx.chain_id.encode(out);
                tx.nonce.encode(out);
                tx.max_priority_fee_per_gas.encode(out);
                tx.max_fee_per_gas.encode(out);
                tx.gas_limit.encode(out);
                tx.to.encode(out);
                tx.value.encode(out);
                tx.input.encode(out);
                tx.access_list.encode(out);
            }
        }
    }
}
