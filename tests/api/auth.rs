//! Authentication and permissions on every front door: a matrix of bad and misused tokens, each
//! refused with its documented status on gRPC, gRPC-Web, Chitty-Chat and WebSockets; the user
//! name comes from the token; valid tokens work on every door.

use futures_util::{SinkExt, StreamExt};
use grpc_chat::{
    config::ServeConfig,
    proto::{MessageType, SubscribeRequest},
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message as Frame, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};
use tonic::Code;

use crate::helpers::*;

/// What `GetRoom` says of the matrix's room, asked with `token`.
async fn room_state(app: &TestApp, token: &str) -> grpc_chat::proto::RoomState {
    app.new_client()
        .await
        .get_room(with_token(
            grpc_chat::proto::GetRoomRequest { room: ROOM.into() },
            Some(token),
        ))
        .await
        .unwrap()
        .into_inner()
}

/// A server trusting `keys`.
async fn secured_app(keys: &TokenKeys) -> TestApp {
    spawn_app_with(ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    })
    .await
}

#[tokio::test]
async fn valid_tokens_are_accepted_on_every_door_under_the_token_s_user() {
    let keys = TokenKeys::generate();
    let app = secured_app(&keys).await;
    let rsa = keys.rsa_token(claims("alice", &["secure:all"], json!({})));
    let jwks = keys.jwks_token(claims("bob", &["secure:all"], json!({})));
    for door in DOORS {
        attempt(&app, door, Some(&rsa), "alice").await.unwrap();
        attempt(&app, door, Some(&jwks), "bob").await.unwrap();
    }
    // An empty user field is filled from the token.
    let sent = app
        .new_client()
        .await
        .send_message(with_token(send_request(ROOM, "", "who am i"), Some(&rsa)))
        .await
        .unwrap()
        .into_inner();
    let mut replay = app
        .new_client()
        .await
        .subscribe_messages(with_token(
            SubscribeRequest {
                from_offset: sent.offset,
                ..live(ROOM)
            },
            Some(&rsa),
        ))
        .await
        .unwrap()
        .into_inner();
    let message = loop {
        let message = next(&mut replay).await;
        if message.content == "who am i" {
            break message;
        }
    };
    assert_eq!(message.user, "alice");
}

#[tokio::test]
async fn no_unauthorised_call_succeeds_on_any_door() {
    let keys = TokenKeys::generate();
    let app = secured_app(&keys).await;
    let good = claims("alice", &["secure:all"], json!({}));
    // One character of the signature changed (not the last, whose low bits are padding).
    let mut tampered = keys.rsa_token(good.clone()).into_bytes();
    let changed = tampered.len() - 10;
    tampered[changed] = if tampered[changed] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    let unknown_kid = ec_token(&keys.ec_private, "nobody", good.clone());
    let unauthenticated = |phrase: &'static str| (Code::Unauthenticated, phrase);
    let denied = |phrase: &'static str| (Code::PermissionDenied, phrase);
    // (case, token, user field, expected code and a phrase of the reason)
    type Case<'a> = (&'a str, Option<String>, &'a str, (Code, &'a str));
    let cases: Vec<Case> = vec![
        ("no token", None, "alice", unauthenticated("no token")),
        (
            "malformed token",
            Some("not-a-jwt".into()),
            "alice",
            unauthenticated("malformed token"),
        ),
        (
            "bad signature",
            Some(tampered),
            "alice",
            unauthenticated("bad signature"),
        ),
        (
            "alg none",
            Some(unsigned(&good)),
            "alice",
            unauthenticated("alg \"none\""),
        ),
        (
            "HMAC keyed with the RSA public key",
            Some(keyed_with_public_key(&keys.rsa_public, good.clone())),
            "alice",
            unauthenticated("algorithm HS256 is not accepted"),
        ),
        (
            "expired",
            Some(keys.rsa_token(claims(
                "alice",
                &["secure:all"],
                json!({"iat": at(-7200), "exp": at(-3600)}),
            ))),
            "alice",
            unauthenticated("token expired"),
        ),
        (
            "not yet valid",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"nbf": at(3600)})))),
            "alice",
            unauthenticated("not valid yet"),
        ),
        (
            "wrong audience",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"aud": "other"})))),
            "alice",
            unauthenticated("wrong audience"),
        ),
        (
            "wrong issuer",
            Some(keys.rsa_token(claims(
                "alice",
                &["secure:all"],
                json!({"iss": "https://other"}),
            ))),
            "alice",
            unauthenticated("wrong issuer"),
        ),
        (
            "no expiry",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"exp": null})))),
            "alice",
            unauthenticated("exp"),
        ),
        (
            "issued in the future",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"iat": at(3600)})))),
            "alice",
            unauthenticated("issued in the future"),
        ),
        (
            "unknown kid",
            Some(unknown_kid),
            "alice",
            unauthenticated("unknown key id"),
        ),
        (
            "token for another room",
            Some(keys.rsa_token(claims("alice", &["other:all"], json!({})))),
            "alice",
            denied("user alice may not"),
        ),
        (
            "spoofed user field",
            Some(keys.rsa_token(good.clone())),
            "mallory",
            denied("the token is for user \"alice\""),
        ),
        (
            "reserved name as the token's subject",
            Some(keys.rsa_token(claims("System", &["secure:all"], json!({})))),
            "System",
            denied("\"System\" is reserved"),
        ),
        (
            "reserved name in the user field",
            Some(keys.rsa_token(good.clone())),
            "SERVER",
            (Code::InvalidArgument, "\"SERVER\" is reserved"),
        ),
    ];
    let mut attempts = 0;
    let mut succeeded = Vec::new();
    for (case, token, user, (code, phrase)) in &cases {
        for door in DOORS {
            attempts += 1;
            match attempt(&app, door, token.as_deref(), user).await {
                Ok(()) => succeeded.push(format!("{case} on {door:?}")),
                Err(Refused::Status(got, message)) => {
                    assert_eq!(
                        (got, case, door as u8),
                        (*code, case, door as u8),
                        "{message}"
                    );
                    assert!(message.contains(phrase), "{case} on {door:?}: {message:?}");
                }
                Err(Refused::Closed(got, reason)) => {
                    assert_eq!(got, CloseCode::Policy, "{case}: {reason}");
                    let phrase = if *case == "no token" {
                        "no token: the first frame must be"
                    } else {
                        phrase
                    };
                    assert!(reason.contains(phrase), "{case} on WebSocket: {reason:?}");
                }
            }
        }
    }
    println!(
        "{} of {attempts} unauthorised calls succeeded ({} cases on {} doors)",
        succeeded.len(),
        cases.len(),
        DOORS.len()
    );
    assert!(succeeded.is_empty(), "succeeded: {succeeded:?}");
    assert_eq!(attempts, 80);
    // No message reached the room (alice's sockets that were closed for their frames did come
    // and go), and the refusals were counted.
    let alice = keys.rsa_token(good);
    let room = room_state(&app, &alice).await;
    if room.last_offset > 0 {
        let mut replay = app
            .new_client()
            .await
            .subscribe_messages(with_token(
                SubscribeRequest {
                    from_offset: 1,
                    ..live(ROOM)
                },
                Some(&alice),
            ))
            .await
            .unwrap()
            .into_inner();
        let events = next_events(&mut replay, room.last_offset as usize).await;
        let chat: Vec<_> = events
            .iter()
            .filter(|event| event.r#type == MessageType::Chat as i32)
            .collect();
        assert!(chat.is_empty(), "{chat:?}");
    }
    let series = app.scrape().await;
    let refusals = |reason| {
        value(
            &series,
            "grpc_chat_auth_refusals_total",
            &[("reason", reason)],
        )
    };
    // 12 token cases on 5 doors; the no-token WebSocket is refused for its first frame.
    assert_eq!(refusals("unauthenticated"), Some(59.0));
    assert_eq!(refusals("permission_denied"), Some(15.0));
}

#[tokio::test]
async fn streams_end_with_unauthenticated_when_their_token_expires() {
    let keys = TokenKeys::generate();
    let app = secured_app(&keys).await;
    let token = keys.rsa_token(claims("alice", &["secure:all"], json!({"exp": at(2)})));
    let mut subscription = app
        .new_client()
        .await
        .subscribe_messages(with_token(live(ROOM), Some(&token)))
        .await
        .unwrap()
        .into_inner();
    let (outbound, inbound) = tokio::sync::mpsc::channel(4);
    let mut chat = app
        .new_client()
        .await
        .chat(with_token(
            tokio_stream::wrappers::ReceiverStream::new(inbound),
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    outbound
        .send(chat_message(ROOM, "", "before it expires"))
        .await
        .unwrap();
    let mut request = format!("ws://{}/ws?roomCode={ROOM}", app.ws_addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("grpc-chat, bearer.{token}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // The subscription says where to resume, then ends.
    let closing = loop {
        let message = next(&mut subscription).await;
        if message.notice == grpc_chat::proto::Notice::Closing as i32 {
            break message;
        }
    };
    assert!(
        closing
            .content
            .starts_with("your token expired; reconnect with from_offset="),
        "{closing:?}"
    );
    assert_status(
        &final_status(&mut subscription).await,
        Code::Unauthenticated,
        &["token expired; reconnect with a new token"],
    );
    assert_status(
        &final_status(&mut chat).await,
        Code::Unauthenticated,
        &["token expired"],
    );
    let close = within("the socket's close", async {
        loop {
            if let Some(Ok(Frame::Close(Some(close)))) = socket.next().await {
                return close;
            }
        }
    })
    .await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (
            CloseCode::Policy,
            "token expired; reconnect with a new token"
        )
    );
    // A new token resumes where the notice said.
    let renewed = keys.rsa_token(claims("alice", &["secure:all"], json!({})));
    let mut resumed = app
        .new_client()
        .await
        .subscribe_messages(with_token(
            SubscribeRequest {
                from_offset: closing.resume_from,
                epoch: closing.epoch,
                ..live(ROOM)
            },
            Some(&renewed),
        ))
        .await
        .unwrap()
        .into_inner();
    app.new_client()
        .await
        .send_message(with_token(send_request(ROOM, "", "after"), Some(&renewed)))
        .await
        .unwrap();
    let first = next_events(&mut resumed, 1).await.remove(0);
    assert_eq!(first.offset, closing.resume_from, "{first:?}");
}

#[tokio::test]
async fn keys_rotate_without_a_restart_when_the_jwks_file_changes() {
    let keys = TokenKeys::generate();
    let app = secured_app(&keys).await;
    let old = keys.jwks_token(claims("alice", &["secure:all"], json!({})));
    let (private, jwk) = keys.new_ec_key("ec-2");
    let rotated = ec_token(
        &private,
        "ec-2",
        claims("alice", &["secure:all"], json!({})),
    );
    let before = attempt(&app, Door::GrpcSend, Some(&rotated), "alice").await;
    assert!(
        matches!(&before, Err(Refused::Status(Code::Unauthenticated, reason)) if reason.contains("unknown key id (kid) \"ec-2\"")),
        "{before:?}"
    );

    // The old key leaves the document and the new one arrives.
    write_jwks(&keys.jwks, &[jwk]);
    within("the rotated key to be accepted", async {
        while attempt(&app, Door::GrpcSend, Some(&rotated), "alice")
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let retired = attempt(&app, Door::WebSocket, Some(&old), "alice").await;
    assert!(
        matches!(&retired, Err(Refused::Closed(CloseCode::Policy, reason)) if reason.contains("unknown key id (kid) \"ec-1\"")),
        "{retired:?}"
    );

    // A document that does not parse keeps the keys in use, and says so in a metric.
    std::fs::write(&keys.jwks, "{ not json").unwrap();
    app.metric_reaches(
        "grpc_chat_auth_key_reloads_total",
        &[("result", "error")],
        1.0,
    )
    .await;
    attempt(&app, Door::Chitty, Some(&rotated), "alice")
        .await
        .unwrap();
}

/// Python's `http.server` over TLS, serving the files of `dir` with `certs`' server certificate:
/// an HTTPS server the test can change the document of.
struct HttpsFiles {
    _child: Reaped,
    port: u16,
}

impl HttpsFiles {
    fn start(dir: &std::path::Path, certs: &Certs) -> Self {
        use std::io::BufRead;
        let script = r#"
import functools, http.server, ssl, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = std::process::Command::new(tool("python3"))
            .args(["-c", script])
            .args([dir, &certs.server_cert, &certs.server_key])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            port: line.trim().parse().expect("the server's port"),
            _child: Reaped(child),
        }
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_over_https_and_again_when_a_token_names_an_unknown_key() {
    let keys = TokenKeys::generate();
    let certs = Certs::generate("JWKS host CA");
    let files = HttpsFiles::start(&keys.dir, &certs);
    let app = spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            jwt_public_keys: Vec::new(),
            jwt_jwks_file: None,
            jwt_jwks_url: Some(format!("https://127.0.0.1:{}/jwks.json", files.port)),
            jwt_jwks_ca: Some(certs.ca.clone()),
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await;
    let first = keys.jwks_token(claims("alice", &["secure:all"], json!({})));
    within("the first fetch", async {
        while attempt(&app, Door::GrpcSend, Some(&first), "alice")
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    // A new key is published; the refresh interval (5 minutes) is far off, but a token naming
    // the new key makes the server fetch the document again.
    let (private, jwk) = keys.new_ec_key("ec-2");
    write_jwks(&keys.jwks, &[jwk]);
    let rotated = ec_token(
        &private,
        "ec-2",
        claims("alice", &["secure:all"], json!({})),
    );
    let refused = attempt(&app, Door::GrpcSend, Some(&rotated), "alice").await;
    assert!(
        matches!(&refused, Err(Refused::Status(Code::Unauthenticated, reason))
            if reason.contains("the key set is being fetched again")),
        "{refused:?}"
    );
    within("the refetched key", async {
        while attempt(&app, Door::GrpcSend, Some(&rotated), "alice")
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let retired = attempt(&app, Door::GrpcSend, Some(&first), "alice").await;
    assert!(retired.is_err(), "ec-1 left the document");
}

#[tokio::test]
async fn a_websocket_can_sign_in_with_its_first_frame_and_is_then_a_named_participant() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        ws_allowed_origins: vec!["https://chat.example.com".into()],
        ..ServeConfig {
            auth: keys.options(),
            ..ServeConfig::default()
        }
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &["secure:all"], json!({})));
    let mut watcher = app
        .new_client()
        .await
        .subscribe_messages(with_token(live(ROOM), Some(&alice)))
        .await
        .unwrap()
        .into_inner();

    let bob = keys.rsa_token(claims("bob", &["secure:all"], json!({})));
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?roomCode={ROOM}", app.ws_addr))
            .await
            .unwrap();
    socket
        .send(Frame::Text(json!({ "auth": bob }).to_string().into()))
        .await
        .unwrap();
    // Announced, listed, and its frames are bob's (an empty Author means the token's user).
    let joined = loop {
        let message = next(&mut watcher).await;
        if message.r#type == MessageType::Join as i32 && message.user == "bob" {
            break message;
        }
    };
    assert_eq!(joined.content, "bob joined");
    let room = room_state(&app, &alice).await;
    assert!(
        room.members.iter().any(|member| member.user == "bob"),
        "{room:?}"
    );
    socket
        .send(Frame::Text(
            r#"{"Author": "", "Content": "signed in"}"#.into(),
        ))
        .await
        .unwrap();
    let said = loop {
        let message = next(&mut watcher).await;
        if message.content == "signed in" {
            break message;
        }
    };
    assert_eq!(said.user, "bob");
    drop(socket);
    let left = loop {
        let message = next(&mut watcher).await;
        if message.r#type == MessageType::Leave as i32 {
            break message;
        }
    };
    assert_eq!(left.user, "bob");

    // A browser from an origin not on the list is turned away before the upgrade.
    let mut request = format!("ws://{}/ws?roomCode={ROOM}", app.ws_addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(
        matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(response) if response.status() == 403),
        "{refused:?}"
    );
    let mut request = format!("ws://{}/ws?roomCode={ROOM}", app.ws_addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://chat.example.com".parse().unwrap());
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("grpc-chat, bearer.{bob}").parse().unwrap(),
    );
    let (_, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "grpc-chat",
        "the server selects the protocol that is not the token"
    );
}

#[tokio::test]
async fn anonymous_callers_get_what_the_config_grants_and_history_is_a_capability_of_its_own() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            allow_anonymous: vec![
                grpc_chat::auth::grants::GrantList::parse("public-*:sub").unwrap(),
            ],
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await;
    let writer = keys.rsa_token(claims("alice", &["public-*:pub,sub"], json!({})));
    app.new_client()
        .await
        .send_message(with_token(
            send_request("public-1", "", "hello all"),
            Some(&writer),
        ))
        .await
        .unwrap();

    // Anyone may follow a public room live...
    let mut client = app.new_client().await;
    let mut live_feed = client
        .subscribe_messages(live("public-1"))
        .await
        .unwrap()
        .into_inner();
    next(&mut live_feed).await;
    // ...but not publish there, replay it, or read another room.
    let refusals = [
        (
            expect_err(
                client
                    .send_message(send_request("public-1", "anon", "hi"))
                    .await,
            ),
            "no token: to publish to room public-1",
        ),
        (
            expect_err(
                client
                    .subscribe_messages(SubscribeRequest {
                        from_offset: 1,
                        ..live("public-1")
                    })
                    .await,
            ),
            "no token: to read the history of room public-1",
        ),
        (
            expect_err(client.subscribe_messages(live("secure")).await),
            "no token: to subscribe to room secure",
        ),
    ];
    for (status, phrase) in &refusals {
        assert_status(status, Code::Unauthenticated, &[phrase]);
    }
    // A token without history is refused a replay for that capability.
    let replay = app
        .new_client()
        .await
        .subscribe_messages(with_token(
            SubscribeRequest {
                last: 5,
                ..live("public-1")
            },
            Some(&writer),
        ))
        .await;
    assert_status(
        &expect_err(replay),
        Code::PermissionDenied,
        &["user alice may not read the history of room public-1 (needs the history capability)"],
    );
}
