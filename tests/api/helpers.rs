//! Starting the real server on port 0 and talking to it.

use std::{
    collections::HashMap,
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use grpc_chat::{
    config::ServeConfig,
    proto::{
        Message, MessageType, MetricsRequest, SendMessageRequest, SendMessageResponse,
        SubscribeRequest, chat_service_client::ChatServiceClient,
    },
    server::{self, Listeners},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, Streaming, transport::Channel};

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server running in this process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub client: ChatServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts the server with the documented defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServeConfig::default()).await
}

/// Starts the server with `config` (its `listen` is ignored: the app binds 127.0.0.1:0).
pub async fn spawn_app_with(config: ServeConfig) -> TestApp {
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        websocket: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listeners.grpc.local_addr().unwrap();
    let ws_addr = listeners.websocket.local_addr().unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listeners, config, async {
        let _ = stopped.await;
    }));
    let client = connect(addr).await;
    TestApp {
        addr,
        ws_addr,
        admin_addr,
        client,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A client on a new connection to `addr`.
pub async fn connect(addr: SocketAddr) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(channel(addr).await)
}

/// A client whose connection has HTTP/2's minimal 64 KiB receive windows (the client library
/// default is megabytes), so that a test can make it fall behind with little data.
pub async fn connect_small_window(addr: SocketAddr) -> ChatServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    ChatServiceClient::new(channel)
}

/// A new HTTP/2 connection to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl TestApp {
    /// A client on its own connection.
    pub async fn new_client(&self) -> ChatServiceClient<Channel> {
        connect(self.addr).await
    }

    /// Sends `content` to `room` as `user`.
    pub async fn send(&self, room: &str, user: &str, content: &str) -> SendMessageResponse {
        self.client
            .clone()
            .send_message(send_request(room, user, content))
            .await
            .unwrap()
            .into_inner()
    }

    /// Subscribes to `room` live and consumes the welcome.
    pub async fn subscribe(&self, room: &str, user: &str) -> Streaming<Message> {
        self.subscribe_with(SubscribeRequest {
            user: user.into(),
            ..live(room)
        })
        .await
    }

    /// Subscribes with `request` and consumes the welcome.
    pub async fn subscribe_with(&self, request: SubscribeRequest) -> Streaming<Message> {
        subscribe_on(&mut self.client.clone(), request).await
    }

    /// The current value of the first metric named `name`, from a new StreamMetrics call.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, |_| true).await
    }

    /// The current value of the metric `name` with the label `key=value`.
    pub async fn metric_with(&self, name: &str, (key, value): (&str, &str)) -> f64 {
        self.metric_where(name, |labels| labels.get(key).is_some_and(|v| v == value))
            .await
    }

    async fn metric_where(
        &self,
        name: &str,
        matches: impl Fn(&HashMap<String, String>) -> bool,
    ) -> f64 {
        let mut metrics = self
            .client
            .clone()
            .stream_metrics(MetricsRequest::default())
            .await
            .unwrap()
            .into_inner();
        loop {
            let metric = within("metrics", metrics.message()).await.unwrap().unwrap();
            if metric.name == name && matches(&metric.labels) {
                return metric.value;
            }
        }
    }

    /// Starts the drain and waits for the server to finish; returns how long that took.
    pub async fn shutdown(mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        let server = self.server.take().unwrap();
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("server did not stop in time")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A live (no replay) subscription to `room`.
pub fn live(room: &str) -> SubscribeRequest {
    SubscribeRequest {
        room: room.into(),
        ..SubscribeRequest::default()
    }
}

/// Subscribes with `request` on `client` and consumes the welcome.
pub async fn subscribe_on(
    client: &mut ChatServiceClient<Channel>,
    request: SubscribeRequest,
) -> Streaming<Message> {
    let mut stream = client
        .subscribe_messages(request)
        .await
        .unwrap()
        .into_inner();
    let welcome = next(&mut stream).await;
    assert_eq!(welcome.r#type, MessageType::System as i32, "{welcome:?}");
    assert!(
        welcome.content.starts_with("Welcome to room"),
        "{welcome:?}"
    );
    stream
}

/// Publishes 100 messages of 4000 bytes to `room`: far more than a 64 KiB HTTP/2 window holds.
pub async fn flood(client: &mut ChatServiceClient<Channel>, room: &str) {
    let content = "x".repeat(4000);
    for _ in 0..100 {
        client
            .send_message(send_request(room, "Bob", &content))
            .await
            .unwrap();
    }
}

/// A JOIN or LEAVE for a Chat stream.
pub fn presence(kind: MessageType, room: &str, user: &str) -> Message {
    Message {
        r#type: kind as i32,
        ..chat_message(room, user, "")
    }
}

/// A `SendMessageRequest`.
pub fn send_request(room: &str, user: &str, content: &str) -> SendMessageRequest {
    SendMessageRequest {
        user: user.into(),
        content: content.into(),
        room: room.into(),
    }
}

/// A client-side chat `Message`.
pub fn chat_message(room: &str, user: &str, content: &str) -> Message {
    Message {
        room: room.into(),
        user: user.into(),
        content: content.into(),
        ..Message::default()
    }
}

/// `future`, or a test failure after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next message of `stream`, which must come.
pub async fn next(stream: &mut Streaming<Message>) -> Message {
    within("the next message", stream.message())
        .await
        .expect("stream failed")
        .expect("stream ended")
}

/// The next `count` messages that are part of the room log (offset > 0).
pub async fn next_events(stream: &mut Streaming<Message>, count: usize) -> Vec<Message> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = next(stream).await;
        if message.offset > 0 {
            events.push(message);
        }
    }
    events
}

/// The status `stream` ends with, skipping messages before it.
pub async fn final_status(stream: &mut Streaming<Message>) -> Status {
    within("the stream's status", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended with OK"),
                Err(status) => return status,
            }
        }
    })
    .await
}

/// Asserts `status` has `code` and a message containing each of `phrases`.
pub fn assert_status(status: &Status, code: Code, phrases: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for phrase in phrases {
        assert!(
            status.message().contains(phrase),
            "status message {:?} should contain {phrase:?}",
            status.message()
        );
    }
}

/// The status of a call that must fail.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    result.expect_err("call should have failed")
}

/// An external tool, from PATH or the project's tool directory; missing is a failure.
pub fn tool(name: &str) -> PathBuf {
    let project_tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(project_tools)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `make test`, which installs the test tools")
        })
}

/// A child process that is killed and reaped when this is dropped, even by a failing test.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `grpc-chat` binary running as a child process.
pub struct ServerProcess {
    pub child: Reaped,
    pub addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Log lines after the "listening" one.
    pub log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Runs `grpc-chat serve` on free loopback ports with `args` and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--ws-listen",
                    "127.0.0.1:0",
                ])
                .args(args)
                .env("RUST_LOG", "info")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (lines, log) = mpsc::channel();
        let stderr = BufReader::new(child.0.stderr.take().unwrap());
        // Keeps draining after the address is known, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (addr, ws_addr, admin_addr) = loop {
            let line = log
                .recv_timeout(PATIENCE)
                .expect("server did not report its address");
            if line.contains("listening") {
                break (
                    log_field(&line, "addr"),
                    log_field(&line, "ws_addr"),
                    log_field(&line, "admin_addr"),
                );
            }
        };
        Self {
            child,
            addr,
            ws_addr,
            admin_addr,
            log,
        }
    }

    /// `http://ADDR` of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The address logged as `key` in a text (`key=value`) or JSON log line.
fn log_field(line: &str, key: &str) -> SocketAddr {
    let value = if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        json["fields"][key].as_str().unwrap().to_owned()
    } else {
        let start = line.find(&format!(" {key}=")).unwrap() + key.len() + 2;
        line[start..].split_whitespace().next().unwrap().to_owned()
    };
    value.parse().unwrap()
}

/// `GET path` over HTTP/1.1; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("an HTTP response", stream.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Runs the `grpc-chat` binary with `args` and returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_grpc-chat"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A Prometheus server on a free loopback port, killed on drop.
pub struct Prometheus {
    child: Child,
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
        Self { child, addr, dir }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The real Envoy running `deploy/envoy/envoy.yaml`, pointed at a local grpc-chat.
pub struct Envoy {
    child: Child,
    pub addr: SocketAddr,
    config: std::path::PathBuf,
}

impl Envoy {
    /// The compose config with the `grpc-chat` host replaced by the test server's ports.
    pub fn start(grpc: SocketAddr, websocket: SocketAddr) -> Self {
        let addr = free_addr();
        let admin = free_addr();
        let mut config = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/envoy/envoy.yaml"
        ))
        .unwrap();
        for (compose, local) in [
            ("{ address: 0.0.0.0, port_value: 8080 }", addr),
            ("{ address: 0.0.0.0, port_value: 9901 }", admin),
            ("{ address: grpc-chat, port_value: 50051 }", grpc),
            ("{ address: grpc-chat, port_value: 8080 }", websocket),
        ] {
            config = config.replace(
                compose,
                &format!("{{ address: 127.0.0.1, port_value: {} }}", local.port()),
            );
        }
        assert!(
            !config.contains("grpc-chat,") && !config.contains("0.0.0.0"),
            "every address replaced"
        );
        let path =
            std::env::temp_dir().join(format!("grpc-chat-envoy-{}.yaml", std::process::id()));
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
            child,
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A `chat.ChatService` client speaking gRPC-Web over HTTP/1.1, as browsers do.
pub type WebClient = ChatServiceClient<
    tonic_web::GrpcWebClientService<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic_web::GrpcWebCall<tonic::body::Body>,
        >,
    >,
>;

/// A gRPC-Web client of the server (or proxy) at `addr`.
pub fn web_client(addr: SocketAddr) -> WebClient {
    let http1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let service = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    ChatServiceClient::with_origin(service, format!("http://{addr}").parse().unwrap())
}
