//! The server's metrics registry: every counter, gauge and histogram kept as numbers, which
//! `/metrics` renders as Prometheus text (with `metrics-exporter-prometheus`'s own formatting)
//! and `StreamMetrics` reads as they are, so the two always agree and nobody parses text back.
//! Histograms fold each sample into fixed buckets ([`names::buckets_of`]): their memory is their
//! buckets, whoever reads them and however often.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use indexmap::IndexMap;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    LabelSet,
    formatting::{sanitize_metric_name, write_help_line, write_metric_line, write_type_line},
};
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

/// Every metric of one server as numbers, and their descriptions.
pub(crate) struct Figures {
    registry: Registry<Key, FigureStorage>,
    /// Help text and unit by metric name, as first described. A `std` mutex: held to insert or
    /// to copy out, never across an `.await`.
    descriptions: Mutex<HashMap<String, (SharedString, Option<Unit>)>>,
}

impl Figures {
    pub(crate) fn new() -> Self {
        Self {
            registry: Registry::new(FigureStorage),
            descriptions: Mutex::default(),
        }
    }

    /// Every series in the Prometheus text format: per metric its `# HELP` and `# TYPE` lines
    /// and its series, metrics by name.
    pub(crate) fn render(&self) -> String {
        let no_global_labels = IndexMap::new();
        let labels = |key: &Key| LabelSet::from_key_and_global(key, &no_global_labels);
        let mut counters = BTreeMap::<String, Vec<(LabelSet, u64)>>::new();
        self.registry.visit_counters(|key, counter| {
            let value = counter.load(Ordering::Acquire);
            by_name(&mut counters, key).push((labels(key), value));
        });
        let mut gauges = BTreeMap::<String, Vec<(LabelSet, f64)>>::new();
        self.registry.visit_gauges(|key, gauge| {
            let value = f64::from_bits(gauge.load(Ordering::Acquire));
            by_name(&mut gauges, key).push((labels(key), value));
        });
        let mut histograms = BTreeMap::<String, Vec<(LabelSet, Arc<Buckets>)>>::new();
        self.registry.visit_histograms(|key, histogram| {
            by_name(&mut histograms, key).push((labels(key), Arc::clone(histogram)));
        });
        let descriptions = self
            .descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut text = String::new();
        let head = |text: &mut String, name: &str, kind: &str| {
            if let Some((help, _)) = descriptions.get(name) {
                write_help_line(text, name, None, None, help);
            }
            write_type_line(text, name, None, None, kind);
        };
        for (name, series) in &counters {
            head(&mut text, name, "counter");
            for (labels, value) in series {
                write_metric_line::<&str, u64>(&mut text, name, None, labels, None, *value, None);
            }
            text.push('\n');
        }
        for (name, series) in &gauges {
            head(&mut text, name, "gauge");
            for (labels, value) in series {
                write_metric_line::<&str, f64>(&mut text, name, None, labels, None, *value, None);
            }
            text.push('\n');
        }
        for (name, series) in &histograms {
            head(&mut text, name, "histogram");
            for (labels, buckets) in series {
                buckets.write(&mut text, name, labels);
            }
            text.push('\n');
        }
        text
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

/// The series of `key`'s metric name in `map`.
fn by_name<'a, T>(map: &'a mut BTreeMap<String, Vec<T>>, key: &Key) -> &'a mut Vec<T> {
    map.entry(sanitize_metric_name(key.name())).or_default()
}

impl Figures {
    fn describe(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sanitize_metric_name(name.as_str()))
            .or_insert((help, unit));
    }
}

impl Recorder for Figures {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

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

    /// What it holds now: the cumulative count at each bound, then the count and the sum. The
    /// count is read after the buckets (and recorded after them), so it is never below them.
    fn read(&self) -> Reading {
        let mut below = 0;
        let at_or_below = (self.bounds.iter().zip(&self.counts))
            .map(|(bound, count)| {
                below += count.load(Ordering::Acquire);
                (*bound, below)
            })
            .collect();
        Reading {
            at_or_below,
            count: self.count.load(Ordering::Acquire),
            sum: f64::from_bits(self.sum.load(Ordering::Acquire)),
        }
    }

    /// `name_bucket` per bound and `+Inf`, `name_sum` and `name_count`, as the exporter writes them.
    fn push_series(&self, key: &Key, series: &mut Vec<Series>) {
        let reading = self.read();
        let bucket = |le: String, value: u64| {
            let mut bucket = Series::of(key, "_bucket", value as f64);
            bucket.labels.push(("le".to_owned(), le));
            bucket
        };
        for (bound, below) in &reading.at_or_below {
            series.push(bucket(bound.to_string(), *below));
        }
        series.push(bucket("+Inf".to_owned(), reading.count));
        series.push(Series::of(key, "_sum", reading.sum));
        series.push(Series::of(key, "_count", reading.count as f64));
    }

    /// The same lines in the Prometheus text format, as series `name` with `labels`.
    fn write(&self, text: &mut String, name: &str, labels: &LabelSet) {
        let reading = self.read();
        let bucket = Some("bucket");
        for (bound, below) in &reading.at_or_below {
            write_metric_line(text, name, bucket, labels, Some(("le", bound)), below, None);
        }
        let count = reading.count;
        write_metric_line(
            text,
            name,
            bucket,
            labels,
            Some(("le", "+Inf")),
            count,
            None,
        );
        write_metric_line::<&str, f64>(text, name, Some("sum"), labels, None, reading.sum, None);
        write_metric_line::<&str, u64>(text, name, Some("count"), labels, None, count, None);
    }
}

/// A histogram's figures at one moment.
struct Reading {
    /// Each bound with the samples at or below it.
    at_or_below: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
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

    #[test]
    fn the_text_says_what_the_numbers_say() {
        let figures = Figures::new();
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        figures.describe_counter(
            names::RATE_LIMITED.name.into(),
            None,
            "Refused \"calls\".".into(),
        );
        let limited = Key::from_parts(
            names::RATE_LIMITED.name,
            vec![metrics::Label::new("limit", "a \"quoted\" one")],
        );
        figures.register_counter(&limited, &metadata).increment(3);
        let publish = Key::from_parts(names::PUBLISH_SECONDS.name, vec![]);
        figures
            .register_histogram(&publish, &metadata)
            .record(0.0001);
        let text = figures.render();
        let name = names::RATE_LIMITED.name;
        assert!(
            text.contains(&format!(
                "# HELP {name} Refused \"calls\".\n# TYPE {name} counter\n{name}{{limit=\"a \\\"quoted\\\" one\"}} 3\n"
            )),
            "{text}"
        );
        let name = names::PUBLISH_SECONDS.name;
        for line in [
            format!("# TYPE {name} histogram"),
            format!("{name}_bucket{{le=\"0.00005\"}} 0"),
            format!("{name}_bucket{{le=\"0.0001\"}} 1"),
            format!("{name}_bucket{{le=\"+Inf\"}} 1"),
            format!("{name}_sum 0.0001"),
            format!("{name}_count 1"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
