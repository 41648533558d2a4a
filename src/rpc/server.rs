//! The listener: accepts connections up to the limit, serves HTTP/1.1 with hyper (keep-alive,
//! header and body deadlines), routes by path to a chain, reads bounded bodies, and answers
//! them with the JSON-RPC driver shared with WebSocket sessions.

use super::backend::RpcBackend;
use super::error::{RpcError, INVALID_REQUEST, PARSE_ERROR};
use super::hub::{ChainEvent, Hub};
use super::io::WriteDeadline;
use super::jsonrpc::{
    error_body, parse_request, split_body, Body, BodyError, Request, ResponseWriter,
};
use super::methods::{dispatch, Filters, Method, MethodResult};
use super::metrics::{Gauge, Refusal, RpcMetrics};
use super::types::{RpcBlock, RpcLog};
use super::upstream::{self, Upstreams};
use super::ws::{self, Subscriptions};
use super::{json, jsonrpc, RpcConfig};
use crate::types::ChainId;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method as HttpMethod, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Largest request head (request line and headers) a client may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Time given to a refused client to read its 503.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);

/// What every connection and handler shares.
pub(crate) struct Shared {
    pub backend: Arc<dyn RpcBackend>,
    pub config: RpcConfig,
    pub hub: Hub,
    /// Installed polling filters.
    pub filters: Filters,
    pub metrics: RpcMetrics,
    /// Permits for calls on the blocking pool (forwarded requests take one too).
    pub blocking: Arc<Semaphore>,
    /// Endpoints serving chains this server does not ([`super::upstream`]).
    pub upstreams: Upstreams,
    /// Flips to `true` when the server stops.
    pub stop: watch::Receiver<bool>,
}

/// A running JSON-RPC server. Dropping it stops accepting and closes every connection.
pub struct RpcServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl RpcServer {
    /// Binds `addr` and serves `backend` on the runtime `rt`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        addr: SocketAddr,
        config: RpcConfig,
        backend: Arc<dyn RpcBackend>,
    ) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            backend,
            hub: Hub::new(config.notify_capacity),
            filters: Filters::new(
                config.max_filters,
                config.filter_timeout,
                config.max_pending_filter_hashes,
            ),
            metrics: RpcMetrics::default(),
            blocking: Arc::new(Semaphore::new(config.max_blocking_calls.max(1))),
            upstreams: Upstreams::new(
                config.upstreams.clone(),
                upstream::forwarding_permits(config.max_blocking_calls),
            ),
            stop: stop_rx,
            config,
        });
        rt.spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::info!(%local_addr, "JSON-RPC server listening");
        Ok(Self {
            shared,
            local_addr,
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters, for the metrics endpoint.
    pub fn metrics_source(&self) -> RpcMetrics {
        self.shared.metrics.clone()
    }

    /// Whether any WebSocket client subscribed to `chain` (the node may skip building logs).
    pub fn has_subscribers(&self, chain: ChainId) -> bool {
        let mut any = false;
        self.shared.hub.publish(chain, || {
            any = true;
            None
        });
        any
    }

    /// Chains any WebSocket client subscribed to: what the node builds heads and logs for.
    pub fn subscribed_chains(&self) -> Vec<ChainId> {
        self.shared.hub.subscribed_chains()
    }

    /// Tells `newHeads` subscribers of `chain` about a new head. Never blocks; costs nothing
    /// without subscribers.
    pub fn notify_head(&self, chain: ChainId, head: &RpcBlock) {
        self.shared.hub.publish(chain, || {
            jsonrpc::to_raw(&json::block(head, false))
                .ok()
                .map(ChainEvent::Head)
        });
    }

    /// Tells `logs` subscribers of `chain` about the logs of a new block.
    pub fn notify_logs(&self, chain: ChainId, logs: &[RpcLog]) {
        if logs.is_empty() {
            return;
        }
        self.shared
            .hub
            .publish(chain, || Some(ChainEvent::Logs(logs.to_vec())));
    }

    /// Stops accepting and closes open connections (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    let mut stop = shared.stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "RPC accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            shared.metrics.refuse(Refusal::TooManyConnections);
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(Arc::clone(&shared), stream, peer, permit));
    }
}

async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, stream.write_all(BUSY)).await;
}

/// Serves one connection until the client leaves, idles past the read deadline, or the
/// server stops. The connection slot travels into a WebSocket session if the client upgrades.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let _open = shared.metrics.open(Gauge::Connections);
    let slot = Arc::new(permit);
    let service = {
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let slot = Arc::clone(&slot);
            async move { Ok::<_, Infallible>(handle(shared, slot, req).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.read_deadline)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder
        .serve_connection(
            TokioIo::new(WriteDeadline::new(stream, shared.config.write_deadline)),
            service,
        )
        .with_upgrades();
    tokio::pin!(conn);
    let mut stop = shared.stop.clone();
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "RPC connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(shared.config.write_deadline, conn).await;
        }
    }
}

/// Where a request goes: a chain this server's backend holds, or one an upstream serves.
#[derive(Debug, Clone, Copy)]
enum Target {
    Local(ChainId),
    Upstream(ChainId),
}

/// The chain a path names: `/` is the default chain, `/chain/<id>` chain `<id>`.
fn route(shared: &Shared, path: &str) -> Result<Target, (StatusCode, RpcError, Refusal)> {
    let chain = match path.trim_end_matches('/') {
        "" => shared.config.default_chain,
        rest => rest
            .strip_prefix("/chain/")
            .and_then(|id| id.parse::<u64>().ok())
            .map(ChainId)
            .ok_or_else(|| {
                let e = RpcError::new(
                    INVALID_REQUEST,
                    format!("no such path {path:?}; use / or /chain/<chain_id>"),
                );
                (StatusCode::NOT_FOUND, e, Refusal::NotFound)
            })?,
    };
    if shared.backend.has_chain(chain) {
        return Ok(Target::Local(chain));
    }
    if shared.upstreams.of(chain).is_some() {
        return Ok(Target::Upstream(chain));
    }
    let e = RpcError::server(format!("unknown chain {chain}"));
    Err((StatusCode::NOT_FOUND, e, Refusal::UnknownChain))
}

async fn handle(
    shared: Arc<Shared>,
    slot: Arc<OwnedSemaphorePermit>,
    req: HttpRequest<Incoming>,
) -> Response<Full<Bytes>> {
    shared.metrics.http_request();
    let started = Instant::now();
    let target = match route(&shared, req.uri().path()) {
        Ok(target) => target,
        Err((status, error, why)) => {
            shared.metrics.refuse(why);
            return json_response(&shared, status, error_body(&error));
        }
    };
    match (req.method().clone(), target) {
        (HttpMethod::POST, target) => post(&shared, target, req, started).await,
        (HttpMethod::GET, Target::Local(chain)) if ws::is_upgrade(&req) => {
            ws::upgrade(shared.clone(), chain, req, slot).unwrap_or_else(|error| {
                json_response(&shared, StatusCode::BAD_REQUEST, error_body(&error))
            })
        }
        (HttpMethod::GET, Target::Upstream(chain)) if ws::is_upgrade(&req) => {
            shared.metrics.refuse(Refusal::UpstreamWebSocket);
            let error = upstream::no_websocket(chain);
            json_response(&shared, StatusCode::BAD_REQUEST, error_body(&error))
        }
        (HttpMethod::OPTIONS, _) => preflight(&shared),
        _ => {
            let e = RpcError::new(INVALID_REQUEST, "use POST, or GET with a WebSocket upgrade");
            let mut r = json_response(&shared, StatusCode::METHOD_NOT_ALLOWED, error_body(&e));
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("POST, GET, OPTIONS"),
            );
            r
        }
    }
}

/// Reads a body of at most the configured size within the read deadline, and answers it (or
/// has its upstream answer it).
async fn post(
    shared: &Arc<Shared>,
    target: Target,
    req: HttpRequest<Incoming>,
    started: Instant,
) -> Response<Full<Bytes>> {
    let max = shared.config.max_body_bytes;
    let hop = req.headers().contains_key(upstream::FORWARDED_HEADER);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return body_too_large(shared, max);
    }
    let read = Limited::new(req.into_body(), max).collect();
    let bytes = match tokio::time::timeout(shared.config.read_deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return body_too_large(shared, max)
        }
        Ok(Err(e)) => {
            let error = RpcError::new(INVALID_REQUEST, format!("cannot read body: {e}"));
            return json_response(shared, StatusCode::BAD_REQUEST, error_body(&error));
        }
        Err(_) => {
            shared.metrics.refuse(Refusal::ReadTimeout);
            let error = RpcError::new(INVALID_REQUEST, "body not received in time");
            return json_response(shared, StatusCode::REQUEST_TIMEOUT, error_body(&error));
        }
    };
    let chain = match target {
        Target::Local(chain) => chain,
        Target::Upstream(chain) => {
            let (status, body) = upstream::forward(shared, chain, bytes, hop, started).await;
            return json_response(shared, status, body);
        }
    };
    let body = match std::str::from_utf8(&bytes) {
        Ok(text) => answer(shared, chain, text, None).await.unwrap_or_default(),
        Err(_) => {
            shared.metrics.refuse(Refusal::ParseError);
            error_body(&RpcError::new(
                PARSE_ERROR,
                "parse error: body is not UTF-8",
            ))
        }
    };
    json_response(shared, StatusCode::OK, body)
}

fn body_too_large(shared: &Shared, max: usize) -> Response<Full<Bytes>> {
    shared.metrics.refuse(Refusal::BodyTooLarge);
    let e = RpcError::new(
        INVALID_REQUEST,
        format!("request body too large: the limit is {max} bytes"),
    );
    json_response(shared, StatusCode::PAYLOAD_TOO_LARGE, error_body(&e))
}

fn json_response(shared: &Shared, status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_cors(shared, &mut r);
    r
}

fn add_cors(shared: &Shared, r: &mut Response<Full<Bytes>>) {
    if let Some(origin) = shared
        .config
        .cors_allow_origin
        .as_deref()
        .filter(|o| !o.is_empty())
        .and_then(|o| HeaderValue::from_str(o).ok())
    {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
}

/// Answers a browser's CORS preflight.
fn preflight(shared: &Shared) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    add_cors(shared, &mut r);
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// Answers one body (a request or a batch) for `chain`: the JSON-RPC driver of both
/// transports. `subs` is the WebSocket session's subscriptions (`None` over HTTP). Returns
/// `None` when nothing is to be sent back (only notifications).
pub(crate) async fn answer(
    shared: &Arc<Shared>,
    chain: ChainId,
    text: &str,
    mut subs: Option<&mut Subscriptions>,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + shared.config.request_deadline;
    let (items, batch) = match split_body(text, shared.config.max_batch_len) {
        Ok(Body::Single(raw)) => (vec![raw], false),
        Ok(Body::Batch(items)) => (items, true),
        Err(e) => {
            shared.metrics.refuse(match e {
                BodyError::Parse(_) => Refusal::ParseError,
                BodyError::BatchTooLarge(_) => Refusal::BatchTooLarge,
                BodyError::EmptyBatch => Refusal::InvalidRequest,
            });
            return Some(error_body(&e.to_rpc()));
        }
    };
    let mut writer = ResponseWriter::new(batch, shared.config.max_response_bytes);
    let requests: Vec<_> = items.into_iter().map(parse_request).collect();
    let mut rest = requests.as_slice();
    while !rest.is_empty() {
        let (group, later) = rest.split_at(concurrent_prefix(rest, subs.is_some()));
        rest = later;
        // The answers would be dropped anyway: once full, the rest is not run.
        let full = writer.full();
        let results: Vec<Option<MethodResult>> = match (subs.as_deref_mut(), group) {
            (Some(subs), [Ok(req)]) if !full => {
                vec![Some(call(shared, chain, req, Some(subs), deadline).await)]
            }
            _ => {
                futures_util::future::join_all(group.iter().map(|request| async move {
                    match request {
                        Ok(req) if !full => Some(call(shared, chain, req, None, deadline).await),
                        _ => None,
                    }
                }))
                .await
            }
        };
        for (request, result) in group.iter().zip(results) {
            match request {
                Err((e, id)) => {
                    shared.metrics.refuse(Refusal::InvalidRequest);
                    writer.answer(*id, false, Err(e));
                }
                Ok(req) => {
                    let result = result.unwrap_or_else(|| {
                        Err(RpcError::new(
                            super::error::RESPONSE_TOO_LARGE,
                            "response too large",
                        ))
                    });
                    writer.answer(req.id, req.id.is_none(), result.as_deref());
                }
            }
        }
    }
    writer.finish()
}

/// Most `eth_sendRawTransaction` calls of one HTTP batch that run at once: concurrent
/// submissions share one journal sync. Below the pool's 64 queued nonces per account, so
/// a sender's nonces, reordered within a group, are never refused as too far ahead.
const BATCH_CONCURRENCY: usize = 16;

/// How many calls at the front of `requests` run together: a run of up to
/// [`BATCH_CONCURRENCY`] `eth_sendRawTransaction`s over HTTP, otherwise one (other methods
/// may read much or change a WebSocket session's subscriptions, and run one by one as
/// before, so a batch holds no more of the shared blocking pool or memory than one call).
fn concurrent_prefix(
    requests: &[Result<Request<'_>, (RpcError, Option<&serde_json::value::RawValue>)>],
    websocket: bool,
) -> usize {
    let submits = requests
        .iter()
        .take(BATCH_CONCURRENCY)
        .take_while(|r| matches!(r, Ok(req) if req.method == "eth_sendRawTransaction"))
        .count();
    if websocket {
        1
    } else {
        submits.max(1)
    }
}

async fn call(
    shared: &Arc<Shared>,
    chain: ChainId,
    req: &Request<'_>,
    subs: Option<&mut Subscriptions>,
    deadline: Instant,
) -> MethodResult {
    let Some(method) = Method::from_name(&req.method) else {
        shared.metrics.refuse(Refusal::UnknownMethod);
        return Err(RpcError::method_not_found(&req.method));
    };
    if let (Some(subs), Method::EthSubscribe | Method::EthUnsubscribe) = (subs, method) {
        return subs.handle(method, req.params);
    }
    match tokio::time::timeout_at(deadline, dispatch(shared, chain, method, req.params)).await {
        Ok(result) => result,
        Err(_) => {
            shared.metrics.refuse(Refusal::RequestTimeout);
            Err(RpcError::timeout())
        }
    }
}
