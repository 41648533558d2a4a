//! Chains another endpoint serves: a request for `/chain/<id>` that no local backend holds,
//! with `<id>` in an [`Upstream`]'s range, is sent on to that endpoint over HTTP and its
//! JSON answer — status and body, refusals included — comes back. A platform of regions keeps
//! one URL for every chain this way although each RN follows only some regions: a write is
//! answered by an RN that holds the chain's state and journals it before forwarding it to its
//! region's CNs (`docs/regions.md`).
//!
//! ```text
//! client ─► POST /chain/<id> ─► not local, in an upstream's range ─► bounded body
//!        ─► forwarding permit (none free: 503 at once) ─► HTTP POST <url>/chain/<id>
//!           (what is left of the request deadline, no redirects, no proxy, loop marker)
//!        ─► a 2xx/4xx/5xx JSON answer ≤ max_response_bytes ─► client; anything else: 502
//! ```
//!
//! Forwarded requests have permits of their own ([`forwarding_permits`]), so an endpoint that
//! stalls holds at most those and never the blocking pool local calls run on. A request that
//! already crossed one endpoint carries [`FORWARDED_HEADER`] and is not forwarded again: two
//! RNs configured to forward a region to each other answer 508 instead of bouncing it. Clients
//! are not shown the upstream's address (it may be a private one); the node logs it. WebSocket
//! subscriptions are not relayed.

use super::error::RpcError;
use super::jsonrpc::error_body;
use super::metrics::Refusal;
use super::server::Shared;
use crate::types::ChainId;
use hyper::body::Bytes;
use hyper::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Marks a request one endpoint forwarded to another.
pub const FORWARDED_HEADER: &str = "x-kaon-forwarded";
/// Longest a connection to an upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An endpoint that serves chains `first..=last` (a region's id span, for a region this
/// endpoint does not follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub first: ChainId,
    pub last: ChainId,
    /// `http://host:port`, nothing else: requests go to `<url>/chain/<id>`.
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
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| format!("upstream {:?}: {e}", self.url))?;
        let plain = uri.scheme_str() == Some("http")
            && uri
                .authority()
                .is_some_and(|a| !a.as_str().contains('@') && a.port_u16().is_some())
            && matches!(uri.path(), "" | "/")
            && uri.query().is_none()
            && !self.url.contains('#');
        if !plain {
            return Err(format!(
                "upstream {:?}: give the endpoint as http://host:port (no path, query, user or other scheme)",
                self.url
            ));
        }
        Ok(())
    }

    pub(crate) fn holds(&self, chain: ChainId) -> bool {
        (self.first..=self.last).contains(&chain)
    }

    pub(crate) fn chain_url(&self, chain: ChainId) -> String {
        format!("{}/chain/{chain}", self.url.trim_end_matches('/'))
    }
}

/// Forwarded requests in flight at most, from the blocking-call limit (a quarter of it, at
/// least one).
pub(crate) fn forwarding_permits(max_blocking_calls: usize) -> usize {
    (max_blocking_calls / 4).max(1)
}

/// The upstreams of a server, the HTTP client that reaches them and their permits.
pub(crate) struct Upstreams {
    list: Vec<Upstream>,
    agent: ureq::Agent,
    permits: Arc<Semaphore>,
}

impl Upstreams {
    pub(crate) fn new(list: Vec<Upstream>, permits: usize) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        Self {
            list,
            agent,
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// The upstream serving `chain`, if any.
    pub(crate) fn of(&self, chain: ChainId) -> Option<&Upstream> {
        self.list.iter().find(|u| u.holds(chain))
    }
}

/// What a forwarded request got: the status and body to answer with.
pub(crate) type Forwarded = (StatusCode, Vec<u8>);

/// Sends `body` for `chain` to its upstream within what is left of the request deadline
/// (counted from `started`) and returns the answer. `hop` says the request was itself
/// forwarded here. A refusal (no permit free, a loop, the endpoint unreachable, slow, or
/// answering with something other than JSON) is a JSON-RPC error with 503, 508 or 502.
pub(crate) async fn forward(
    shared: &Arc<Shared>,
    chain: ChainId,
    body: Bytes,
    hop: bool,
    started: Instant,
) -> Forwarded {
    let refuse = |why: Refusal, status: StatusCode, message: String| {
        shared.metrics.refuse(why);
        (status, error_body(&RpcError::server(message)))
    };
    let Some(upstream) = shared.upstreams.of(chain).cloned() else {
        return refuse(
            Refusal::UnknownChain,
            StatusCode::NOT_FOUND,
            format!("unknown chain {chain}"),
        );
    };
    if hop {
        tracing::warn!(%chain, url = %upstream.url, "a forwarded request would be forwarded again: two endpoints forward this region to each other");
        return refuse(
            Refusal::ForwardLoop,
            StatusCode::LOOP_DETECTED,
            format!("chain {chain} was forwarded here by another endpoint, which this one would forward to again: the endpoints' [rn] remote entries form a loop"),
        );
    }
    let Ok(permit) = Arc::clone(&shared.upstreams.permits).try_acquire_owned() else {
        return refuse(
            Refusal::UpstreamBusy,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: too many requests for chain {chain}'s region are being forwarded; try again"
            ),
        );
    };
    let left = shared
        .config
        .request_deadline
        .saturating_sub(started.elapsed());
    let (agent, limit) = (
        shared.upstreams.agent.clone(),
        shared.config.max_response_bytes as u64,
    );
    let url = upstream.chain_url(chain);
    let sent = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut response = agent
            .post(&url)
            .config()
            .timeout_global(Some(left))
            .build()
            .header("content-type", "application/json")
            .header(FORWARDED_HEADER, "1")
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
    let failure = match sent {
        Ok(Ok((status, answer))) => match usable(status, &answer) {
            Some(status) => {
                shared.metrics.forwarded();
                return (status, answer);
            }
            None => format!("answered {status} with no JSON-RPC answer"),
        },
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::debug!(%chain, url = %upstream.url, error = %failure, "upstream gave no usable answer");
    refuse(
        Refusal::UpstreamFailed,
        StatusCode::BAD_GATEWAY,
        format!("chain {chain} is served by another region's endpoint, which gave no usable answer ({failure})"),
    )
}

/// The status to answer with when an upstream's answer can be passed on: a JSON body under a
/// final status that carries one (not informational, a redirect, 204 or 205).
fn usable(status: u16, answer: &[u8]) -> Option<StatusCode> {
    let final_status = matches!(status, 200..=203 | 206..=299 | 400..=599);
    let status = StatusCode::from_u16(status).ok()?;
    let json = serde_json::from_slice::<serde::de::IgnoredAny>(answer).is_ok();
    (final_status && json).then_some(status)
}

/// The answer to a WebSocket upgrade for a chain another endpoint serves.
pub(crate) fn no_websocket(chain: ChainId) -> RpcError {
    RpcError::server(format!(
        "chain {chain} belongs to a region this endpoint forwards HTTP requests for only: subscribe at an endpoint of that region"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_statuses_with_a_json_body_are_passed_on() {
        let json = br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#;
        assert_eq!(usable(200, json), Some(StatusCode::OK));
        assert_eq!(usable(404, json), Some(StatusCode::NOT_FOUND));
        assert_eq!(usable(503, json), Some(StatusCode::SERVICE_UNAVAILABLE));
        for status in [101, 204, 301, 307] {
            assert_eq!(usable(status, json), None, "{status}");
        }
        assert_eq!(usable(200, b"<html>bad gateway</html>"), None);
        assert_eq!(usable(200, b""), None);
    }

    #[test]
    fn an_upstream_is_a_plain_http_host_and_port() {
        let upstream = |url: &str| Upstream {
            first: ChainId(2_000_000),
            last: ChainId(2_999_999),
            url: url.into(),
        };
        assert!(upstream("http://10.0.0.7:8545").check().is_ok());
        assert!(upstream("http://rn.example:8545/").check().is_ok());
        for bad in [
            "https://a:1",
            "http://a:1/x",
            "http://a:1?x=1",
            "http://a:1#f",
            "http://user:pw@a:1",
            "http://a",
            "a:1",
            "http://a b:1",
        ] {
            assert!(upstream(bad).check().is_err(), "{bad}");
        }
        let empty = Upstream {
            first: ChainId(3),
            last: ChainId(2),
            url: "http://a:1".into(),
        };
        assert!(empty.check().is_err());
    }
}
