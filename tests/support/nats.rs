//! A real `nats-server` with JetStream on a free loopback port, stopped by the test.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{PATIENCE, Reaped, tool};

/// A JetStream server with a store directory of its own.
pub struct NatsServer {
    child: Option<Reaped>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    store: PathBuf,
}

impl NatsServer {
    /// Starts one on a free port with an empty store.
    pub fn start() -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let store = std::env::temp_dir().join(format!(
            "grpc-chat-nats-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&store);
        let (child, url) = Self::run(&store, "-1");
        Self {
            child: Some(child),
            url,
            store,
        }
    }

    /// Kills it (as a crash would: no goodbye).
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.url.rsplit(':').next().expect("a port").to_owned();
        let (child, url) = Self::run(&self.store, &port);
        assert_eq!(url, self.url);
        self.child = Some(child);
    }

    /// Runs the server on `port` (`-1`: a free one) over `store`; its URL once it listens.
    fn run(store: &std::path::Path, port: &str) -> (Reaped, String) {
        Self::run_with(store, port, &[])
    }

    /// [`NatsServer::run`] with more arguments.
    fn run_with(store: &std::path::Path, port: &str, extra: &[String]) -> (Reaped, String) {
        let mut child = Reaped(
            Command::new(tool("nats-server"))
                .args(["-js", "-a", "127.0.0.1", "-p", port])
                .args(extra)
                .arg("-sd")
                .arg(store)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (lines, log) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.0.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        const LISTENING: &str = "Listening for client connections on ";
        let url = loop {
            let line = log
                .recv_timeout(PATIENCE)
                .expect("nats-server did not report its port");
            if let Some((_, addr)) = line.split_once(LISTENING) {
                break format!("nats://{}", addr.trim());
            }
        };
        // The rest of the log is drained by the thread (kept so a full pipe never blocks it).
        (child, url)
    }

    /// One server shared by whoever holds it; started by the first, stopped after the last.
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<NatsServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *shared = Arc::downgrade(&server);
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A three-node JetStream cluster on loopback.
pub struct NatsCluster {
    /// The nodes, named `n1`, `n2`, `n3` in NATS.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes that route to each other.
    pub fn start() -> Self {
        let routes: Vec<u16> = (0..3).map(|_| super::free_addr().port()).collect();
        let route_list = routes
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let mut node = NatsServer {
                    child: None,
                    url: String::new(),
                    store: std::env::temp_dir().join(format!(
                        "grpc-chat-nats-cluster-{}-{}-n{}",
                        std::process::id(),
                        routes[0],
                        i + 1
                    )),
                };
                let _ = std::fs::remove_dir_all(&node.store);
                let extra = [
                    "-n".to_owned(),
                    format!("n{}", i + 1),
                    "--cluster_name".to_owned(),
                    "chat".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".to_owned(),
                    route_list.clone(),
                ];
                let (child, url) = NatsServer::run_with(&node.store, "-1", &extra);
                node.child = Some(child);
                node.url = url;
                node
            })
            .collect();
        Self { nodes }
    }

    /// Every node's URL, comma separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
