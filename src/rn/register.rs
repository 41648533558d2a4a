//! An RN with a reward key registers itself for PoSC and rewards ([`crate::chain::posc`]):
//! until the audited regionchain lists its reward address with this node's endpoint and key,
//! it signs a registration (sequence one above the registered one) and forwards it to its CNs,
//! every [`RETRY`]. It stops once registered or when the node stops.

use super::RnView;
use crate::chain::posc::{RnRegistration, RnSpec};
use crate::crypto::tx::address_of;
use crate::types::ChainId;
use std::time::Duration;
use tokio::sync::watch;

/// Time between checks (and forwards) until registered.
pub const RETRY: Duration = Duration::from_secs(2);

/// The secret key of an RN's reward address (never printed).
#[derive(Clone)]
pub struct RewardKey(pub [u8; 32]);

impl std::fmt::Debug for RewardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RewardKey(…)")
    }
}

/// What registration to keep, and for whom.
pub struct Registrant {
    pub view: RnView,
    pub region: ChainId,
    pub reward_key: RewardKey,
    /// The node key, to prove it in the registration.
    pub node_key: crate::crypto::bls::SecretKey,
}

impl Registrant {
    /// The registration this node needs now, or `None` when the regionchain already lists it.
    pub fn pending(&self) -> anyhow::Result<Option<RnRegistration>> {
        let reward = address_of(&self.reward_key.0)?;
        let (endpoint, node_key) = (self.view.listen_addr(), self.view.public_key());
        let registered = self
            .view
            .region()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pop
            .posc
            .rns
            .get(&reward)
            .cloned();
        if registered
            .as_ref()
            .is_some_and(|e| e.endpoint == endpoint && e.node_key == node_key)
        {
            return Ok(None);
        }
        let spec = RnSpec {
            region: self.region,
            reward,
            endpoint: endpoint.to_string(),
            node_key,
            sequence: registered.map_or(1, |e| e.sequence + 1),
            node_proof: Default::default(),
        }
        .prove_node_key(&self.node_key);
        Ok(Some(RnRegistration::sign(spec, &self.reward_key.0)?))
    }

    /// Forwards the pending registration every [`RETRY`] until it is on the chain.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.pending() {
                Ok(None) => {
                    tracing::info!(endpoint = %self.view.listen_addr(), "RN registered for PoSC and rewards");
                    return;
                }
                Ok(Some(registration)) => {
                    if let Err(e) = self.view.forward_txs(vec![registration.to_system_tx()]) {
                        tracing::debug!(error = %e, "RN registration not forwarded yet");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the RN registration");
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
