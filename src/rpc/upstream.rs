//! Chains another endpoint serves: a request for `/chain/<id>` that no local backend holds,
//! with `<id>` in an [`Upstream`]'s range, is sent on to that endpoint over HTTP and its
//! answer — status and body, refusals included — comes back unchanged. A platform of regions
//! keeps one URL for every chain this way although each RN follows only some regions: a write
//! is answered by an RN that holds the chain's state and journals it before forwarding it to
//! its region's CNs (`docs/regions.md`).
//!
//! ```text
//! client ─► POST /chain/<id> ─► not local, in an upstream's range ─► bounded body
//!        ─► blocking permit ─► HTTP POST <url>/chain/<id> (deadline, no redirects)
//!        ─► answer ≤ max_response_bytes ─► client
//! ```
//!
//! Bounded like every call: the body by `max_body_bytes` before it is sent, the upstream's
//! answer by `max_response_bytes`, the wait by `request_deadline`, and the requests in flight
//! by the blocking pool's permits (`max_blocking_calls`), which they share with local calls.
//! WebSocket subscriptions are not relayed: an upgrade is answered with the endpoint to use.

use super::error::RpcError;
use super::jsonrpc::error_body;
use super::server::Shared;
use crate::types::ChainId;
use hyper::body::Bytes;
use hyper::StatusCode;
use std::sync::Arc;

/// An endpoint that serves chains `first..=last` (a region's id span, for a region this
/// endpoint does not follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub first: ChainId,
    pub last: ChainId,
    /// `http://host:port`, without a path: requests go to `<url>/chain/<id>`.
    pub url: String,
}

impl Upstream {
    /// Why this upstream cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.first > self.last {
            return Err(format!(
                "upstream {}: chains {}..={} is an empty range",
                self.url, self.first, self.last
            ));
        }
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "upstream {:?}: only http:// endpoints can be forwarded to",
                self.url
            )
        })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "upstream {:?}: give the endpoint as http://host:port, without a path",
                self.url
            ));
        }
        Ok(())
    }

    fn holds(&self, chain: ChainId) -> bool {
        (self.first..=self.last).contains(&chain)
    }

    fn chain_url(&self, chain: ChainId) -> String {
        format!("{}/chain/{chain}", self.url.trim_end_matches('/'))
    }
}

/// The upstreams of a server and the HTTP client that reaches them.
pub(crate) struct Upstreams {
    list: Vec<Upstream>,
    agent: ureq::Agent,
}

impl Upstreams {
    pub(crate) fn new(list: Vec<Upstream>, deadline: std::time::Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(deadline))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self { list, agent }
    }

    /// The upstream serving `chain`, if any.
    pub(crate) fn of(&self, chain: ChainId) -> Option<&Upstream> {
        self.list.iter().find(|u| u.holds(chain))
    }
}

/// What a forwarded request got: the upstream's status and body, or why there is none.
pub(crate) type Forwarded = (StatusCode, Vec<u8>);

/// Sends `body` for `chain` to its upstream and returns the answer. A failure (no permit
/// within the deadline, the endpoint unreachable or slow, an answer too large) is a JSON-RPC
/// error naming the endpoint, with 503 or 502.
pub(crate) async fn forward(shared: &Arc<Shared>, chain: ChainId, body: Bytes) -> Forwarded {
    let Some(upstream) = shared.upstreams.of(chain).cloned() else {
        let e = RpcError::server(format!("unknown chain {chain}"));
        return (StatusCode::NOT_FOUND, error_body(&e));
    };
    let deadline = shared.config.request_deadline;
    let permit = tokio::time::timeout(deadline, Arc::clone(&shared.blocking).acquire_owned());
    let Ok(Ok(permit)) = permit.await else {
        let e = RpcError::server("busy: no capacity to forward the request in time");
        return (StatusCode::SERVICE_UNAVAILABLE, error_body(&e));
    };
    let (agent, limit) = (
        shared.upstreams.agent.clone(),
        shared.config.max_response_bytes as u64,
    );
    let url = upstream.chain_url(chain);
    let sent = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut response = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])?;
        let status = response.status().as_u16();
        let answer = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()?;
        Ok::<_, ureq::Error>((status, answer))
    })
    .await;
    match sent {
        Ok(Ok((status, answer))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, answer)
        }
        Ok(Err(e)) => {
            tracing::debug!(%chain, url = %upstream.url, error = %e, "upstream did not answer");
            let e = RpcError::server(format!(
                "chain {chain} is served by {}, which gave no usable answer: {e}",
                upstream.url
            ));
            (StatusCode::BAD_GATEWAY, error_body(&e))
        }
        Err(e) => {
            let e = RpcError::server(format!("forwarding to {} failed: {e}", upstream.url));
            (StatusCode::BAD_GATEWAY, error_body(&e))
        }
    }
}

/// The answer to a WebSocket upgrade for a chain another endpoint serves.
pub(crate) fn no_websocket(upstream: &Upstream, chain: ChainId) -> RpcError {
    RpcError::server(format!(
        "chain {chain} is served by {}: subscribe there (ws://{}/chain/{chain}); this endpoint forwards HTTP requests only",
        upstream.url,
        upstream.url.trim_start_matches("http://").trim_end_matches('/')
    ))
}
