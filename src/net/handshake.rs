//! Peer authentication: a node proves it holds its key by signing keying material exported
//! from the TLS session (RFC 5705), which is unique to this connection — a recorded handshake
//! is useless on any other connection, and a man in the middle would hold two sessions with
//! different material.
//!
//! Two kinds of peers say hello:
//!
//! ```text
//! CN hello:  index (4, big endian, < 2^32 - 1) | BLS signature (96)
//! RN hello:  0xffffffff (4) | BLS public key (48) | BLS signature (96)
//! ```
//!
//! A CN is admitted when the key of the index it claims (in a CN set the listener knows)
//! verifies the signature. A ranger node is not a CN-set member: it authenticates with its own
//! node key, which anyone may generate — so it is admitted as an RN, which may ask for blocks,
//! forward transactions and gossip among RNs, and never counts as a CN. On connections that
//! involve an RN the listener answers with its own hello on a stream it opens, so the dialler
//! knows whom it reached. The signed message says which side and which kind of hello it is,
//! so no hello is ever valid as another.

use super::hello_checks::HelloChecks;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{
    PublicKey, PublicKeyBytes, SecretKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN,
};
use crate::types::CnIndex;
use alloy_primitives::hex;
use std::sync::Arc;

/// Exporter label (RFC 5705) and the domain of the signature.
const LABEL: &[u8] = b"EXPORTER-kaon-peer-auth-v1";
/// The index field of an RN hello: no CN set ever reaches this many members.
pub const RN_MARKER: u32 = u32::MAX;
/// Bytes of the index field that opens every hello.
const INDEX_LEN: usize = 4;

/// Who a hello proves the peer to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A member of a CN set the node knows, by index.
    Cn(CnIndex),
    /// A ranger node, by its own public key.
    Rn(PublicKeyBytes),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cn(cn) => write!(f, "CN {cn}"),
            Self::Rn(key) => write!(f, "RN {}", hex::encode(&key.0[..6])),
        }
    }
}

/// Which end of the connection says the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialler,
    Listener,
}

/// What a node signs its hello with.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    Cn(CnIndex, &'a SecretKey),
    Rn(&'a SecretKey),
}

fn session_secret(conn: &quinn::Connection) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, LABEL, b"")
        .map_err(|_| anyhow::anyhow!("TLS keying material export failed"))?;
    Ok(out)
}

/// The message a hello signs. A CN dialler's is the original `LABEL ‖ secret`; every other
/// hello appends its kind and side, so none can be replayed as another.
fn hello_message(conn: &quinn::Connection, rn: bool, side: Side) -> anyhow::Result<Vec<u8>> {
    let suffix: &[u8] = match (rn, side) {
        (false, Side::Dialler) => b"",
        (false, Side::Listener) => b"/cn/listener",
        (true, Side::Dialler) => b"/rn/dialler",
        (true, Side::Listener) => b"/rn/listener",
    };
    Ok([LABEL, &session_secret(conn)?[..], suffix].concat())
}

/// The bytes of a hello for `credential` on `conn`.
pub fn hello(
    conn: &quinn::Connection,
    credential: Credential<'_>,
    side: Side,
) -> anyhow::Result<Vec<u8>> {
    Ok(match credential {
        Credential::Cn(me, key) => {
            let sig = key.sign(&hello_message(conn, false, side)?);
            [&me.to_be_bytes()[..], &sig.to_bytes().0[..]].concat()
        }
        Credential::Rn(key) => {
            let sig = key.sign(&hello_message(conn, true, side)?);
            [
                &RN_MARKER.to_be_bytes()[..],
                &key.public_key().to_bytes().0[..],
                &sig.to_bytes().0[..],
            ]
            .concat()
        }
    })
}

/// Dialler side of CN-to-CN: sends `me` and its signature over the session secret.
pub async fn initiate(
    conn: &quinn::Connection,
    stream: &mut quinn::SendStream,
    me: CnIndex,
    key: &SecretKey,
) -> anyhow::Result<()> {
    say_hello(conn, stream, Credential::Cn(me, key), Side::Dialler).await
}

/// Writes this node's hello on `stream`.
pub async fn say_hello(
    conn: &quinn::Connection,
    stream: &mut quinn::SendStream,
    credential: Credential<'_>,
    side: Side,
) -> anyhow::Result<()> {
    stream.write_all(&hello(conn, credential, side)?).await?;
    Ok(())
}

/// A hello read off the wire; nothing is trusted until one of its `verify` methods agrees.
/// Reading it costs nothing: the key and signature are parsed (point decompression, subgroup
/// checks) only when verified, which a listener does on its bounded pool
/// ([`super::hello_checks`]).
pub struct Hello {
    /// Who the peer claims to be.
    pub peer: Peer,
    /// The signature as sent.
    sig: [u8; SIGNATURE_LEN],
    /// What the signature must cover on this connection.
    msg: Vec<u8>,
}

impl Hello {
    fn signed_by(&self, key: &PublicKey) -> bool {
        Signature::from_bytes(&self.sig).is_ok_and(|sig| sig.verify(key, &self.msg))
    }

    /// A CN hello whose signature verifies under `key`.
    pub fn verify_cn(&self, key: &PublicKey) -> bool {
        matches!(self.peer, Peer::Cn(_)) && self.signed_by(key)
    }

    /// An RN hello whose signature verifies under the key it presents.
    pub fn verify_rn(&self) -> bool {
        match &self.peer {
            Peer::Rn(key) => PublicKey::try_from(key).is_ok_and(|key| self.signed_by(&key)),
            Peer::Cn(_) => false,
        }
    }

    /// An RN hello that verifies, or a CN hello whose claimed index has a key in one of
    /// `sets` that verifies (a CN joining through a governance change uses its index in the
    /// new set).
    pub fn verify(&self, sets: &[Arc<CnSet>]) -> bool {
        match self.peer {
            Peer::Rn(_) => self.verify_rn(),
            Peer::Cn(cn) => sets
                .iter()
                .any(|set| set.key(cn).is_ok_and(|key| self.verify_cn(key))),
        }
    }
}

/// Reads the hello the peer at `side` sends; check it with [`Hello::verify`].
pub async fn read_hello(
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    side: Side,
) -> anyhow::Result<Hello> {
    let mut index = [0u8; INDEX_LEN];
    stream.read_exact(&mut index).await?;
    let index = u32::from_be_bytes(index);
    let peer = if index == RN_MARKER {
        let mut key = [0u8; PUBLIC_KEY_LEN];
        stream.read_exact(&mut key).await?;
        Peer::Rn(PublicKeyBytes(key))
    } else {
        Peer::Cn(CnIndex(index))
    };
    let mut sig = [0u8; SIGNATURE_LEN];
    stream.read_exact(&mut sig).await?;
    Ok(Hello {
        msg: hello_message(conn, matches!(peer, Peer::Rn(_)), side)?,
        peer,
        sig,
    })
}

/// Reads a dialler's hello and admits it if it verifies (see [`Hello::verify`]), the check
/// run on `checks` (refused at once when every slot is busy).
pub async fn accept_peer(
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    sets: Vec<Arc<CnSet>>,
    checks: &HelloChecks,
) -> anyhow::Result<Peer> {
    let hello = read_hello(conn, stream, Side::Dialler).await?;
    let peer = hello.peer;
    let verified = checks.run(move || hello.verify(&sets)).await?;
    anyhow::ensure!(verified, "{peer} failed authentication");
    Ok(peer)
}
