//! WebSocket sessions: the upgrade on the chain's path, requests answered by the same driver
//! as HTTP, and `eth_subscribe` (`newHeads`, `logs`) fed from the chain's broadcast.
//!
//! Memory per session is bounded: messages are at most the body limit, answers and
//! notifications share one queue of `ws_queue_len` messages towards the client. Answers wait
//! for room (so a client that does not read stops being read), notifications never wait: if
//! the queue is full, or a subscriber fell behind the broadcast, the session is closed rather
//! than buffering without end. Each frame must be written within the write deadline.
//!
//! A session must stay alive to keep its slot: the server pings every third of
//! `ws_idle_timeout`, and a client from which nothing arrives (no message, no pong) for the whole
//! timeout is disconnected. Every WebSocket client library answers pings on its own.

use super::backend::LogFilter;
use super::error::{RpcError, LIMIT_EXCEEDED};
use super::hub::{ChainEvent, EventReceiver};
use super::json;
use super::jsonrpc::to_raw;
use super::methods::{Method, MethodResult};
use super::metrics::{Gauge, GaugeGuard, Refusal};
use super::params::{FilterArgs, Params};
use super::server::{answer, Shared};
use crate::types::ChainId;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot, Notify, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Pings sent per idle timeout: a client that misses two still keeps its session.
const PINGS_PER_IDLE_TIMEOUT: u32 = 3;

/// Whether a GET asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Accepts the upgrade and starts the session once hyper hands the connection over. The
/// session keeps the connection's slot.
pub(crate) fn upgrade(
    shared: Arc<Shared>,
    chain: ChainId,
    mut req: Request<Incoming>,
    slot: Arc<OwnedSemaphorePermit>,
) -> Result<Response<Full<Bytes>>, RpcError> {
    let bad = |msg: &str| RpcError::new(super::error::INVALID_REQUEST, msg);
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    if !version_ok {
        return Err(bad("WebSocket version 13 required"));
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| bad("Sec-WebSocket-Key missing"))?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| bad("bad Sec-WebSocket-Key"))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(shared, chain, TokioIo::new(upgraded), slot).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(r)
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

async fn session(
    shared: Arc<Shared>,
    chain: ChainId,
    io: Upgraded,
    _slot: Arc<OwnedSemaphorePermit>,
) {
    let _open = shared.metrics.open(Gauge::WebSockets);
    let max = shared.config.max_body_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .max_write_buffer_size(shared.config.max_response_bytes.saturating_mul(2));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(shared.config.ws_queue_len.max(1));
    let write_deadline = shared.config.write_deadline;
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            match tokio::time::timeout(write_deadline, sink.send(msg)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = tokio::time::timeout(write_deadline, sink.close()).await;
    });
    let kill = Arc::new(Notify::new());
    let mut subs = Subscriptions::new(Arc::clone(&shared), chain, out.clone(), Arc::clone(&kill));
    let mut stop = shared.stop.clone();
    let idle_limit = shared.config.ws_idle_timeout;
    let ping_every = (idle_limit / PINGS_PER_IDLE_TIMEOUT).max(std::time::Duration::from_millis(1));
    let mut pings = tokio::time::interval(ping_every);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = pings.tick() => {
                if heard.elapsed() >= idle_limit {
                    shared.metrics.refuse(Refusal::IdleWebSocket);
                    break;
                }
                // A full queue means the client is not reading: the slow-subscriber rule.
                let _ = out.try_send(Message::Ping(Bytes::new()));
                continue;
            }
            _ = kill.notified() => {
                shared.metrics.refuse(Refusal::SlowSubscriber);
                writer.abort();
                break;
            }
            _ = stop.changed() => break,
            _ = out.closed() => break,
        };
        heard = tokio::time::Instant::now();
        let reply = match msg {
            Some(Ok(Message::Text(text))) => {
                answer(&shared, chain, text.as_str(), Some(&mut subs)).await
            }
            Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                Ok(text) => answer(&shared, chain, text, Some(&mut subs)).await,
                Err(_) => Some(super::jsonrpc::error_body(&RpcError::new(
                    super::error::PARSE_ERROR,
                    "parse error: message is not UTF-8",
                ))),
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            // Pings are answered by the protocol layer; pongs and raw frames carry nothing.
            Some(Ok(_)) => continue,
        };
        if let Some(reply) = reply {
            // The driver writes JSON from UTF-8 input and serde output: always UTF-8.
            let text = String::from_utf8(reply).unwrap_or_default();
            if out.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        subs.start_pending();
    }
    drop(subs);
    drop(out);
}

/// What a subscription listens for.
enum Topic {
    NewHeads,
    Logs(LogFilter),
}

struct Live {
    task: AbortHandle,
    _gauge: GaugeGuard,
}

/// The subscriptions of one session.
pub(crate) struct Subscriptions {
    shared: Arc<Shared>,
    chain: ChainId,
    out: mpsc::Sender<Message>,
    kill: Arc<Notify>,
    live: HashMap<String, Live>,
    /// Subscriptions created by the message being answered: they start forwarding only once
    /// the answer carrying their id is queued, so no notification precedes it.
    pending: Vec<oneshot::Sender<()>>,
}

impl Subscriptions {
    fn new(
        shared: Arc<Shared>,
        chain: ChainId,
        out: mpsc::Sender<Message>,
        kill: Arc<Notify>,
    ) -> Self {
        Self {
            shared,
            chain,
            out,
            kill,
            live: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// `eth_subscribe` / `eth_unsubscribe`.
    pub(crate) fn handle(&mut self, method: Method, params: Option<&RawValue>) -> MethodResult {
        let started = Instant::now();
        let result = match method {
            Method::EthSubscribe => self.subscribe(params),
            _ => self.unsubscribe(params),
        };
        self.shared
            .metrics
            .record(method, started.elapsed(), result.is_ok());
        result
    }

    fn subscribe(&mut self, params: Option<&RawValue>) -> MethodResult {
        let p = Params::parse(params, 2)?;
        let kind: String = p.required(0)?;
        let topic = match kind.as_str() {
            "newHeads" => Topic::NewHeads,
            "logs" => Topic::Logs(
                p.optional::<FilterArgs>(1)?
                    .unwrap_or_default()
                    .log_filter()?,
            ),
            other => {
                return Err(RpcError::invalid_params(format!(
                    "no \"{other}\" subscription in eth namespace"
                )))
            }
        };
        let max = self.shared.config.max_subscriptions_per_connection;
        if self.live.len() >= max {
            self.shared.metrics.refuse(Refusal::TooManySubscriptions);
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!("too many subscriptions: the limit is {max} per connection"),
            ));
        }
        let id = json::random_id();
        let (ready, started) = oneshot::channel();
        let forward = Forward {
            events: self.shared.hub.subscribe(self.chain),
            topic,
            id: id.clone(),
            out: self.out.clone(),
            kill: Arc::clone(&self.kill),
        };
        let task = tokio::spawn(forward.run(started)).abort_handle();
        self.pending.push(ready);
        let gauge = self.shared.metrics.open(Gauge::Subscriptions);
        self.live.insert(
            id.clone(),
            Live {
                task,
                _gauge: gauge,
            },
        );
        to_raw(&id)
    }

    fn unsubscribe(&mut self, params: Option<&RawValue>) -> MethodResult {
        let p = Params::parse(params, 1)?;
        let id: String = p.required(0)?;
        let found = self.live.remove(&id).map(|live| live.task.abort());
        to_raw(&found.is_some())
    }

    /// Lets the subscriptions created since the last call start forwarding.
    fn start_pending(&mut self) {
        for ready in self.pending.drain(..) {
            let _ = ready.send(());
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for live in self.live.values() {
            live.task.abort();
        }
    }
}

/// One subscription's forwarding task.
struct Forward {
    events: EventReceiver,
    topic: Topic,
    id: String,
    out: mpsc::Sender<Message>,
    kill: Arc<Notify>,
}

impl Forward {
    async fn run(mut self, started: oneshot::Receiver<()>) {
        if started.await.is_err() {
            return;
        }
        loop {
            let event = match self.events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => return self.kill.notify_one(),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !self.forward(&event) {
                return;
            }
        }
    }

    /// Queues the notifications `event` yields; `false` when the session must end.
    fn forward(&self, event: &ChainEvent) -> bool {
        match (event, &self.topic) {
            (ChainEvent::Head(header), Topic::NewHeads) => self.push(header),
            (ChainEvent::Logs(logs), Topic::Logs(filter)) => logs
                .iter()
                .filter(|log| filter.matches(log))
                .all(|log| to_raw(&json::log(log)).is_ok_and(|raw| self.push(&raw))),
            _ => true,
        }
    }

    fn push(&self, result: &RawValue) -> bool {
        let text = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{{\"subscription\":\"{}\",\"result\":{}}}}}",
            self.id,
            result.get()
        );
        match self.out.try_send(Message::text(text)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
