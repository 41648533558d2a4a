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
//! it proved the registered node key and served block `r` whole: the header the CN committed
//! (by hash) and the segments that header commits to ([`check_body`]), so an RN that keeps
//! only headers fails.

use super::handshake::{self, Credential, Peer, Side};
use super::{sync, tls, NetStats};
use crate::consensus::proposal::check_body;
use crate::crypto::bls::{PublicKeyBytes, SecretKey};
use crate::types::sync::{BlockRangeRequest, MAX_RANGE_BYTES};
use crate::types::{Block, BlockHash, CnIndex, Height};
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
    /// The header is the committed one but the segments served are not the ones it commits to
    /// (left out, as by an RN that keeps only headers, or altered).
    #[error("served block {height} with a body that does not match its header: {reason}")]
    BodyMismatch { height: Height, reason: String },
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
        // One block, whole: the server always sends the first block of a range however
        // large, and the response frame is bounded by the block limit on this side.
        let request = BlockRangeRequest {
            from: probe.read,
            max_blocks: 1,
            max_bytes: MAX_RANGE_BYTES,
            wait_ms: 0,
        };
        let response = sync::request_blocks(conn, &request, timeout, &self.stats)
            .await
            .map_err(unreachable)?;
        judge(probe, response.head, response.blocks.first())
    }
}

/// The verdict on an answer: the head reported and the block read, if served. The block
/// passes iff its header is the committed one and its segments are those the header commits
/// to.
pub fn judge(probe: &Probe, head: Height, served: Option<&Block>) -> Result<Height, ProbeFailure> {
    let Some(block) = served else {
        return Err(ProbeFailure::Missing {
            read: probe.read,
            head,
        });
    };
    let got = block.hash();
    if got != probe.hash {
        return Err(ProbeFailure::WrongBlock {
            height: probe.read,
            got,
            expected: probe.hash,
        });
    }
    check_body(block).map_err(|e| ProbeFailure::BodyMismatch {
        height: probe.read,
        reason: e.to_string(),
    })?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::bls::SignatureBytes;
    use crate::types::block::{
        CommitCertificate, Header, SealedHeader, Segment, SegmentCommitment, HEADER_VERSION,
    };
    use crate::types::{ChainId, Round, SignerBitmap};
    use alloy_primitives::{Bytes, B256};

    /// A block at height 7 with one servicechain segment of `txs`, its header committing to
    /// exactly that segment.
    fn block(txs: &[&[u8]]) -> Block {
        let segment = Segment {
            chain_id: ChainId(1001),
            txs: txs.iter().map(|t| Bytes::copy_from_slice(t)).collect(),
        };
        let header = Header {
            version: HEADER_VERSION,
            region: ChainId(1),
            height: Height(7),
            round: Round(0),
            parent: BlockHash(B256::repeat_byte(1)),
            timestamp_ms: 1,
            proposer: CnIndex(0),
            random_reveal: SignatureBytes::default(),
            mix: B256::ZERO,
            cn_set_root: B256::ZERO,
            next_cn_set: Vec::new(),
            segments: vec![SegmentCommitment {
                chain_id: segment.chain_id,
                tx_count: segment.txs.len() as u32,
                tx_root: segment.tx_root(),
                receipts_root: B256::ZERO,
                state_root: B256::ZERO,
            }],
        };
        let seal = CommitCertificate {
            round: Round(0),
            signers: SignerBitmap::default(),
            aggregate: SignatureBytes::default(),
        };
        Block {
            sealed: SealedHeader { header, seal },
            segments: vec![segment],
        }
    }

    fn probe_of(block: &Block) -> Probe {
        Probe {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            node_key: PublicKeyBytes([0; crate::crypto::bls::PUBLIC_KEY_LEN]),
            read: block.header().height,
            hash: block.hash(),
        }
    }

    #[test]
    fn the_committed_block_whole_passes() {
        let real = block(&[b"tx one", b"tx two"]);
        assert_eq!(
            judge(&probe_of(&real), Height(40), Some(&real)),
            Ok(Height(40))
        );
    }

    #[test]
    fn the_committed_header_with_another_body_fails() {
        let real = block(&[b"tx one", b"tx two"]);
        let probe = probe_of(&real);
        let mut altered = real.clone();
        altered.segments[0].txs[1] = Bytes::from_static(b"tx forged");
        let mut headers_only = real.clone();
        headers_only.segments.clear();
        let mut emptied = real;
        emptied.segments[0].txs.clear();
        for served in [altered, headers_only, emptied] {
            assert_eq!(served.hash(), probe.hash, "the header is the committed one");
            assert!(
                matches!(
                    judge(&probe, Height(40), Some(&served)),
                    Err(ProbeFailure::BodyMismatch {
                        height: Height(7),
                        ..
                    })
                ),
                "{served:?}"
            );
        }
    }

    #[test]
    fn another_header_or_no_block_fails() {
        let real = block(&[b"tx one"]);
        let other = block(&[b"tx other"]);
        let probe = probe_of(&real);
        assert!(matches!(
            judge(&probe, Height(40), Some(&other)),
            Err(ProbeFailure::WrongBlock { .. })
        ));
        assert_eq!(
            judge(&probe, Height(3), None),
            Err(ProbeFailure::Missing {
                read: Height(7),
                head: Height(3)
            })
        );
    }
}
