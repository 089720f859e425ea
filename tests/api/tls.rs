//! TLS on the gRPC and WebSocket ports with real clients: grpcurl with -cacert, the CLI, a
//! gRPC-Web call (curl), a wss:// WebSocket (websocat); mTLS refuses a client without a
//! certificate; a rotated certificate is served to new connections without a restart. The
//! clients are processes the test waits for, so the server runs on a runtime of its own threads.

use std::process::Command;

use grpc_chat::config::ServeConfig;

use crate::helpers::*;

/// A server serving `certs`' server certificate, verifying clients when `mtls`.
async fn tls_app(certs: &Certs, mtls: bool) -> TestApp {
    spawn_app_with(ServeConfig {
        tls: certs.options(mtls),
        ..ServeConfig::default()
    })
    .await
}

/// `grpc-chat send` to `addr` over TLS with the options `tls`, as `user`; (exit code, stdout,
/// stderr).
fn cli_send(addr: &str, tls: &[&str], user: &str, text: &str) -> (i32, String, String) {
    let url = format!("https://{addr}");
    let send = ["send", "--addr", &url, "-r", "tls", "-u", user, text];
    cli(&[&send[..], tls].concat())
}

/// Runs grpcurl with `args`, giving up connecting after 2 s; (success, stdout and stderr).
fn grpcurl(args: &[&str]) -> (bool, String) {
    let output = Command::new(tool("grpcurl"))
        .args(["-connect-timeout", "2"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

const SEND: &str = r#"{"room": "tls", "user": "alice", "content": "over TLS"}"#;

/// SendMessage to `addr` by grpcurl with the options `tls` (which CA, which client
/// certificate).
fn grpcurl_send(addr: &str, tls: &[&str]) -> (bool, String) {
    let call = ["-d", SEND, addr, "chat.ChatService/SendMessage"];
    grpcurl(&[tls, &call[..]].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_with_grpcurl_the_cli_grpc_web_and_wss() {
    let certs = Certs::generate("grpc-chat test CA");
    let app = tls_app(&certs, false).await;
    let addr = app.addr.to_string();

    let (ok, out) = grpcurl_send(&addr, &["-cacert", path(&certs.ca)]);
    assert!(ok, "{out}");
    assert!(out.contains("\"offset\": \"1\""), "{out}");
    // Not trusting the CA, grpcurl refuses the server; speaking plain text, it gets nowhere.
    let (ok, out) = grpcurl_send(&addr, &[]);
    assert!(!ok && out.contains("certificate"), "{out}");
    let (ok, _) = grpcurl_send(&addr, &["-plaintext"]);
    assert!(!ok);
    // Each failed attempt (grpcurl may retry) is counted.
    let failed = app
        .metric_labelled(
            "grpc_chat_connections_closed_total",
            &[("listener", "grpc"), ("reason", "tls_handshake")],
        )
        .await;
    assert!(failed >= 2.0, "{failed}");

    let (code, out, stderr) =
        cli_send(&addr, &["--tls-ca", path(&certs.ca)], "bob", "from the CLI");
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("offset=2"), "{out}");

    // gRPC-Web over HTTPS/1.1, as a browser sends it, and wss://.
    let response = curl_grpc_web_send(
        &format!("https://{addr}"),
        &certs.ca,
        &send_request("tls", "carol", "from the browser"),
    );
    assert!(response.contains("grpc-status:0"), "{response:?}");
    let frame = r#"{"Author":"dave","Content":"over wss"}"#;
    let url = format!("wss://127.0.0.1:{}/ws?roomCode=tls", app.ws_addr.port());
    assert_eq!(websocat_wss_echo(&url, &certs.ca, frame), frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_client_without_a_certificate() {
    let certs = Certs::generate("grpc-chat mTLS CA");
    let app = tls_app(&certs, true).await;
    let addr = app.addr.to_string();
    let (ok, out) = grpcurl_send(&addr, &["-cacert", path(&certs.ca)]);
    assert!(!ok, "{out}");
    let (ok, out) = grpcurl_send(
        &addr,
        &[
            "-cacert",
            path(&certs.ca),
            "-cert",
            path(&certs.client_cert),
            "-key",
            path(&certs.client_key),
        ],
    );
    assert!(ok, "{out}");
    let (code, _, stderr) = cli_send(
        &addr,
        &[
            "--tls-ca",
            path(&certs.ca),
            "--tls-cert",
            path(&certs.client_cert),
            "--tls-key",
            path(&certs.client_key),
        ],
        "alice",
        "with a certificate",
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = cli_send(
        &addr,
        &["--tls-ca", path(&certs.ca)],
        "alice",
        "without one",
    );
    assert_ne!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let first = Certs::generate("first CA");
    let second = Certs::generate("second CA");
    let app = tls_app(&first, false).await;
    let addr = app.addr.to_string();
    let call = |ca: &Certs| grpcurl_send(&addr, &["-cacert", path(&ca.ca)]);
    assert!(call(&first).0);
    assert!(!call(&second).0);

    replace_file(&second.server_key, &first.server_key);
    replace_file(&second.server_cert, &first.server_cert);
    app.metric_reaches("grpc_chat_tls_reloads_total", &[("result", "ok")], 1.0)
        .await;
    // Both files may have been seen apart (a key that did not fit the certificate yet is a
    // failed reload that keeps the old pair), so wait for the new pair to be served.
    within("the rotated certificate", async {
        while !call(&second).0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!call(&first).0, "the old CA no longer verifies the server");
}
