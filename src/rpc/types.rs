//! The RPC's view of chain data, as the backend returns it. The server turns these into JSON
//! in geth's encoding (see `json.rs`); everything derivable (receipt blooms, `v`, effective
//! gas prices of transactions) is derived there, so the backend cannot get it wrong.

use crate::crypto::tx::SignedTransaction;
use alloy_primitives::{Address, Bloom, Bytes, B256};

/// One block of one chain: in Kaon, container `number` seen from that chain (its segment).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcBlock {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    /// Seconds since the Unix epoch (Ethereum's unit; Kaon headers keep milliseconds).
    pub timestamp: u64,
    pub gas_used: u64,
    pub gas_limit: u64,
    /// `None` on a chain without EIP-1559 pricing (tools then fall back to legacy gas prices).
    pub base_fee_per_gas: Option<u64>,
    pub state_root: B256,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
    /// Who receives the fees (`miner`/`coinbase`).
    pub miner: Address,
    /// `mixHash` / `prevRandao`: Kaon's RANDAO mix of the height.
    pub mix_hash: B256,
    pub extra_data: Bytes,
    /// Encoded size in bytes.
    pub size: u64,
    pub transactions: BlockTransactions,
}

/// A block's transactions: hashes, or full objects when the request asked for them.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockTransactions {
    Hashes(Vec<B256>),
    Full(Vec<RpcTransaction>),
}

impl BlockTransactions {
    pub fn len(&self) -> usize {
        match self {
            Self::Hashes(h) => h.len(),
            Self::Full(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transaction with its recovered sender, and where it was included (`None`: still pooled).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcTransaction {
    pub tx: SignedTransaction,
    pub from: Address,
    pub location: Option<TxLocation>,
}

/// Where a transaction sits in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    pub block_hash: B256,
    pub block_number: u64,
    /// The block's timestamp in seconds.
    pub block_timestamp: u64,
    /// Position in the block (in Kaon: in the chain's segment).
    pub index: u64,
    /// The block's base fee, which fixes an EIP-1559 transaction's `gasPrice`.
    pub base_fee_per_gas: Option<u64>,
}

/// A receipt. The JSON's `type`, `from`, `to` and `logsBloom` come from here and the logs.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcReceipt {
    pub transaction_hash: B256,
    pub transaction_index: u64,
    pub block_hash: B256,
    pub block_number: u64,
    pub from: Address,
    /// `None` for contract creation.
    pub to: Option<Address>,
    /// EIP-2718 type byte (0 legacy, 1 EIP-2930, 2 EIP-1559).
    pub tx_type: u8,
    /// `true`: success; `false`: reverted, or marked invalid in its segment.
    pub status: bool,
    pub gas_used: u64,
    pub cumulative_gas_used: u64,
    pub effective_gas_price: u128,
    pub contract_address: Option<Address>,
    pub logs: Vec<RpcLog>,
}

/// A log with its position in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcLog {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
    pub block_number: u64,
    pub block_hash: B256,
    /// The block's timestamp in seconds.
    pub block_timestamp: u64,
    pub transaction_hash: B256,
    pub transaction_index: u64,
    /// Position among all logs of the block.
    pub log_index: u64,
    /// Always `false` on Kaon (finality is instant, nothing is reorganised).
    pub removed: bool,
}

impl crate::exec::LogFields for RpcLog {
    fn address(&self) -> &Address {
        &self.address
    }
    fn topics(&self) -> &[B256] {
        &self.topics
    }
}

/// `eth_feeHistory`'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFeeHistory {
    pub oldest_block: u64,
    /// One per block, plus the next block's base fee (`block_count + 1` entries).
    pub base_fee_per_gas: Vec<u128>,
    /// `gas_used / gas_limit` per block.
    pub gas_used_ratio: Vec<f64>,
    /// Per block, the tip at each requested percentile; `None` when none were requested.
    pub reward: Option<Vec<Vec<u128>>>,
}

/// `eth_syncing`'s answer while catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    pub starting_block: u64,
    pub current_block: u64,
    pub highest_block: u64,
}
