//! What `StreamMetrics` streams send: the registry rendered at most once per [`SHARED_FOR`]
//! however many streams follow it, each series encoded once as the `chat.Metric`
//! (with the instance label and the render's time) that every stream sends as shared bytes.
//!
//! Rendering the registry (about 400 series) and turning it into messages for every stream every
//! second let a thousand streams take a core and hundreds of megabytes; now a thousand streams
//! cost one render a second and, each, the copy of its series into its own response.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use super::Encoded;
use crate::{monitoring::Monitoring, proto::Metric};

/// How long one render serves every stream that asks: a stream at the shortest interval (a
/// second) still sees every batch rendered after its previous one, and there are at most four
/// renders a second however many streams follow.
pub(super) const SHARED_FOR: Duration = Duration::from_millis(250);

/// One render of the registry, each series encoded once.
pub struct Board {
    /// Series names and their encoded messages, sorted by name and labels.
    pub series: Vec<(String, Encoded)>,
}

/// The latest render, shared by every stream.
pub struct MetricsBoards {
    monitoring: Arc<Monitoring>,
    instance_id: Arc<str>,
    /// A `std` mutex, held while a render is made (no `.await` inside): streams that ask
    /// meanwhile wait for it and share it instead of rendering too.
    latest: Mutex<Option<(Instant, Arc<Board>)>>,
}

impl MetricsBoards {
    /// Renders of `monitoring`, labelled with `instance_id`.
    pub fn new(monitoring: Arc<Monitoring>, instance_id: &str) -> Self {
        Self {
            monitoring,
            instance_id: instance_id.into(),
            latest: Mutex::new(None),
        }
    }

    /// The latest render, made now when the last one is older than [`SHARED_FOR`].
    pub fn current(&self) -> Arc<Board> {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((made, board)) = &*latest
            && made.elapsed() < SHARED_FOR
        {
            return Arc::clone(board);
        }
        // Stamped before it is made: what it shows is at least this recent.
        let made = Instant::now();
        let board = Arc::new(self.render());
        *latest = Some((made, Arc::clone(&board)));
        board
    }

    fn render(&self) -> Board {
        let timestamp = Some(SystemTime::now().into());
        let series = self
            .monitoring
            .series()
            .into_iter()
            .map(|series| {
                let mut labels: HashMap<String, String> = series.labels.into_iter().collect();
                labels.insert("instance".to_owned(), self.instance_id.to_string());
                let message = Metric {
                    name: series.name,
                    value: series.value,
                    timestamp,
                    labels,
                };
                (message.name.clone(), Encoded::of(&message))
            })
            .collect();
        Board { series }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn streams_that_ask_within_a_moment_share_one_render() {
        let boards = MetricsBoards::new(Monitoring::new(), "here");
        let first = boards.current();
        tokio::time::advance(SHARED_FOR / 2).await;
        let second = boards.current();
        assert!(Arc::ptr_eq(&first, &second), "rendered once");
        assert!(!first.series.is_empty());
        tokio::time::advance(SHARED_FOR).await;
        assert!(!Arc::ptr_eq(&first, &boards.current()), "then again");
    }
}
