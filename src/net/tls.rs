//! TLS for QUIC between nodes. Certificates are throwaway self-signed ones: a peer's identity
//! is its CN key, proven after the handshake by a BLS signature over keying material exported
//! from this very TLS session (see [`super::handshake`]), so the certificate itself carries no
//! trust and the client accepts any — while still checking the handshake signatures, which
//! bind the session to the certificate's key.

use crate::crypto::bls::SecretKey;
use crate::crypto::hash::sha256_concat;
use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;

/// ALPN protocol id: refuses anything that is not a Kaon node speaking this version.
pub const ALPN: &[u8] = b"kaon/1";
/// Server name used for every connection (certificates are not checked against it).
pub const SERVER_NAME: &str = "kaon";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's QUIC endpoint on `listen`: it accepts peers and dials them from the same socket.
/// Its stateless-reset key is derived from the node key, so a node restarted on the same
/// address answers packets of its previous process's connections with a reset its peers
/// accept: they drop the dead connection and dial again at once instead of waiting out the
/// idle timeout.
pub fn endpoint(listen: SocketAddr, node_key: &SecretKey) -> anyhow::Result<quinn::Endpoint> {
    let socket =
        std::net::UdpSocket::bind(listen).with_context(|| format!("binding QUIC on {listen}"))?;
    let runtime = quinn::default_runtime().context("QUIC needs a tokio runtime")?;
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config(node_key),
        Some(server_config()?),
        socket,
        runtime,
    )?;
    endpoint.set_default_client_config(client_config()?);
    Ok(endpoint)
}

/// QUIC endpoint settings whose stateless-reset key and connection-id key are derived from the
/// node key (one-way hashes: the node key cannot be recovered from them). Both must survive a
/// restart: a packet for an old connection gets a reset only if its connection id still
/// validates and the token matches the one the old process handed out.
fn endpoint_config(node_key: &SecretKey) -> quinn::EndpointConfig {
    let derive = |purpose: &[u8]| sha256_concat(&[purpose, &node_key.to_bytes()]);
    let reset = derive(b"kaon/quic-stateless-reset");
    let cid = derive(b"kaon/quic-connection-id");
    let cid_key = u64::from_le_bytes(cid[..8].try_into().unwrap_or_default());
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_slice(),
    )));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// A QUIC server configuration with a fresh self-signed certificate.
pub fn server_config() -> anyhow::Result<quinn::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// A QUIC client configuration that accepts any certificate (identity is checked by the
/// application handshake).
pub fn client_config() -> anyhow::Result<quinn::ClientConfig> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// Longest wait at shutdown for the close frames to reach the peers.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Closes every connection of `endpoint` and waits (at most [`CLOSE_GRACE`]) until the close
/// frames are out, so that peers free this node's slots now rather than after their idle
/// timeout: a node restarted at once with the same key (on a new address, where no stateless
/// reset reaches its old connections) is then not refused as holding too many. The endpoint's
/// tasks run on `rt`; the wait is a plain channel with a deadline, so it neither needs a timer
/// nor hangs when `rt` is shutting down or cannot run the task (it then returns at once or at
/// the deadline); called from async code it does not wait.
pub fn close(endpoint: &quinn::Endpoint, rt: &tokio::runtime::Handle) {
    endpoint.close(0u32.into(), b"shutdown");
    let (done, idle) = std::sync::mpsc::sync_channel::<()>(1);
    let closing = endpoint.clone();
    rt.spawn(async move {
        closing.wait_idle().await;
        let _ = done.send(());
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        // Inside async code: blocking here would stall the runtime that sends the frames.
        return;
    }
    // Disconnected (the task was dropped) or timed out: either way, nothing more to wait for.
    let _ = idle.recv_timeout(CLOSE_GRACE);
}

/// Bidirectional streams (block requests) a peer may have open at once on one connection;
/// they are answered one at a time, so more would only queue.
const MAX_OPEN_REQUESTS: u32 = 8;

/// Keep-alives every 2 s and a 10 s idle timeout: a dead peer is noticed within seconds.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_OPEN_REQUESTS.into());
    t.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    // Invariant: 10 s fits quinn's VarInt range.
    t.max_idle_timeout(Some(
        std::time::Duration::from_secs(10)
            .try_into()
            .expect("small duration"),
    ));
    t
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
