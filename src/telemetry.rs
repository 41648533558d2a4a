//! Logging and operator-facing counters.
//!
//! Logs go through `tracing` (one span per pipeline stage); `RUST_LOG` overrides the configured
//! filter. [`render_links`] turns link counters into the one-line-per-link table that
//! `kaon` prints, so an operator sees which stage is the bottleneck (a full link with growing
//! backpressure sits in front of it).

use crate::pipeline::LinkSnapshot;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber writing to stderr. Safe to call twice (the second
/// call is ignored, e.g. in tests).
pub fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A table of link counters, one line per link.
pub fn render_links(links: &[LinkSnapshot]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>12} {:>12} {:>12}\n",
        "link", "depth", "sent", "received", "backpressure"
    );
    for l in links {
        out += &format!(
            "{:<24} {:>4}/{:<4} {:>12} {:>12} {:>12}\n",
            l.name, l.depth, l.capacity, l.sent, l.received, l.backpressure
        );
    }
    out
}
