//! `kaon withdraw`: moves an RN's unlocked PoR rewards from the reserve to an account on a
//! servicechain, through the JSON-RPC of any RN of the region.
//!
//! It reads the reward address's unlocked balance and withdrawal nonce (`kaon_popState`),
//! signs a [`Withdrawal`] with the reward key, and sends it with
//! `kaon_sendSystemTransaction`, which executes it against the RN's regionchain state first
//! and answers a refusal with its reason.

use super::miner::RnClient;
use crate::chain::withdrawal::{Withdrawal, WithdrawalSpec};
use crate::crypto::tx::address_of;
use crate::types::ChainId;
use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use serde_json::json;

/// What to withdraw, and where to.
pub struct WithdrawRequest {
    /// JSON-RPC endpoint of the regionchain on an RN.
    pub rpc: String,
    pub reward_secret: [u8; 32],
    /// `None`: everything unlocked.
    pub amount: Option<U256>,
    pub chain: ChainId,
    pub to: Address,
}

/// A withdrawal the RN accepted and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawReceipt {
    pub hash: B256,
    pub amount: U256,
    pub nonce: u64,
}

/// Reads the reserve's account of `rn` from `kaon_popState`: (unlocked, next nonce).
fn account(client: &RnClient, rn: Address) -> anyhow::Result<(U256, u64)> {
    let state = client.call("kaon_popState", json!([rn]))?;
    let Some(entry) = state["rns"].get(rn.to_checksum(None)) else {
        anyhow::bail!("{rn} has no rewards in the reserve (is it a registered RN?)");
    };
    let unlocked: U256 = serde_json::from_value(entry["unlocked"].clone())
        .context("kaon_popState: unlocked is not a quantity")?;
    let nonce = entry["withdrawalNonce"]
        .as_u64()
        .context("kaon_popState: withdrawalNonce is not a number")?;
    Ok((unlocked, nonce))
}

/// Signs and sends the withdrawal.
pub fn withdraw(request: &WithdrawRequest) -> anyhow::Result<WithdrawReceipt> {
    let client = RnClient::new(&request.rpc);
    let region: U256 = serde_json::from_value(client.call("eth_chainId", json!([]))?)
        .context("eth_chainId is not a quantity")?;
    let region = ChainId(region.try_into().context("chain id out of range")?);
    let rn = address_of(&request.reward_secret)?;
    let (unlocked, nonce) = account(&client, rn)?;
    let amount = request.amount.unwrap_or(unlocked);
    anyhow::ensure!(
        !amount.is_zero(),
        "nothing to withdraw: {rn} has no unlocked rewards yet (rewards unlock 4 epochs after they are paid)"
    );
    anyhow::ensure!(
        amount <= unlocked,
        "{amount} exceeds the {unlocked} unlocked for {rn}"
    );
    let spec = WithdrawalSpec {
        region,
        rn,
        amount,
        chain: request.chain,
        to: request.to,
        nonce,
    };
    let tx = Withdrawal::sign(spec, &request.reward_secret)?.to_system_tx();
    let answer = client.call("kaon_sendSystemTransaction", json!([tx]))?;
    let hash: B256 = serde_json::from_value(answer["hash"].clone())
        .context("kaon_sendSystemTransaction: no hash in the answer")?;
    Ok(WithdrawReceipt {
        hash,
        amount,
        nonce,
    })
}
