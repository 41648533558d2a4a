//! Chain data as JSON, byte for byte in geth's encoding: quantities are `0x`-prefixed hex
//! without leading zeros (`0x0` for zero), data is `0x`-prefixed lowercase hex of every byte,
//! unknown or pending positions are `null`, and field names are geth's camelCase. The view
//! structs borrow the backend's values; nothing is copied but the hex text itself.

use super::backend::RpcAccessList;
use super::types::{
    BlockTransactions, RpcBlock, RpcFeeHistory, RpcLog, RpcReceipt, RpcTransaction, SyncProgress,
};
use crate::crypto::tx::{Transaction, TxType};
use alloy_primitives::hex;
use alloy_primitives::U256;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

/// Keccak-256 of the RLP of an empty list: `sha3Uncles` of a block without uncles.
const EMPTY_UNCLES_HASH: &str =
    "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347";
/// The 8-byte proof-of-work nonce, always zero.
const ZERO_NONCE: &str = "0x0000000000000000";

/// A quantity: `0x` + minimal lowercase hex.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantity(pub u128);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

/// A 256-bit quantity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BigQuantity(pub U256);

impl Serialize for BigQuantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

/// Unformatted data: `0x` + two hex digits per byte.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Data<'a>(pub &'a [u8]);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex_data(self.0))
    }
}

/// A fresh filter or subscription id: 128 random bits as a quantity (no leading zeros, as the
/// execution-apis specification's `uint` and geth's ids are).
pub(crate) fn random_id() -> String {
    format!("{:#x}", u128::from_be_bytes(rand::random()))
}

/// `0x`-prefixed lowercase hex of `bytes`.
pub(crate) fn hex_data(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    out.push_str(&hex::encode(bytes));
    out
}

fn q(v: impl Into<u128>) -> Quantity {
    Quantity(v.into())
}

/// A block, or only its header (`newHeads` notifications have no body fields).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    base_fee_per_gas: Option<Quantity>,
    difficulty: Quantity,
    extra_data: Data<'a>,
    gas_limit: Quantity,
    gas_used: Quantity,
    hash: Data<'a>,
    logs_bloom: Data<'a>,
    miner: Data<'a>,
    mix_hash: Data<'a>,
    nonce: &'static str,
    number: Quantity,
    parent_hash: Data<'a>,
    receipts_root: Data<'a>,
    sha3_uncles: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<Quantity>,
    state_root: Data<'a>,
    timestamp: Quantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions: Option<TxsJson<'a>>,
    transactions_root: Data<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uncles: Option<[(); 0]>,
}

/// `block` as JSON; `body` adds `size`, `transactions` and `uncles` (a header has none).
pub(crate) fn block(b: &RpcBlock, body: bool) -> BlockJson<'_> {
    BlockJson {
        base_fee_per_gas: b.base_fee_per_gas.map(q),
        difficulty: Quantity(0),
        extra_data: Data(&b.extra_data),
        gas_limit: q(b.gas_limit),
        gas_used: q(b.gas_used),
        hash: Data(b.hash.as_slice()),
        logs_bloom: Data(b.logs_bloom.as_slice()),
        miner: Data(b.miner.as_slice()),
        mix_hash: Data(b.mix_hash.as_slice()),
        nonce: ZERO_NONCE,
        number: q(b.number),
        parent_hash: Data(b.parent_hash.as_slice()),
        receipts_root: Data(b.receipts_root.as_slice()),
        sha3_uncles: EMPTY_UNCLES_HASH,
        size: body.then_some(q(b.size)),
        state_root: Data(b.state_root.as_slice()),
        timestamp: q(b.timestamp),
        transactions: body.then_some(TxsJson(&b.transactions)),
        transactions_root: Data(b.transactions_root.as_slice()),
        uncles: body.then_some([]),
    }
}

pub(crate) struct TxsJson<'a>(&'a BlockTransactions);

impl Serialize for TxsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        match self.0 {
            BlockTransactions::Hashes(hashes) => {
                for h in hashes {
                    seq.serialize_element(&Data(h.as_slice()))?;
                }
            }
            BlockTransactions::Full(txs) => {
                for t in txs {
                    seq.serialize_element(&transaction(t))?;
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TxJson<'a> {
    block_hash: Option<Data<'a>>,
    block_number: Option<Quantity>,
    /// The including block's timestamp (execution-apis `TransactionInfo`, geth ≥ 1.16).
    block_timestamp: Option<Quantity>,
    from: Data<'a>,
    gas: Quantity,
    gas_price: Quantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fee_per_gas: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_priority_fee_per_gas: Option<Quantity>,
    hash: String,
    input: Data<'a>,
    nonce: Quantity,
    to: Option<Data<'a>>,
    transaction_index: Option<Quantity>,
    value: BigQuantity,
    #[serde(rename = "type")]
    tx_type: Quantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_list: Option<AccessListJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain_id: Option<Quantity>,
    v: Quantity,
    r: BigQuantity,
    s: BigQuantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    y_parity: Option<Quantity>,
}

/// A transaction as geth shows it: `gasPrice` is the price paid once included (the maximum
/// while pooled), `v` is EIP-155's for legacy and the y parity for typed transactions.
pub(crate) fn transaction(t: &RpcTransaction) -> TxJson<'_> {
    let tx = t.tx.tx();
    let sig = t.tx.signature();
    let parity = u128::from(sig.v());
    let typed = tx.tx_type() != TxType::Legacy;
    let v = match tx {
        Transaction::Legacy(l) => match l.chain_id {
            Some(id) => u128::from(id.get()) * 2 + 35 + parity,
            None => 27 + parity,
        },
        _ => parity,
    };
    let base_fee = t.location.and_then(|l| l.base_fee_per_gas);
    let gas_price = match t.location {
        Some(_) => tx.effective_gas_price(base_fee),
        None => tx.max_fee_per_gas(),
    };
    let eip1559 = tx.tx_type() == TxType::Eip1559;
    TxJson {
        block_hash: t.location.as_ref().map(|l| Data(l.block_hash.as_slice())),
        block_number: t.location.map(|l| q(l.block_number)),
        block_timestamp: t.location.map(|l| q(l.block_timestamp)),
        from: Data(t.from.as_slice()),
        gas: q(tx.gas_limit()),
        gas_price: Quantity(gas_price),
        max_fee_per_gas: eip1559.then(|| Quantity(tx.max_fee_per_gas())),
        max_priority_fee_per_gas: tx.max_priority_fee_per_gas().map(Quantity),
        hash: hex_data(t.tx.hash().as_slice()),
        input: Data(tx.input()),
        nonce: q(tx.nonce()),
        to: callee(tx).map(|a| Data(a.as_slice())),
        transaction_index: t.location.map(|l| q(l.index)),
        value: BigQuantity(tx.value()),
        tx_type: q(tx.tx_type().type_byte().unwrap_or(0)),
        access_list: tx.access_list().map(|a| AccessListJson(&a.0)),
        chain_id: tx.chain_id().map(|c| q(c.get())),
        v: Quantity(v),
        r: BigQuantity(sig.r()),
        s: BigQuantity(sig.s()),
        y_parity: typed.then_some(Quantity(parity)),
    }
}

/// The callee, borrowed from the transaction (`None` for contract creation).
fn callee(tx: &Transaction) -> Option<&alloy_primitives::Address> {
    match tx {
        Transaction::Legacy(t) => t.to.to(),
        Transaction::Eip2930(t) => t.to.to(),
        Transaction::Eip1559(t) => t.to.to(),
    }
}

pub(crate) struct AccessListJson<'a>(&'a [crate::crypto::tx::AccessListItem]);

impl Serialize for AccessListJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Item<'a> {
            address: Data<'a>,
            storage_keys: Vec<Data<'a>>,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&Item {
                address: Data(item.address.as_slice()),
                storage_keys: item
                    .storage_keys
                    .iter()
                    .map(|k| Data(k.as_slice()))
                    .collect(),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReceiptJson<'a> {
    block_hash: Data<'a>,
    block_number: Quantity,
    contract_address: Option<Data<'a>>,
    cumulative_gas_used: Quantity,
    effective_gas_price: Quantity,
    from: Data<'a>,
    gas_used: Quantity,
    logs: Vec<LogJson<'a>>,
    logs_bloom: String,
    status: Quantity,
    to: Option<Data<'a>>,
    transaction_hash: Data<'a>,
    transaction_index: Quantity,
    #[serde(rename = "type")]
    tx_type: Quantity,
}

/// A receipt, with its bloom computed from its logs.
pub(crate) fn receipt(r: &RpcReceipt) -> ReceiptJson<'_> {
    ReceiptJson {
        block_hash: Data(r.block_hash.as_slice()),
        block_number: q(r.block_number),
        contract_address: r.contract_address.as_ref().map(|a| Data(a.as_slice())),
        cumulative_gas_used: q(r.cumulative_gas_used),
        effective_gas_price: Quantity(r.effective_gas_price),
        from: Data(r.from.as_slice()),
        gas_used: q(r.gas_used),
        logs: r.logs.iter().map(log).collect(),
        logs_bloom: hex_data(crate::exec::bloom_of(&r.logs).as_slice()),
        status: q(u8::from(r.status)),
        to: r.to.as_ref().map(|a| Data(a.as_slice())),
        transaction_hash: Data(r.transaction_hash.as_slice()),
        transaction_index: q(r.transaction_index),
        tx_type: q(r.tx_type),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogJson<'a> {
    address: Data<'a>,
    topics: Vec<Data<'a>>,
    data: Data<'a>,
    block_number: Quantity,
    transaction_hash: Data<'a>,
    transaction_index: Quantity,
    block_hash: Data<'a>,
    /// The including block's timestamp (execution-apis `Log`, geth ≥ 1.16).
    block_timestamp: Quantity,
    log_index: Quantity,
    removed: bool,
}

pub(crate) fn log(l: &RpcLog) -> LogJson<'_> {
    LogJson {
        address: Data(l.address.as_slice()),
        topics: l.topics.iter().map(|t| Data(t.as_slice())).collect(),
        data: Data(&l.data),
        block_number: q(l.block_number),
        transaction_hash: Data(l.transaction_hash.as_slice()),
        transaction_index: q(l.transaction_index),
        block_hash: Data(l.block_hash.as_slice()),
        block_timestamp: q(l.block_timestamp),
        log_index: q(l.log_index),
        removed: l.removed,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessListResultJson<'a> {
    access_list: AccessListJson<'a>,
    gas_used: Quantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub(crate) fn access_list_result(r: &RpcAccessList) -> AccessListResultJson<'_> {
    AccessListResultJson {
        access_list: AccessListJson(&r.access_list.0),
        gas_used: q(r.gas_used),
        error: r.error.as_deref(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FeeHistoryJson {
    oldest_block: Quantity,
    base_fee_per_gas: Vec<Quantity>,
    gas_used_ratio: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reward: Option<Vec<Vec<Quantity>>>,
}

pub(crate) fn fee_history(h: &RpcFeeHistory) -> FeeHistoryJson {
    let quantities = |v: &[u128]| v.iter().copied().map(Quantity).collect();
    FeeHistoryJson {
        oldest_block: q(h.oldest_block),
        base_fee_per_gas: quantities(&h.base_fee_per_gas),
        gas_used_ratio: h.gas_used_ratio.clone(),
        reward: h
            .reward
            .as_ref()
            .map(|rows| rows.iter().map(|r| quantities(r)).collect()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncJson {
    starting_block: Quantity,
    current_block: Quantity,
    highest_block: Quantity,
}

pub(crate) fn sync_progress(p: &SyncProgress) -> SyncJson {
    SyncJson {
        starting_block: q(p.starting_block),
        current_block: q(p.current_block),
        highest_block: q(p.highest_block),
    }
}
