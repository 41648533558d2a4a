//! RPC counters for the Prometheus endpoint: calls, errors and a latency histogram (seconds) per
//! method, requests refused by reason, and open connections and subscriptions. Updated with
//! relaxed atomics on the request path; rendered on scrape like the CN's own counters.

use super::methods::Method;
use crate::telemetry::{HistogramSnapshot, Metrics};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (recorded in whole microseconds).
const LATENCY_BOUNDS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];
/// The same bounds in seconds, as the histogram's `le` labels give them.
const LATENCY_BOUNDS_S: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];
/// Buckets per method: one per bound, and the last for calls slower than every bound.
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

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
    UpstreamBusy,
    UpstreamFailed,
    ForwardLoop,
    UpstreamWebSocket,
}

impl Refusal {
    const ALL: [Refusal; 18] = [
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
        Self::UpstreamBusy,
        Self::UpstreamFailed,
        Self::ForwardLoop,
        Self::UpstreamWebSocket,
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
            Self::UpstreamBusy => "upstream_busy",
            Self::UpstreamFailed => "upstream_failed",
            Self::ForwardLoop => "forward_loop",
            Self::UpstreamWebSocket => "upstream_websocket",
        }
    }
}

#[derive(Default)]
struct MethodStats {
    calls: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

struct Inner {
    methods: Vec<MethodStats>,
    refusals: [AtomicU64; Refusal::ALL.len()],
    http_requests: AtomicU64,
    forwarded: AtomicU64,
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
            forwarded: AtomicU64::new(0),
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
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        s.buckets[bucket].fetch_add(1, Relaxed);
    }

    pub(crate) fn refuse(&self, why: Refusal) {
        self.0.refusals[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn http_request(&self) {
        self.0.http_requests.fetch_add(1, Relaxed);
    }

    /// A request answered by an upstream endpoint ([`super::upstream`]).
    pub(crate) fn forwarded(&self) {
        self.0.forwarded.fetch_add(1, Relaxed);
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
        m.counter(
            "kaon_rpc_forwarded_total",
            "Requests for chains of regions this node does not follow answered by their endpoint",
            labels,
            self.0.forwarded.load(Relaxed),
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
        let counts: [u64; LATENCY_BUCKETS] = std::array::from_fn(|i| s.buckets[i].load(Relaxed));
        m.histogram(
            "kaon_rpc_call_duration_seconds",
            "Time to answer an RPC call, by method",
            &l,
            HistogramSnapshot {
                bounds: &LATENCY_BOUNDS_S,
                counts: &counts,
                sum: s.micros.load(Relaxed) as f64 / 1e6,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::parse_exposition;

    #[test]
    fn latency_bounds_agree_in_both_units() {
        for (us, s) in LATENCY_BOUNDS_US.iter().zip(LATENCY_BOUNDS_S) {
            assert_eq!(*us as f64 / 1e6, s);
        }
    }

    #[test]
    fn call_latency_is_a_histogram_in_seconds() {
        let metrics = RpcMetrics::default();
        let call = Method::from_name("eth_call").unwrap();
        metrics.record(call, Duration::from_micros(50), true);
        metrics.record(call, Duration::from_micros(2_000), false);
        metrics.record(call, Duration::from_secs(3), true);
        let mut m = Metrics::default();
        metrics.metrics(&mut m, &[("chain", "1001")]);
        let text = m.render();
        let s = parse_exposition(&text).unwrap();
        let series = |suffix: &str, le: Option<&str>| {
            let le = le.map_or(String::new(), |le| format!(",le=\"{le}\""));
            s[&format!(
                "kaon_rpc_call_duration_seconds{suffix}{{chain=\"1001\",method=\"eth_call\"{le}}}"
            )]
        };
        assert_eq!(series("_bucket", Some("0.0001")), 1.0);
        assert_eq!(series("_bucket", Some("0.001")), 1.0);
        assert_eq!(series("_bucket", Some("0.0025")), 2.0);
        assert_eq!(series("_bucket", Some("1")), 2.0);
        assert_eq!(series("_bucket", Some("+Inf")), 3.0);
        assert_eq!(series("_count", None), 3.0);
        assert!((series("_sum", None) - 3.00205).abs() < 1e-9);
        assert!(text.contains("# TYPE kaon_rpc_call_duration_seconds histogram\n"));
        assert!(!text.contains("microseconds"), "{text}");
    }
}
