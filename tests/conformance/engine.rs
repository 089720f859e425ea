//! What the suite needs of an engine beyond the [`Broker`] trait: making one from settings,
//! restarting it, and making rooms idle now rather than after their TTL.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use crate::helpers::{NatsServer, PATIENCE};

use grpc_chat::{
    broker::{
        Broker,
        memory::MemoryBroker,
        nats::{NatsBroker, config::Storage},
    },
    config::{EngineKind, ServeConfig},
};

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

    /// The payloads of every message its store holds, when it has a store apart from its logs.
    fn stored_payloads(&self) -> impl Future<Output = Option<Vec<Vec<u8>>>> + Send;
}

/// Starts `broker` the way the server does.
fn started(broker: &dyn Broker) -> Running {
    broker.start();
    Running
}

/// A started engine, until [`stopped`].
struct Running;

/// Stops what [`started`] started, waiting for its tasks.
async fn stopped(broker: &dyn Broker, _: Running) {
    broker.shutdown().await;
}

/// The embedded engine.
pub struct Memory {
    config: ServeConfig,
    broker: MemoryBroker,
    running: Option<Running>,
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

    async fn stored_payloads(&self) -> Option<Vec<Vec<u8>>> {
        None
    }
}

/// The NATS JetStream engine, on a real `nats-server` shared by the engines open at the time;
/// each engine has a stream, subjects and buckets of its own.
pub struct Nats {
    server: Arc<NatsServer>,
    config: ServeConfig,
    broker: NatsBroker,
    running: Option<Running>,
    /// Whether closing it deletes the store (the first replica's job).
    owner: bool,
}

impl Nats {
    async fn connected(config: &ServeConfig) -> (NatsBroker, Running) {
        let broker = NatsBroker::new(config.nats());
        let running = started(&broker);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !broker.is_connected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the NATS engine did not connect"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (broker, running)
    }
}

impl Nats {
    /// Another replica on the same store: a second process sharing the rooms.
    pub async fn replica(&self) -> Self {
        let (broker, running) = Self::connected(&self.config).await;
        Self {
            server: Arc::clone(&self.server),
            config: self.config.clone(),
            broker,
            running: Some(running),
            owner: false,
        }
    }
}

impl Engine for Nats {
    const DURABLE: bool = true;

    async fn open(mut config: ServeConfig) -> Self {
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let server = NatsServer::shared();
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        config.engine = EngineKind::Nats;
        config.nats.nats_url = vec![server.url.clone()];
        config.nats.nats_storage = Storage::Memory;
        config.nats.nats_stream = format!("CHAT{n}");
        config.nats.nats_subject_prefix = format!("chat{n}");
        config.nats.nats_rooms_bucket = format!("rooms{n}");
        config.nats.nats_presence_bucket = format!("presence{n}");
        config.nats.nats_replicas_bucket = format!("replicas{n}");
        let (broker, running) = Self::connected(&config).await;
        Self {
            server,
            config,
            broker,
            running: Some(running),
            owner: true,
        }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(self.broker.clone())
    }

    fn evict_idle(&self) {
        self.broker
            .close_idle_rooms(Instant::now() + self.config.room_idle_ttl);
    }

    async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            stopped(&self.broker, running).await;
        }
        // NATS is the store: a new process finds it as the last one left it.
        let (broker, running) = Self::connected(&self.config).await;
        self.broker = broker;
        self.running = Some(running);
    }

    async fn close(mut self) {
        if let Some(running) = self.running.take() {
            stopped(&self.broker, running).await;
        }
        if !self.owner {
            return;
        }
        // JetStream reserves each memory stream's byte cap: give it back.
        let nats = &self.config.nats;
        let client = async_nats::connect(self.server.url.as_str()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        jetstream.delete_stream(&nats.nats_stream).await.unwrap();
        for bucket in [
            &nats.nats_rooms_bucket,
            &nats.nats_presence_bucket,
            &nats.nats_replicas_bucket,
        ] {
            jetstream.delete_key_value(bucket).await.unwrap();
        }
    }

    async fn stored_payloads(&self) -> Option<Vec<Vec<u8>>> {
        let client = async_nats::connect(self.server.url.as_str()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream
            .get_stream(&self.config.nats.nats_stream)
            .await
            .unwrap();
        let state = &stream.info().await.unwrap().state;
        let (first, last) = (state.first_sequence, state.last_sequence);
        let mut payloads = Vec::new();
        for sequence in first..=last {
            // A sequence erased is an error to ask for: it holds nothing.
            if let Ok(message) = stream.get_raw_message(sequence).await {
                payloads.push(message.payload.to_vec());
            }
        }
        Some(payloads)
    }
}
