//! Metrics: one registry per server, rendered as text by `/metrics` and read as numbers by
//! `StreamMetrics` ([`figures`]).
//!
//! Each server builds its own recorder instead of installing a global one, so several servers
//! (in tests, several per process) never mix their figures, and the hot paths hold pre-registered
//! handles instead of looking metrics up by name.

mod chat;
mod connections;
mod figures;
pub(crate) mod names;
mod rpc;

use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};

pub use chat::{ChatMetrics, FrontDoor, OpenSubscription};
pub use connections::{ClosedBy, ListenerMetrics, OpenConnection, RefusedBy};
pub use figures::Series;
pub use rpc::RpcLayer;

use figures::Figures;
use names::{Def, Kind};

/// Updates gauges from their source just before a scrape.
type Collector = Box<dyn Fn() + Send + Sync>;

/// The registry of one server; cheap to share behind an `Arc`.
pub struct Monitoring {
    recorder: Figures,
    process: metrics_process::Collector,
    collectors: Mutex<Vec<Collector>>,
}

impl Monitoring {
    /// A registry with every metric of [`names::ALL`] described and histogram buckets set.
    pub fn new() -> Arc<Self> {
        let recorder = Figures::new();
        for def in names::ALL {
            let (name, unit, help) = (def.name.into(), Some(def.unit), def.help.into());
            match def.kind {
                Kind::Counter => recorder.describe_counter(name, unit, help),
                Kind::Gauge => recorder.describe_gauge(name, unit, help),
                Kind::Histogram => recorder.describe_histogram(name, unit, help),
            }
        }
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        Arc::new(Self {
            recorder,
            process,
            collectors: Mutex::new(Vec::new()),
        })
    }

    fn key(def: Def, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(name, value)| Label::new(*name, value.to_string()))
            .collect();
        Key::from_parts(def.name, labels)
    }

    /// The counter `def` with `labels`.
    pub fn counter(&self, def: Def, labels: &[(&'static str, &str)]) -> Counter {
        debug_assert_eq!(def.kind, Kind::Counter);
        self.recorder
            .register_counter(&Self::key(def, labels), &metadata())
    }

    /// The gauge `def` with `labels`.
    pub fn gauge(&self, def: Def, labels: &[(&'static str, &str)]) -> Gauge {
        debug_assert_eq!(def.kind, Kind::Gauge);
        self.recorder
            .register_gauge(&Self::key(def, labels), &metadata())
    }

    /// The histogram `def` with `labels`.
    pub fn histogram(&self, def: Def, labels: &[(&'static str, &str)]) -> Histogram {
        debug_assert_eq!(def.kind, Kind::Histogram);
        self.recorder
            .register_histogram(&Self::key(def, labels), &metadata())
    }

    /// Runs `collector` before every scrape, to set gauges whose source is elsewhere.
    pub fn add_collector(&self, collector: impl Fn() + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::new(collector));
    }

    /// The whole registry in the Prometheus text format, gauges refreshed first.
    pub fn render(&self) -> String {
        self.collect();
        self.recorder.render()
    }

    /// Every series of [`Monitoring::render`] as numbers, sorted by name and labels.
    pub fn series(&self) -> Vec<Series> {
        self.collect();
        let mut series = self.recorder.series();
        series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        series
    }

    /// Refreshes the gauges whose source is elsewhere.
    fn collect(&self) {
        for collect in self
            .collectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            collect();
        }
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}
