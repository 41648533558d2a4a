//! The Prometheus text exposition format (version 0.0.4), written by hand: counters, gauges and
//! histograms grouped by family, each family once with its `# HELP` and `# TYPE`. Kept small on
//! purpose (see `docs/metrics.md`): the node's counters are atomics it already owns, read on
//! scrape; a registry crate would add a second place where metrics live.

use std::collections::BTreeMap;
use std::fmt::Write;

/// What a family is, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: &'static str,
    samples: Vec<Sample>,
}

/// One line: the family name plus `suffix` (`_bucket`, `_sum`, `_count` of a histogram).
#[derive(Debug)]
struct Sample {
    suffix: &'static str,
    labels: String,
    value: f64,
}

/// A histogram's state at scrape time: `counts[i]` observations fell in bucket `i` (at most
/// `bounds[i]`, above `bounds[i - 1]`); `counts[bounds.len()]` counts those above every
/// bound. `sum` is the total of the observed values.
#[derive(Debug, Clone, Copy)]
pub struct HistogramSnapshot<'a> {
    pub bounds: &'a [f64],
    pub counts: &'a [u64],
    pub sum: f64,
}

/// Prometheus text exposition, grouped by metric family.
#[derive(Debug, Default)]
pub struct Metrics {
    families: BTreeMap<&'static str, Family>,
}

impl Metrics {
    /// A monotonically increasing count.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        self.counter_f64(name, help, labels, value as f64);
    }

    /// A monotonically increasing amount that is not a whole number (seconds of CPU time).
    pub fn counter_f64(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.family(name, Kind::Counter, help)
            .push(sample("", labels, value));
    }

    /// A value that goes up and down.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.family(name, Kind::Gauge, help)
            .push(sample("", labels, value));
    }

    /// A histogram: a cumulative `_bucket` per bound and one for `+Inf` (equal to `_count`),
    /// then `_sum` and `_count`. `name` carries the unit (`..._seconds`).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        h: HistogramSnapshot<'_>,
    ) {
        let samples = self.family(name, Kind::Histogram, help);
        let mut cumulative = 0u64;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(h.counts.get(i).copied().unwrap_or(0));
            let le = format_value(*bound);
            samples.push(sample(
                "_bucket",
                &with(labels, ("le", &le)),
                cumulative as f64,
            ));
        }
        let count = h.counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        samples.push(sample(
            "_bucket",
            &with(labels, ("le", "+Inf")),
            count as f64,
        ));
        samples.push(sample("_sum", labels, h.sum));
        samples.push(sample("_count", labels, count as f64));
    }

    /// The samples of family `name`, created on first use. A later use with another kind is a
    /// bug in the caller; its samples still go to the first family (debug builds panic).
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Vec<Sample> {
        let family = self.families.entry(name).or_insert_with(|| Family {
            kind,
            help,
            samples: Vec::new(),
        });
        debug_assert_eq!(family.kind, kind, "metric {name} declared with two types");
        &mut family.samples
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.name());
            for s in &f.samples {
                let _ = writeln!(
                    out,
                    "{name}{}{} {}",
                    s.suffix,
                    s.labels,
                    format_value(s.value)
                );
            }
        }
        out
    }
}

fn with<'a>(labels: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut all = labels.to_vec();
    all.push(extra);
    all
}

fn sample(suffix: &'static str, labels: &[(&str, &str)], value: f64) -> Sample {
    let labels = if labels.is_empty() {
        String::new()
    } else {
        let pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        format!("{{{}}}", pairs.join(","))
    };
    Sample {
        suffix,
        labels,
        value,
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help text escapes `\` and newlines.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go's float syntax as Prometheus reads it: `+Inf`, `-Inf`, `NaN`, else the shortest decimal.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Checks `text` against the exposition format as Prometheus reads it and returns the
    /// samples by full line name (with labels). Every sample belongs to a family declared by
    /// `# TYPE` before it, no family is declared twice, a histogram's buckets are cumulative,
    /// end with `le="+Inf"`, and that bucket equals `_count`.
    pub(crate) fn parse_exposition(text: &str) -> Result<HashMap<String, f64>, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut current: Option<String> = None;
        let mut samples = HashMap::new();
        // Per histogram series (family + labels without `le`): last bucket, +Inf seen, count.
        let mut buckets: HashMap<String, (f64, Option<f64>)> = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
                if !matches!(kind, "counter" | "gauge" | "histogram") {
                    return Err(format!("unknown type: {line}"));
                }
                if types.insert(name.into(), kind.into()).is_some() {
                    return Err(format!("{name} declared twice"));
                }
                current = Some(name.into());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| format!("bad value: {line}"))?,
            };
            let name = series.split('{').next().unwrap_or(series);
            let family = current
                .as_deref()
                .ok_or(format!("sample before TYPE: {line}"))?;
            let kind = &types[family];
            let suffix = name
                .strip_prefix(family)
                .ok_or(format!("{name} outside family {family}"))?;
            match (kind.as_str(), suffix) {
                ("counter" | "gauge", "") => {}
                ("histogram", "_bucket") => {
                    let (rest, le) =
                        split_le(series).ok_or(format!("bucket without le: {line}"))?;
                    let entry = buckets.entry(rest).or_insert((0.0, None));
                    if entry.1.is_some() {
                        return Err(format!("bucket after +Inf: {line}"));
                    }
                    if value < entry.0 {
                        return Err(format!("buckets not cumulative: {line}"));
                    }
                    entry.0 = value;
                    if le == "+Inf" {
                        entry.1 = Some(value);
                    }
                }
                ("histogram", "_sum") => {}
                ("histogram", "_count") => {
                    let key = series.replacen("_count", "", 1);
                    let inf = buckets
                        .get(&key)
                        .and_then(|b| b.1)
                        .ok_or(format!("no +Inf bucket before {line}"))?;
                    if inf != value {
                        return Err(format!("+Inf bucket {inf} != count in {line}"));
                    }
                }
                _ => return Err(format!("{name} does not fit a {kind}")),
            }
            samples.insert(series.to_string(), value);
        }
        Ok(samples)
    }

    /// `name_bucket{a="1",le="0.5"}` → (`name{a="1"}`, `0.5`).
    fn split_le(series: &str) -> Option<(String, String)> {
        let (name, labels) = series.split_once('{')?;
        let labels = labels.strip_suffix('}')?;
        let mut le = None;
        let rest: Vec<&str> = labels
            .split(',')
            .filter(|l| match l.strip_prefix("le=") {
                Some(v) => {
                    le = Some(v.trim_matches('"').to_string());
                    false
                }
                None => true,
            })
            .collect();
        let name = name.strip_suffix("_bucket")?;
        let key = if rest.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", rest.join(","))
        };
        Some((key, le?))
    }

    fn sample_histogram() -> Metrics {
        let mut m = Metrics::default();
        m.counter("a_total", "A", &[("x", "1")], 3);
        m.gauge("b", "B \\ with\nnewline", &[], f64::INFINITY);
        m.histogram(
            "c_seconds",
            "C",
            &[("method", "eth_call")],
            HistogramSnapshot {
                bounds: &[0.001, 0.5],
                counts: &[2, 0, 5],
                sum: 12.25,
            },
        );
        m
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let text = sample_histogram().render();
        let s = parse_exposition(&text).unwrap();
        assert_eq!(s["c_seconds_bucket{method=\"eth_call\",le=\"0.001\"}"], 2.0);
        assert_eq!(s["c_seconds_bucket{method=\"eth_call\",le=\"0.5\"}"], 2.0);
        assert_eq!(s["c_seconds_bucket{method=\"eth_call\",le=\"+Inf\"}"], 7.0);
        assert_eq!(s["c_seconds_sum{method=\"eth_call\"}"], 12.25);
        assert_eq!(s["c_seconds_count{method=\"eth_call\"}"], 7.0);
        assert!(text.contains("# TYPE c_seconds histogram\n"));
        assert!(text.contains("b +Inf\n"), "{text}");
        assert!(text.contains("# HELP b B \\\\ with\\nnewline\n"), "{text}");
    }

    #[test]
    fn the_checker_refuses_what_prometheus_would() {
        let good = sample_histogram().render();
        assert!(parse_exposition(&good).is_ok());
        let cases = [
            // A sample of no declared family.
            ("# TYPE a_total counter\n", ""),
            // Buckets that go down.
            ("le=\"0.5\"} 2", "le=\"0.5\"} 1"),
            // +Inf not equal to the count.
            (
                "c_seconds_count{method=\"eth_call\"} 7",
                "c_seconds_count{method=\"eth_call\"} 6",
            ),
            // A histogram suffix on a counter.
            ("a_total{x=\"1\"} 3", "a_total_sum{x=\"1\"} 3"),
            // The last bucket not named `+Inf`.
            ("le=\"+Inf\"", "le=\"inf\""),
        ];
        for (from, to) in cases {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            assert!(
                parse_exposition(&bad).is_err(),
                "accepted with {from:?} -> {to:?}"
            );
        }
    }
}
