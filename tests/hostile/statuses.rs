//! Malformed, oversized and out-of-protocol input gets the documented status on every RPC: never
//! OK, never INTERNAL, and the server keeps serving.

use std::time::Duration;

use grpc_chat::{
    config::ServeConfig,
    proto::SubscribeRequest,
    protocol::{Kind, RPCS},
};
use prost::Message as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::*,
    raw::{grpc_call, grpc_frame},
};

/// A request message no protobuf type decodes: a field with the invalid wire type 7.
const GARBAGE: &[u8] = &[0x0f];

fn path(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

#[tokio::test]
async fn a_request_that_is_not_valid_protobuf_is_invalid_argument_on_every_rpc() {
    let app = spawn_app().await;
    for rpc in RPCS {
        let answer = grpc_call(
            app.addr,
            &path(rpc.service, rpc.method),
            "application/grpc",
            grpc_frame(GARBAGE),
        )
        .await;
        assert_eq!(
            answer.code,
            Some(Code::InvalidArgument as i32),
            "{}/{}: {answer:?}",
            rpc.service,
            rpc.method
        );
        assert!(
            answer.message.contains("not valid protobuf"),
            "{}/{}: {answer:?}",
            rpc.service,
            rpc.method
        );
    }
    assert_no_server_errors(&app).await;
}

#[tokio::test]
async fn unary_and_server_streaming_calls_carry_exactly_one_message() {
    let app = spawn_app().await;
    for rpc in RPCS
        .iter()
        .filter(|rpc| matches!(rpc.kind, Kind::Unary | Kind::ServerStream))
    {
        let at = path(rpc.service, rpc.method);
        // An empty message is a valid message of every type.
        let two = [grpc_frame(&[]), grpc_frame(&[])].concat();
        let answer = grpc_call(app.addr, &at, "application/grpc", two).await;
        assert_eq!(
            answer.code,
            Some(Code::InvalidArgument as i32),
            "{at}: {answer:?}"
        );
        assert!(answer.message.contains("got a second"), "{at}: {answer:?}");
        let none = grpc_call(app.addr, &at, "application/grpc", Vec::new()).await;
        assert_eq!(
            none.code,
            Some(Code::InvalidArgument as i32),
            "{at}: {none:?}"
        );
        assert!(none.message.contains("got none"), "{at}: {none:?}");
    }
    // A SendMessage carrying two requests published neither.
    let request = send_request("general", "Alice", "twice").encode_to_vec();
    let two = [grpc_frame(&request), grpc_frame(&request)].concat();
    let answer = grpc_call(
        app.addr,
        "/chat.ChatService/SendMessage",
        "application/grpc",
        two,
    )
    .await;
    assert_eq!(
        answer.code,
        Some(Code::InvalidArgument as i32),
        "{answer:?}"
    );
    assert_eq!(app.metric("grpc_chat_rooms").await, 0.0);
    assert_no_server_errors(&app).await;
}

#[tokio::test]
async fn a_truncated_or_wrongly_flagged_request_is_invalid_argument() {
    let app = spawn_app().await;
    let request = send_request("general", "Alice", "cut").encode_to_vec();
    let mut truncated = grpc_frame(&request);
    truncated.truncate(truncated.len() - 2);
    let send = "/chat.ChatService/SendMessage";
    let answer = grpc_call(app.addr, send, "application/grpc", truncated).await;
    assert_eq!(
        answer.code,
        Some(Code::InvalidArgument as i32),
        "{answer:?}"
    );
    assert!(
        answer.message.contains("ends inside a message"),
        "{answer:?}"
    );
    let mut compressed = grpc_frame(&request);
    compressed[0] = 1;
    let answer = grpc_call(app.addr, send, "application/grpc", compressed).await;
    assert_eq!(
        answer.code,
        Some(Code::InvalidArgument as i32),
        "{answer:?}"
    );
    assert!(answer.message.contains("no grpc-encoding"), "{answer:?}");
    assert_no_server_errors(&app).await;
}

#[tokio::test]
async fn an_oversized_message_is_out_of_range_on_the_streaming_doors() {
    let app = spawn_app().await;
    for at in [
        "/chat.ChatService/Chat",
        "/chat.ChatService/UploadMessages",
        "/chitty_chat.Chat/Broadcast",
    ] {
        let answer = grpc_call(
            app.addr,
            at,
            "application/grpc",
            grpc_frame(&vec![0; 70 * 1024]),
        )
        .await;
        assert_eq!(
            answer.code,
            Some(Code::OutOfRange as i32),
            "{at}: {answer:?}"
        );
        assert!(
            answer.message.contains("messages[0]") || at.contains("chitty"),
            "{at}: {answer:?}"
        );
    }
    app.send("general", "Alice", "still serving").await;
}

#[tokio::test]
async fn a_request_that_is_not_grpc_gets_415() {
    let app = spawn_app().await;
    for content_type in ["text/plain", "application/json", ""] {
        let answer = grpc_call(
            app.addr,
            "/chat.ChatService/SendMessage",
            content_type,
            grpc_frame(&[]),
        )
        .await;
        assert_eq!(answer.http_status, 415, "{content_type:?}: {answer:?}");
        assert_eq!(answer.code, None, "not a gRPC answer: {answer:?}");
    }
    assert_eq!(
        app.metric_labelled("grpc_server_started_total", &[("grpc_method", "unknown")])
            .await,
        0.0,
        "not counted as calls"
    );
}

#[tokio::test]
async fn watching_an_unknown_service_streams_service_unknown_and_stays_open() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(app.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within("the first status", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.message())
            .await
            .is_err(),
        "the call stays open"
    );
    let mut known = health
        .watch(HealthCheckRequest {
            service: "chat.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        known.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_failed_call_creates_no_room() {
    let app = spawn_app_with(ServeConfig {
        max_rooms: 1,
        ..ServeConfig::default()
    })
    .await;
    let status = expect_err(
        app.client
            .clone()
            .subscribe_messages(SubscribeRequest {
                from_offset: 5,
                ..live("ghost")
            })
            .await,
    );
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(app.metric("grpc_chat_rooms").await, 0.0);
    // So the one room allowed is still free.
    app.send("real", "Alice", "first").await;
}

#[tokio::test]
async fn a_lamport_timestamp_that_could_overflow_the_clock_is_refused_by_name() {
    use grpc_chat::proto::chitty_chat::{
        ChatEvent,
        chat_client::ChatClient,
        chat_event::{Event, UserJoin},
    };
    let app = spawn_app().await;
    let join = ChatEvent {
        timestamp: u64::MAX - 1,
        event: Some(Event::Join(UserJoin {
            username: "alice".into(),
        })),
    };
    let mut stream = ChatClient::new(channel(app.addr).await)
        .broadcast(tokio_stream::iter([join]))
        .await
        .unwrap()
        .into_inner();
    let status = within("the status", async {
        loop {
            if let Err(status) = stream.message().await {
                return status;
            }
        }
    })
    .await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["timestamp: must be at most 9223372036854775807 (got 18446744073709551614)"],
    );
    assert_eq!(app.metric("grpc_chat_rooms").await, 0.0);
}

/// No call so far ended with a server-error code.
async fn assert_no_server_errors(app: &TestApp) {
    for code in ["Internal", "Unknown"] {
        assert_eq!(
            app.metric_labelled("grpc_server_handled_total", &[("grpc_code", code)])
                .await,
            0.0,
            "{code}"
        );
    }
}
