//! The Go client of the original `chat.ChatService` contract, built from its own copy of that proto
//! (tests/go-client/), runs its five examples against the server. Only its dial options differ
//! from the original: the grpc-go packaged here predates `credentials/insecure`.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::helpers::*;

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds the client in a private GOPATH (offline, GOPATH mode) with `addr` as its target.
fn build_client(work: &Path, addr: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-client");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("grpc-streaming/client")).unwrap();
    run(Command::new(tool("protoc"))
        .arg(format!("-I{}", fixture.join("proto").display()))
        .arg("-I/usr/include")
        .arg(format!("--go_out={}", src.display()))
        .arg(format!("--go-grpc_out={}", src.display()))
        .arg("chat.proto"));
    let client = std::fs::read_to_string(fixture.join("client/main.go"))
        .unwrap()
        .replace("localhost:50051", addr);
    std::fs::write(src.join("grpc-streaming/client/main.go"), client).unwrap();
    let binary = work.join("chat-client");
    run(Command::new(tool("go"))
        .args(["build", "-o"])
        .arg(&binary)
        .arg("grpc-streaming/client")
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPATH", format!("{}:/usr/share/gocode", work.display()))
        .env("GOCACHE", work.join("cache")));
    binary
}

#[test]
fn the_original_go_client_runs_all_five_examples() {
    runs_all_five_examples(ServerProcess::start(&[]), "memory");
}

#[test]
fn the_original_go_client_runs_all_five_examples_against_a_nats_replica() {
    let nats = NatsServer::start();
    let server = ServerProcess::start(&["--engine", "nats", "--nats-url", &nats.url]);
    runs_all_five_examples(server, "nats");
}

/// Builds the client against `server` and checks what its five examples print.
fn runs_all_five_examples(server: ServerProcess, engine: &str) {
    let work = std::env::temp_dir().join(format!(
        "grpc-chat-go-client-{}-{engine}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let binary = build_client(&work, &server.addr.to_string());

    let mut client = Reaped(
        Command::new(binary)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel();
    let stderr = BufReader::new(client.0.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The bidirectional example sends ten messages three seconds apart, then closes its side.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while !log
        .iter()
        .any(|line: &String| line.contains("Server closed bidirectional stream"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("client did not finish; its log:\n{}", log.join("\n")),
        }
    }
    drop(client);
    let _ = std::fs::remove_dir_all(&work);
    let log = log.join("\n");

    for expected in [
        // 1. unary
        "Unary response: ID=",
        // 2. server streaming: the welcome, then what the other examples publish to "general"
        // (the client starts this goroutine concurrently with the upload, so the first batch
        // message may be published before it has subscribed; the last one never is)
        "Subscribed to room 'general'",
        "[general] System: Welcome to room general, Alice!",
        "[general] Alice: Alice joined",
        "[general] Bob: Fifth batch message",
        "[general] Charlie: Bidirectional message #1",
        // 3. client streaming
        "Upload complete: 5 messages processed, success=true",
        // 4. bidirectional: own messages come back as acks; the session ends after the last one
        "[Bidirectional] Charlie: Bidirectional message #1",
        "Sent bidirectional message #10",
        "[Bidirectional] Charlie: Bidirectional message #10",
        // 5. metrics: the server's real series, sorted by name, labelled with the instance
        "Metric: grpc_chat_connections = 1.00 (labels: map[instance:",
        "Receiving metrics stream...",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    assert!(!log.contains("error"), "errors in:\n{log}");
    let metrics = log.lines().filter(|line| line.contains("Metric: ")).count();
    assert_eq!(metrics, 10, "the example reads ten metrics:\n{log}");
}
