//! PoSC probes: a CN reads a block from a registered ranger node over QUIC, with a deadline
//! on the whole exchange.
//!
//! ```text
//!  CN ──dial──► RN endpoint     CN hello (as a CN dialler) → RN hello back, which must be the
//!                               registered node key; one bi stream: BlockRangeRequest{from: r,
//!                               1 block, no wait} → BlockRangeResponse
//! ```
//!
//! The block read, `r` = [`read_height`], is drawn from the probe round and the RN, at least
//! [`MAX_PROBE_LAG`] blocks below the round: an RN that follows the chain has it, and one that
//! keeps nothing cannot answer by reporting a head. The RN answered iff, before the deadline,
//! it proved the registered node key and served block `r` with the hash the CN committed.

use super::handshake::{self, Credential, Peer, Side};
use super::{sync, tls, NetStats};
use crate::crypto::bls::{PublicKeyBytes, SecretKey};
use crate::types::sync::BlockRangeRequest;
use crate::types::{BlockHash, CnIndex, Height};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Blocks an RN may lag behind the probe round and still pass (the block read is at least
/// this far below the round).
pub const MAX_PROBE_LAG: u64 = 32;

/// The height a probe of round `round` reads from `rn`: uniform over `1 ..= round − lag`
/// (height 1 while the chain is shorter), unpredictable before `round`'s container.
pub fn read_height(
    round: Height,
    rn: &alloy_primitives::Address,
    mix: alloy_primitives::B256,
) -> Height {
    let span = round.0.saturating_sub(MAX_PROBE_LAG).max(1);
    let seed = crate::crypto::hash::sha256_concat(&[
        b"KAON/posc/read/v1",
        mix.as_slice(),
        &round.0.to_be_bytes(),
        rn.as_slice(),
    ]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&seed[..8]);
    Height(1 + u64::from_be_bytes(word) % span)
}

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
    #[error("did not serve block {read} (head {head})")]
    Missing { read: Height, head: Height },
}

/// What a probe asks of one RN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub endpoint: SocketAddr,
    pub node_key: PublicKeyBytes,
    /// The block read ([`read_height`]) and the hash this CN committed for it.
    pub read: Height,
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
        timeout: Duration,
    ) -> Result<Height, ProbeFailure> {
        let unreachable = |e: &dyn std::fmt::Display| ProbeFailure::Unreachable(e.to_string());
        let conn = self
            .endpoint
            .connect(probe.endpoint, tls::SERVER_NAME)
            .map_err(|e| unreachable(&e))?
            .await
            .map_err(|e| unreachable(&e))?;
        let result = self.ask(&conn, me, probe, timeout).await;
        conn.close(0u32.into(), b"probe done");
        result
    }

    async fn ask(
        &self,
        conn: &quinn::Connection,
        me: CnIndex,
        probe: &Probe,
        timeout: Duration,
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
            from: probe.read,
            max_blocks: 1,
            max_bytes: 1,
            wait_ms: 0,
        };
        let response = sync::request_blocks(conn, &request, timeout, &self.stats)
            .await
            .map_err(unreachable)?;
        judge(
            probe,
            response.head,
            response.blocks.first().map(|b| b.hash()),
        )
    }
}

/// The verdict on an answer: the head reported and the hash of the block read, if served.
pub fn judge(
    probe: &Probe,
    head: Height,
    served: Option<BlockHash>,
) -> Result<Height, ProbeFailure> {
    match served {
        Some(got) if got == probe.hash => Ok(head),
        Some(got) => Err(ProbeFailure::WrongBlock {
            height: probe.read,
            got,
            expected: probe.hash,
        }),
        None => Err(ProbeFailure::Missing {
            read: probe.read,
            head,
        }),
    }
}
