//! grpcurl (which speaks reflection v1alpha) against the running binary.

use std::process::Command;

use crate::helpers::*;

fn grpcurl(args: &[&str]) -> String {
    let output = Command::new(tool("grpcurl")).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn grpcurl_lists_describes_calls_and_checks_health() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr.to_string();

    let services = grpcurl(&["-plaintext", &addr, "list"]);
    for service in [
        "chat.ChatService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} not in {services}"
        );
    }

    let description = grpcurl(&["-plaintext", &addr, "describe", "chat.ChatService"]);
    for rpc in [
        "rpc SendMessage ( .chat.SendMessageRequest ) returns ( .chat.SendMessageResponse );",
        "rpc SubscribeMessages ( .chat.SubscribeRequest ) returns ( stream .chat.Message );",
        "rpc Chat ( stream .chat.Message ) returns ( stream .chat.Message );",
        "rpc GetRoom ( .chat.GetRoomRequest ) returns ( .chat.RoomState );",
        "rpc DirectRoom ( .chat.DirectRoomRequest ) returns ( .chat.DirectRoomResponse );",
        "rpc ListRooms ( .chat.ListRoomsRequest ) returns ( .chat.RoomDirectory );",
        "rpc EditMessage ( .chat.EditMessageRequest ) returns ( .chat.ChangeResponse );",
        "rpc DeleteMessage ( .chat.DeleteMessageRequest ) returns ( .chat.ChangeResponse );",
        "rpc React ( .chat.ReactRequest ) returns ( .chat.ChangeResponse );",
    ] {
        assert!(description.contains(rpc), "{rpc} not in {description}");
    }
    let message = grpcurl(&["-plaintext", &addr, "describe", "chat.Message"]);
    assert!(message.contains("uint64 offset = 7;"), "{message}");

    let sent = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"user": "Alice", "content": "hello from grpcurl", "room": "general"}"#,
        &addr,
        "chat.ChatService/SendMessage",
    ]);
    assert!(sent.contains("\"messageId\":"), "{sent}");
    assert!(sent.contains("\"offset\": \"1\""), "{sent}");

    let room = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"room": "general"}"#,
        &addr,
        "chat.ChatService/GetRoom",
    ]);
    for field in [
        "\"room\": \"general\"",
        "\"firstOffset\": \"1\"",
        "\"lastOffset\": \"1\"",
    ] {
        assert!(room.contains(field), "{field} not in {room}");
    }
    let epoch = sent
        .split("\"epoch\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(room.contains(&format!("\"epoch\": \"{epoch}\"")), "{room}");

    // A change made with grpcurl: an edit of that message.
    let edited = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"user": "Alice", "room": "general", "offset": 1, "content": "hello, edited"}"#,
        &addr,
        "chat.ChatService/EditMessage",
    ]);
    assert!(edited.contains("\"offset\": \"2\""), "{edited}");

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"status\": \"SERVING\""), "{health}");
}
