//! The result of a benchmark run: its parameters and its figures, as a table or as JSON.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Parameters and figures of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Which scenario ran.
    pub scenario: &'static str,
    /// The parameters, in order.
    pub parameters: Vec<(&'static str, String)>,
    /// The figures, in order.
    pub figures: Vec<(&'static str, f64)>,
}

impl Report {
    pub(super) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            parameters: Vec::new(),
            figures: Vec::new(),
        }
    }

    pub(super) fn parameter(&mut self, name: &'static str, value: impl ToString) {
        self.parameters.push((name, value.to_string()));
    }

    pub(super) fn figure(&mut self, name: &'static str, value: f64) {
        self.figures.push((name, value));
    }

    /// p50, p99 and p99.9 of `latencies` (recorded in microseconds) under `names`.
    pub(super) fn percentiles(&mut self, names: [&'static str; 3], latencies: &Histogram<u64>) {
        for (name, quantile) in names.into_iter().zip([0.5, 0.99, 0.999]) {
            self.figure(name, latencies.value_at_quantile(quantile) as f64);
        }
    }

    /// A two-column table.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n", self.scenario);
        let width = self
            .parameters
            .iter()
            .map(|(name, _)| name.len())
            .chain(self.figures.iter().map(|(name, _)| name.len()))
            .max()
            .unwrap_or(0);
        for (name, value) in &self.parameters {
            let _ = writeln!(out, "  {name:<width$}  {value}");
        }
        out.push_str("  --\n");
        for (name, value) in &self.figures {
            let _ = writeln!(out, "  {name:<width$}  {}", format_figure(*value));
        }
        out
    }
}

fn format_figure(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// A latency histogram in microseconds, from 1 µs to 100 s with two significant digits (1%).
/// Each of up to thousands of subscribers keeps one and records every delivery: at three digits
/// each would be ~280 KB, and the recording alone, missing the cache, was the generator's largest
/// cost.
pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 2).expect("valid histogram bounds")
}
