//! RPC counters for the Prometheus endpoint: calls, errors and latency per method, requests
//! refused by reason, and open connections and subscriptions. Updated with relaxed atomics on
//! the request path; rendered on scrape like the CN's own counters.

use super::methods::Method;
use crate::telemetry::Metrics;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is `+Inf`).
const LATENCY_BOUNDS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// Why a request or connection was refused before reaching a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ParseError,
    InvalidRequest,
    UnknownMethod,
    BatchTooLarge,
    BodyTooLarge,
    UnknownChain,
    NotFound,
    ReadTimeout,
    RequestTimeout,
    TooManyConnections,
    TooManySubscriptions,
    SlowSubscriber,
    IdleWebSocket,
    TooManyFilters,
}

impl Refusal {
    const ALL: [Refusal; 14] = [
        Self::ParseError,
        Self::InvalidRequest,
        Self::UnknownMethod,
        Self::BatchTooLarge,
        Self::BodyTooLarge,
        Self::UnknownChain,
        Self::NotFound,
        Self::ReadTimeout,
        Self::RequestTimeout,
        Self::TooManyConnections,
        Self::TooManySubscriptions,
        Self::SlowSubscriber,
        Self::IdleWebSocket,
        Self::TooManyFilters,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::ParseError => "parse_error",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownMethod => "unknown_method",
            Self::BatchTooLarge => "batch_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::UnknownChain => "unknown_chain",
            Self::NotFound => "not_found",
            Self::ReadTimeout => "read_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::SlowSubscriber => "slow_subscriber",
            Self::IdleWebSocket => "idle_websocket",
            Self::TooManyFilters => "too_many_filters",
        }
    }
}

#[derive(Default)]
struct MethodStats {
    calls: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
}

struct Inner {
    methods: Vec<MethodStats>,
    refusals: [AtomicU64; Refusal::ALL.len()],
    http_requests: AtomicU64,
    connections: AtomicI64,
    websockets: AtomicI64,
    subscriptions: AtomicI64,
}

/// Shared handle on the server's counters (cheap to clone, readable from any thread).
#[derive(Clone)]
pub struct RpcMetrics(Arc<Inner>);

impl Default for RpcMetrics {
    fn default() -> Self {
        Self(Arc::new(Inner {
            methods: Method::ALL.iter().map(|_| MethodStats::default()).collect(),
            refusals: Default::default(),
            http_requests: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            websockets: AtomicI64::new(0),
            subscriptions: AtomicI64::new(0),
        }))
    }
}

/// Which open-resource gauge a [`RpcMetrics::open`] guard counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gauge {
    Connections,
    WebSockets,
    Subscriptions,
}

/// Decrements its gauge when dropped, so every exit path of a connection is counted.
pub(crate) struct GaugeGuard {
    metrics: RpcMetrics,
    gauge: Gauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.metrics.gauge(self.gauge).fetch_sub(1, Relaxed);
    }
}

impl RpcMetrics {
    pub(crate) fn record(&self, method: Method, elapsed: Duration, ok: bool) {
        let s = &self.0.methods[method as usize];
        s.calls.fetch_add(1, Relaxed);
        if !ok {
            s.errors.fetch_add(1, Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        s.micros.fetch_add(us, Relaxed);
        if let Some(i) = LATENCY_BOUNDS_US.iter().position(|b| us <= *b) {
            s.buckets[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn refuse(&self, why: Refusal) {
        self.0.refusals[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn http_request(&self) {
        self.0.http_requests.fetch_add(1, Relaxed);
    }

    fn gauge(&self, gauge: Gauge) -> &AtomicI64 {
        match gauge {
            Gauge::Connections => &self.0.connections,
            Gauge::WebSockets => &self.0.websockets,
            Gauge::Subscriptions => &self.0.subscriptions,
        }
    }

    /// Counts one open resource until the guard drops.
    pub(crate) fn open(&self, gauge: Gauge) -> GaugeGuard {
        self.gauge(gauge).fetch_add(1, Relaxed);
        GaugeGuard {
            metrics: self.clone(),
            gauge,
        }
    }

    /// Calls of `method` so far (by its JSON-RPC name); 0 for unknown names.
    pub fn calls(&self, method: &str) -> u64 {
        Method::from_name(method).map_or(0, |m| self.0.methods[m as usize].calls.load(Relaxed))
    }

    /// The counters for the Prometheus endpoint, with `labels` on every sample. Methods never
    /// called are left out.
    pub fn metrics(&self, m: &mut Metrics, labels: &[(&str, &str)]) {
        for &method in Method::ALL {
            self.method_metrics(m, labels, method);
        }
        for why in Refusal::ALL {
            let mut l = labels.to_vec();
            l.push(("reason", why.label()));
            m.counter(
                "kaon_rpc_refused_total",
                "RPC requests or connections refused before reaching a method",
                &l,
                self.0.refusals[why as usize].load(Relaxed),
            );
        }
        m.counter(
            "kaon_rpc_http_requests_total",
            "HTTP requests received by the RPC server",
            labels,
            self.0.http_requests.load(Relaxed),
        );
        let gauges = [
            (
                "kaon_rpc_connections",
                "Open RPC connections",
                Gauge::Connections,
            ),
            (
                "kaon_rpc_websockets",
                "Open RPC WebSocket sessions",
                Gauge::WebSockets,
            ),
            (
                "kaon_rpc_subscriptions",
                "Live eth_subscribe subscriptions",
                Gauge::Subscriptions,
            ),
        ];
        for (name, help, gauge) in gauges {
            m.gauge(name, help, labels, self.gauge(gauge).load(Relaxed) as f64);
        }
    }

    fn method_metrics(&self, m: &mut Metrics, labels: &[(&str, &str)], method: Method) {
        let s = &self.0.methods[method as usize];
        let calls = s.calls.load(Relaxed);
        if calls == 0 {
            return;
        }
        let mut l = labels.to_vec();
        l.push(("method", method.name()));
        m.counter("kaon_rpc_calls_total", "RPC calls by method", &l, calls);
        m.counter(
            "kaon_rpc_errors_total",
            "RPC calls answered with an error, by method",
            &l,
            s.errors.load(Relaxed),
        );
        m.counter(
            "kaon_rpc_call_microseconds_total",
            "Time spent answering RPC calls, by method",
            &l,
            s.micros.load(Relaxed),
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += s.buckets[i].load(Relaxed);
            let le = format!("{}", *bound as f64 / 1e6);
            let mut lb = l.clone();
            lb.push(("le", &le));
            m.counter(
                "kaon_rpc_call_seconds_bucket",
                "RPC calls answered within `le` seconds, by method (cumulative)",
                &lb,
                cumulative,
            );
        }
        let mut lb = l.clone();
        lb.push(("le", "+Inf"));
        m.counter(
            "kaon_rpc_call_seconds_bucket",
            "RPC calls answered within `le` seconds, by method (cumulative)",
            &lb,
            calls,
        );
    }
}
