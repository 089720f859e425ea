//! A real Prometheus scraping a test server.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use super::{
    calls::within,
    http::{http_get, url_encode},
    process::{Reaped, free_addr, tool},
};

/// A Prometheus server on a free loopback port, killed on drop.
pub struct Prometheus {
    /// Taken (killed and reaped) before the files it uses are removed.
    child: Option<Reaped>,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Scrapes `target` every second.
    pub fn start(target: SocketAddr) -> Self {
        Self::start_with(|_| {
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: grpc-chat\n    static_configs:\n      - targets: [\"{target}\"]\n"
            )
        })
    }

    /// Runs with the configuration `config` makes for Prometheus' own address.
    pub fn start_with(config: impl FnOnce(SocketAddr) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "grpc-chat-prometheus-{}-{}",
            std::process::id(),
            free_addr().port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = free_addr();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config(addr)).unwrap();
        let config = config_file;
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child: Some(Reaped(child)),
            addr,
            dir,
        }
    }

    /// Waits until Prometheus answers `/-/ready`.
    pub async fn ready(&self) {
        within("Prometheus to start", async {
            loop {
                if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                    && http_get(self.addr, "/-/ready").await.0 == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }

    /// The result of an instant query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(HashMap<String, String>, f64)> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .await;
        if status != 200 {
            return Vec::new();
        }
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let labels = serde_json::from_value(series["metric"].clone()).unwrap();
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
