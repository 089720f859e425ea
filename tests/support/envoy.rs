//! The real Envoy with the compose stack's configuration (plain, or terminating TLS).

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use super::{
    calls::within,
    process::{Reaped, free_addr, tool},
};

/// The real Envoy running a config of `deploy/envoy/`, pointed at a local grpc-chat.
pub struct Envoy {
    /// Taken (killed and reaped) before the files it uses are removed.
    child: Option<Reaped>,
    pub addr: SocketAddr,
    config: std::path::PathBuf,
}

impl Envoy {
    /// The compose config with both replicas' hosts replaced by the test server's ports.
    pub fn start(grpc: SocketAddr, websocket: SocketAddr) -> Self {
        Self::start_config("envoy.yaml", 8080, grpc, websocket, &[])
    }

    /// The TLS variant of the compose config, serving `cert` and `key`.
    pub fn start_tls(
        grpc: SocketAddr,
        websocket: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        Self::start_config(
            "envoy-tls.yaml",
            8443,
            grpc,
            websocket,
            &[
                ("/etc/envoy/tls/tls.crt", cert),
                ("/etc/envoy/tls/tls.key", key),
            ],
        )
    }

    /// `deploy/envoy/NAME`, its public `port` and the replicas' hosts replaced by local ones,
    /// and the `files` replaced.
    fn start_config(
        name: &str,
        port: u16,
        grpc: SocketAddr,
        websocket: SocketAddr,
        files: &[(&str, &str)],
    ) -> Self {
        let addr = free_addr();
        let admin = free_addr();
        let mut config = std::fs::read_to_string(format!(
            "{}/deploy/envoy/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let public = format!("{{ address: 0.0.0.0, port_value: {port} }}");
        for (compose, local) in [
            (public.as_str(), addr),
            ("{ address: 0.0.0.0, port_value: 9901 }", admin),
            ("{ address: grpc-chat-1, port_value: 50051 }", grpc),
            ("{ address: grpc-chat-2, port_value: 50051 }", grpc),
            ("{ address: grpc-chat-1, port_value: 8080 }", websocket),
            ("{ address: grpc-chat-2, port_value: 8080 }", websocket),
        ] {
            config = config.replace(
                compose,
                &format!("{{ address: 127.0.0.1, port_value: {} }}", local.port()),
            );
        }
        for (compose, local) in files {
            config = config.replace(compose, local);
        }
        assert!(
            !config.contains("address: grpc-chat") && !config.contains("0.0.0.0"),
            "every address replaced"
        );
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "grpc-chat-envoy-{}-{}.yaml",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, config).unwrap();
        let child = Command::new(tool("envoy"))
            .arg("-c")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child: Some(Reaped(child)),
            addr,
            config: path,
        }
    }

    pub async fn ready(&self) {
        within("Envoy to listen", async {
            while tokio::net::TcpStream::connect(self.addr).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.child.take();
        let _ = std::fs::remove_file(&self.config);
    }
}
