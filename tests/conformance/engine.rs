//! What the suite needs of an engine beyond the [`Broker`] trait: making one from settings,
//! restarting it, and making rooms idle now rather than after their TTL.

use std::{future::Future, sync::Arc, time::Instant};

use grpc_chat::{
    broker::{Broker, memory::MemoryBroker},
    config::ServeConfig,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// An engine under test, started.
pub trait Engine: Sized + Send + Sync + 'static {
    /// Whether a room's log outlives its room going idle and the engine restarting (an engine
    /// with a store of its own); otherwise both start the room again in a new epoch.
    const DURABLE: bool;

    /// A started engine with `config`'s limits, over an empty store of its own.
    fn open(config: ServeConfig) -> impl Future<Output = Self> + Send;

    /// The engine, as front doors see it.
    fn broker(&self) -> Arc<dyn Broker>;

    /// Drops rooms nobody uses now, as their idle TTL eventually would.
    fn evict_idle(&self);

    /// Stops the engine (its feeds may end or stall) and starts it again, as a process restart
    /// would, on the same store.
    fn restart(&mut self) -> impl Future<Output = ()> + Send;

    /// Stops the engine for good.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Starts `broker` the way the server does.
fn started(broker: &dyn Broker) -> (TaskTracker, CancellationToken) {
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    broker.start(&tasks, stop.clone());
    (tasks, stop)
}

/// Stops what [`started`] started, waiting for its tasks.
async fn stopped(broker: &dyn Broker, (tasks, stop): (TaskTracker, CancellationToken)) {
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    broker.shutdown().await;
}

/// The embedded engine.
pub struct Memory {
    config: ServeConfig,
    broker: MemoryBroker,
    running: Option<(TaskTracker, CancellationToken)>,
}

impl Engine for Memory {
    const DURABLE: bool = false;

    async fn open(config: ServeConfig) -> Self {
        let broker = MemoryBroker::new(config.memory());
        let running = Some(started(&broker));
        Self {
            config,
            broker,
            running,
        }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(self.broker.clone())
    }

    fn evict_idle(&self) {
        self.broker
            .evict_idle_rooms(Instant::now() + self.config.room_idle_ttl);
    }

    async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            stopped(&self.broker, running).await;
        }
        // Memory is the store: a new process starts with none.
        self.broker = MemoryBroker::new(self.config.memory());
        self.running = Some(started(&self.broker));
    }

    async fn close(mut self) {
        if let Some(running) = self.running.take() {
            stopped(&self.broker, running).await;
        }
    }
}
