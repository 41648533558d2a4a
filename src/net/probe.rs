//! PoSC probes: a CN reads the latest block from a registered ranger node over QUIC, with a
//! deadline on the whole exchange.
//!
//! ```text
//!  CN ──dial──► RN endpoint     CN hello (as a CN dialler) → RN hello back, which must be the
//!                               registered node key; one bi stream: BlockRangeRequest{from: h,
//!                               1 block, wait ≤ half the deadline} → BlockRangeResponse
//! ```
//!
//! The RN answered iff, before the deadline, it proved the registered node key and either
//! served block `h` with the committed hash, or had not stored `h` yet but reported a head at
//! most [`MAX_PROBE_LAG`] behind. A wrong block, a wrong key, a head further behind, or no
//! answer in time are failures.

use super::handshake::{self, Credential, Peer, Side};
use super::{sync, tls, NetStats};
use crate::crypto::bls::{PublicKeyBytes, SecretKey};
use crate::types::sync::BlockRangeRequest;
use crate::types::{BlockHash, CnIndex, Height};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Blocks an RN may lag behind the probed height and still pass.
pub const MAX_PROBE_LAG: u64 = 32;

/// Why a probe failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the node at the endpoint is not the registered node key")]
    WrongKey,
    #[error("served block {height} with hash {got}, the committed one is {expected}")]
    WrongBlock {
        height: Height,
        got: BlockHash,
        expected: BlockHash,
    },
    #[error("head {head} is more than {MAX_PROBE_LAG} blocks behind {round}")]
    Behind { head: Height, round: Height },
}

/// What a probe asks of one RN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub endpoint: SocketAddr,
    pub node_key: PublicKeyBytes,
    /// The committed container probed for, and its hash.
    pub round: Height,
    pub hash: BlockHash,
}

/// A CN's client endpoint for probes.
pub struct Prober {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    stats: Arc<NetStats>,
}

impl Prober {
    /// A client endpoint on `bind` (port 0 picks one) that signs its hellos with `key`.
    pub fn bind(
        rt: &tokio::runtime::Handle,
        bind: SocketAddr,
        key: SecretKey,
    ) -> anyhow::Result<Self> {
        let _guard = rt.enter();
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(tls::client_config()?);
        Ok(Self {
            endpoint,
            key,
            stats: Arc::default(),
        })
    }

    /// Probes one RN as CN `me` (its index in the set in force); the head it reported on
    /// success.
    pub async fn probe(
        &self,
        me: CnIndex,
        probe: &Probe,
        deadline: Duration,
    ) -> Result<Height, ProbeFailure> {
        match tokio::time::timeout(deadline, self.exchange(me, probe, deadline / 2)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeFailure::Timeout(deadline)),
        }
    }

    async fn exchange(
        &self,
        me: CnIndex,
        probe: &Probe,
        wait: Duration,
    ) -> Result<Height, ProbeFailure> {
        let unreachable = |e: &dyn std::fmt::Display| ProbeFailure::Unreachable(e.to_string());
        let conn = self
            .endpoint
            .connect(probe.endpoint, tls::SERVER_NAME)
            .map_err(|e| unreachable(&e))?
            .await
            .map_err(|e| unreachable(&e))?;
        let result = self.ask(&conn, me, probe, wait).await;
        conn.close(0u32.into(), b"probe done");
        result
    }

    async fn ask(
        &self,
        conn: &quinn::Connection,
        me: CnIndex,
        probe: &Probe,
        wait: Duration,
    ) -> Result<Height, ProbeFailure> {
        let unreachable = |e: anyhow::Error| ProbeFailure::Unreachable(format!("{e:#}"));
        let mut send = conn.open_uni().await.map_err(|e| unreachable(e.into()))?;
        let credential = Credential::Cn(me, &self.key);
        handshake::say_hello(conn, &mut send, credential, Side::Dialler)
            .await
            .map_err(unreachable)?;
        let mut recv = conn.accept_uni().await.map_err(|e| unreachable(e.into()))?;
        let hello = handshake::read_hello(conn, &mut recv, Side::Listener)
            .await
            .map_err(unreachable)?;
        if !(hello.verify_rn() && hello.peer == Peer::Rn(probe.node_key)) {
            return Err(ProbeFailure::WrongKey);
        }
        let request = BlockRangeRequest {
            from: probe.round,
            max_blocks: 1,
            max_bytes: 1,
            wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let response = sync::request_blocks(conn, &request, wait, &self.stats)
            .await
            .map_err(unreachable)?;
        judge(
            probe,
            response.head,
            response.blocks.first().map(|b| b.hash()),
        )
    }
}

/// The verdict on an answer: the head reported and the hash of block `round` if served.
pub fn judge(
    probe: &Probe,
    head: Height,
    served: Option<BlockHash>,
) -> Result<Height, ProbeFailure> {
    match served {
        Some(got) if got == probe.hash => Ok(head),
        Some(got) => Err(ProbeFailure::WrongBlock {
            height: probe.round,
            got,
            expected: probe.hash,
        }),
        None if head.0 + MAX_PROBE_LAG >= probe.round.0 => Ok(head),
        None => Err(ProbeFailure::Behind {
            head,
            round: probe.round,
        }),
    }
}
