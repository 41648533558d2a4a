//! Peer authentication: the dialler proves it holds a CN key by signing keying material
//! exported from the TLS session (RFC 5705), which is unique to this connection — a recorded
//! handshake is useless on any other connection, and a man in the middle would hold two
//! sessions with different material.

use crate::consensus::selection::CnSet;
use crate::crypto::bls::{SecretKey, Signature, SIGNATURE_LEN};
use crate::types::CnIndex;

/// Exporter label (RFC 5705) and the domain of the signature.
const LABEL: &[u8] = b"EXPORTER-kaon-peer-auth-v1";
/// Bytes of a hello: CN index (4, big endian) + BLS signature.
const HELLO_LEN: usize = 4 + SIGNATURE_LEN;

fn session_secret(conn: &quinn::Connection) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, LABEL, b"")
        .map_err(|_| anyhow::anyhow!("TLS keying material export failed"))?;
    Ok(out)
}

/// Dialler side: sends `me` and its signature over the session secret.
pub async fn initiate(
    conn: &quinn::Connection,
    stream: &mut quinn::SendStream,
    me: CnIndex,
    key: &SecretKey,
) -> anyhow::Result<()> {
    let secret = session_secret(conn)?;
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.extend_from_slice(&me.to_be_bytes());
    hello.extend_from_slice(&key.sign(&[LABEL, &secret[..]].concat()).to_bytes().0);
    stream.write_all(&hello).await?;
    Ok(())
}

/// Listener side: reads the hello and checks it against the CN set; returns the peer.
pub async fn accept(
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    sets: &[std::sync::Arc<CnSet>],
) -> anyhow::Result<CnIndex> {
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    // Invariant: the slice is exactly four bytes.
    let peer = CnIndex(u32::from_be_bytes(hello[..4].try_into().expect("4 bytes")));
    let sig = Signature::from_bytes(&hello[4..])?;
    let msg = [LABEL, &session_secret(conn)?[..]].concat();
    // The claimed index may refer to any CN set this node knows (a CN joining through a
    // governance change uses its index in the new set).
    let known = sets
        .iter()
        .any(|set| set.key(peer).is_ok_and(|key| sig.verify(key, &msg)));
    anyhow::ensure!(known, "peer {peer} failed authentication");
    Ok(peer)
}
