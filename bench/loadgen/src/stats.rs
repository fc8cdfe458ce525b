//! Latency histograms and error tallies, and their serializable summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Distinct error kinds kept by name; the rest are counted under "(other)".
const ERROR_KINDS: usize = 20;

/// Microsecond histogram, 1 µs to 60 s at three significant digits.
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let _ = self.0.record(micros);
    }

    pub fn summary(&self) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.0.is_empty() {
            return Latency::default();
        }
        Latency {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.50)),
            p95: ms(self.0.value_at_quantile(0.95)),
            p99: ms(self.0.value_at_quantile(0.99)),
            max: ms(self.0.max()),
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// One line of the human report.
    pub fn line(&self, name: &str) -> String {
        if self.count == 0 {
            return format!("{name:<40} no samples\n");
        }
        format!(
            "{name:<40} p50 {:>8.2} ms   p95 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms\n",
            self.p50, self.p95, self.p99, self.max
        )
    }
}

/// Errors by kind: the message without ids, so that the same failure counts once.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Errors {
    pub count: u64,
    pub kinds: BTreeMap<String, u64>,
}

impl Errors {
    pub fn record(&mut self, error: &anyhow::Error) {
        self.count += 1;
        let kind = format!("{error:#}");
        let kind = if self.kinds.contains_key(&kind) || self.kinds.len() < ERROR_KINDS {
            kind
        } else {
            "(other)".to_owned()
        };
        if self.count <= 5 {
            tracing::warn!(error = %kind, "failed");
        }
        *self.kinds.entry(kind).or_default() += 1;
    }
}
