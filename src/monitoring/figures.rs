//! The registry's figures kept as values, beside the Prometheus recorder, for `StreamMetrics`.
//!
//! Every metric is registered with both ([`Both`]): the Prometheus recorder
//! renders `/metrics`, and [`Figures`] holds the same counters, gauges and histograms as numbers
//! that a stream reads directly, instead of rendering text and parsing it back. Histograms fold
//! each sample into the same buckets the exporter uses ([`names::buckets_of`]), so both read the
//! same series; their memory is their buckets, whether or not anyone reads them.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_util::registry::{Registry, Storage};

use super::names;

/// One series: a name, its labels and its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Series name (for histograms, with its `_bucket` / `_sum` / `_count` suffix).
    pub name: String,
    /// Label pairs, as registered (a bucket's `le` last).
    pub labels: Vec<(String, String)>,
    /// Current value.
    pub value: f64,
}

/// Every metric of one server as numbers; cheap to clone (one registry shared).
#[derive(Clone)]
pub(crate) struct Figures {
    registry: Arc<Registry<Key, FigureStorage>>,
}

impl Figures {
    pub(crate) fn new() -> Self {
        Self {
            registry: Arc::new(Registry::new(FigureStorage)),
        }
    }

    /// Every series as `/metrics` shows it, in no particular order.
    pub(crate) fn series(&self) -> Vec<Series> {
        let mut series = Vec::new();
        self.registry.visit_counters(|key, counter| {
            series.push(Series::of(key, "", counter.load(Ordering::Acquire) as f64));
        });
        self.registry.visit_gauges(|key, gauge| {
            series.push(Series::of(
                key,
                "",
                f64::from_bits(gauge.load(Ordering::Acquire)),
            ));
        });
        self.registry.visit_histograms(|key, histogram| {
            histogram.push_series(key, &mut series);
        });
        series
    }
}

impl Series {
    fn of(key: &Key, suffix: &str, value: f64) -> Self {
        Self {
            name: format!("{}{suffix}", key.name()),
            labels: key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect(),
            value,
        }
    }
}

impl Recorder for Figures {
    // Descriptions are the Prometheus recorder's; a stream sends names and values only.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.registry.get_or_create_histogram(key, Arc::clone))
    }
}

/// The Prometheus recorder and the figures as one recorder: each handle it gives updates both.
/// (`metrics-util`'s fanout would do, but it is not `Send`, and a server's registry is shared
/// across threads.)
pub(crate) struct Both {
    pub(crate) prometheus: PrometheusRecorder,
    pub(crate) figures: Figures,
}

impl Recorder for Both {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_counter(name, unit, help);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_gauge(name, unit, help);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.prometheus.describe_histogram(name, unit, help);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Pair(
            self.prometheus.register_counter(key, metadata),
            self.figures.register_counter(key, metadata),
        )))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Pair(
            self.prometheus.register_gauge(key, metadata),
            self.figures.register_gauge(key, metadata),
        )))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Pair(
            self.prometheus.register_histogram(key, metadata),
            self.figures.register_histogram(key, metadata),
        )))
    }
}

/// One metric's handle in each recorder.
struct Pair<T>(T, T);

impl CounterFn for Pair<Counter> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl GaugeFn for Pair<Gauge> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl HistogramFn for Pair<Histogram> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

/// Makes each new metric's storage: atomics, and fixed buckets for histograms.
struct FigureStorage;

impl Storage<Key> for FigureStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<Buckets>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::default()
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::default()
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        Arc::new(Buckets::new(names::buckets_of(key.name())))
    }
}

/// A histogram as Prometheus exposes one: how many samples fell at or below each bound, their
/// count and their sum.
struct Buckets {
    bounds: &'static [f64],
    /// Samples per bound, not cumulative: `counts[i]` counts those in `(bounds[i-1], bounds[i]]`.
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// `name_bucket` per bound and `+Inf`, `name_sum` and `name_count`, as the exporter writes them.
    fn push_series(&self, key: &Key, series: &mut Vec<Series>) {
        let mut below = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            below += count.load(Ordering::Acquire);
            let mut bucket = Series::of(key, "_bucket", below as f64);
            bucket.labels.push(("le".to_owned(), bound.to_string()));
            series.push(bucket);
        }
        let count = self.count.load(Ordering::Acquire) as f64;
        let mut all = Series::of(key, "_bucket", count);
        all.labels.push(("le".to_owned(), "+Inf".to_owned()));
        series.push(all);
        let sum = f64::from_bits(self.sum.load(Ordering::Acquire));
        series.push(Series::of(key, "_sum", sum));
        series.push(Series::of(key, "_count", count));
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // The first bound at or above the sample (`le`: less than or equal).
        let index = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // Added before the count, so that a reader never sees a count its sum lacks.
        let _ = self
            .sum
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(series: &[Series], name: &str, le: Option<&str>) -> f64 {
        series
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .map(|(_, v)| v.as_str())
                        == le
            })
            .unwrap_or_else(|| panic!("{name} {le:?} missing"))
            .value
    }

    #[test]
    fn counters_gauges_and_histograms_read_as_prometheus_shows_them() {
        let figures = Figures::new();
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        let counter = Key::from_parts(names::RATE_LIMITED.name, vec![]);
        figures.register_counter(&counter, &metadata).increment(3);
        let gauge = Key::from_parts(names::ROOMS.name, vec![]);
        figures.register_gauge(&gauge, &metadata).set(2.5);
        let delivery = Key::from_parts(
            names::DELIVERY_SECONDS.name,
            vec![metrics::Label::new("front_door", "grpc")],
        );
        let histogram = figures.register_histogram(&delivery, &metadata);
        for sample in [0.00004, 0.0001, 0.003, 99.0] {
            histogram.record(sample);
        }

        let series = figures.series();
        assert_eq!(value(&series, names::RATE_LIMITED.name, None), 3.0);
        assert_eq!(value(&series, names::ROOMS.name, None), 2.5);
        let bucket = format!("{}_bucket", names::DELIVERY_SECONDS.name);
        // Cumulative, with bounds written as the exporter writes them.
        assert_eq!(value(&series, &bucket, Some("0.00005")), 1.0);
        assert_eq!(
            value(&series, &bucket, Some("0.0001")),
            2.0,
            "le includes the bound"
        );
        assert_eq!(value(&series, &bucket, Some("0.005")), 3.0);
        assert_eq!(value(&series, &bucket, Some("10")), 3.0);
        assert_eq!(value(&series, &bucket, Some("+Inf")), 4.0);
        let count = format!("{}_count", names::DELIVERY_SECONDS.name);
        assert_eq!(value(&series, &count, None), 4.0);
        let sum = format!("{}_sum", names::DELIVERY_SECONDS.name);
        assert!((value(&series, &sum, None) - 99.00314).abs() < 1e-9);
        let labelled = series.iter().find(|s| s.name == count).unwrap();
        assert_eq!(
            labelled.labels,
            vec![("front_door".to_owned(), "grpc".to_owned())]
        );
    }
}
