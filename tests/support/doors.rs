//! One call through any front door with a token, for the matrices of tokens and names: what the
//! server accepted, or how it refused.

use futures_util::{SinkExt, StreamExt};
use grpc_chat::proto::{
    SubscribeRequest,
    chitty_chat::{
        ChatEvent,
        chat_client::ChatClient,
        chat_event::{ChatMessage as Say, Event, UserJoin},
    },
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message as Frame, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};
use tonic::Code;

use super::{
    app::{TestApp, channel},
    calls::{live, send_request, within},
    tokens::with_token,
    web::web_client,
};

/// The room [`attempt`]'s calls go to.
pub const ROOM: &str = "secure";

/// One way in.
#[derive(Debug, Clone, Copy)]
pub enum Door {
    GrpcSend,
    GrpcSubscribe,
    GrpcWebSend,
    Chitty,
    WebSocket,
}

/// Every door [`attempt`] can try.
pub const DOORS: [Door; 5] = [
    Door::GrpcSend,
    Door::GrpcSubscribe,
    Door::GrpcWebSend,
    Door::Chitty,
    Door::WebSocket,
];

/// How a door refused: a gRPC code, or a WebSocket close code, and the reason.
#[derive(Debug, PartialEq)]
pub enum Refused {
    Status(Code, String),
    Closed(CloseCode, String),
}

/// Publishes (or, for GrpcSubscribe, subscribes) to [`ROOM`] through `door` with `token` under
/// the name `user`; Ok when the server accepted it.
pub async fn attempt(
    app: &TestApp,
    door: Door,
    token: Option<&str>,
    user: &str,
) -> Result<(), Refused> {
    attempt_in(app, ROOM, door, token, user).await
}

/// [`attempt`] in `room`.
pub async fn attempt_in(
    app: &TestApp,
    room: &str,
    door: Door,
    token: Option<&str>,
    user: &str,
) -> Result<(), Refused> {
    let refused = |status: tonic::Status| Refused::Status(status.code(), status.message().into());
    match door {
        Door::GrpcSend => app
            .new_client()
            .await
            .send_message(with_token(send_request(room, user, "hi"), token))
            .await
            .map(drop)
            .map_err(refused),
        Door::GrpcWebSend => web_client(app.addr)
            .send_message(with_token(send_request(room, user, "hi"), token))
            .await
            .map(drop)
            .map_err(refused),
        Door::GrpcSubscribe => {
            let request = SubscribeRequest {
                user: user.into(),
                ..live(room)
            };
            let mut stream = app
                .new_client()
                .await
                .subscribe_messages(with_token(request, token))
                .await
                .map_err(refused)?
                .into_inner();
            // The welcome says the subscription is open.
            within("the welcome", stream.message())
                .await
                .map_err(refused)?
                .expect("a welcome");
            Ok(())
        }
        Door::Chitty => {
            let events = [
                ChatEvent {
                    timestamp: 1,
                    event: Some(Event::Join(UserJoin {
                        username: user.into(),
                    })),
                },
                ChatEvent {
                    timestamp: 2,
                    event: Some(Event::Message(Say {
                        username: user.into(),
                        message: "hi".into(),
                    })),
                },
            ];
            let mut request = with_token(futures_util::stream::iter(events), token);
            request
                .metadata_mut()
                .insert("x-chat-room", room.parse().unwrap());
            let mut replies = ChatClient::new(channel(app.addr).await)
                .broadcast(request)
                .await
                .map_err(refused)?
                .into_inner();
            // Accepted once its own message comes back.
            loop {
                let reply = within("a chitty reply", replies.message())
                    .await
                    .map_err(refused)?
                    .expect("the stream stays open while joined");
                if reply.message == "hi" {
                    return Ok(());
                }
            }
        }
        Door::WebSocket => {
            let mut request = format!("ws://{}/ws?roomCode={room}", app.ws_addr)
                .into_client_request()
                .unwrap();
            let protocols = match token {
                Some(token) => format!("grpc-chat, bearer.{token}"),
                None => "grpc-chat".into(),
            };
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let frame = json!({"Author": user, "Content": "hi"}).to_string();
            // The socket may already be closed by the server; its close frame says why.
            let _ = socket.send(Frame::Text(frame.into())).await;
            within("the echo or the close", async {
                loop {
                    match socket.next().await {
                        Some(Ok(Frame::Text(text))) if text.contains("\"Content\":\"hi\"") => {
                            return Ok(());
                        }
                        Some(Ok(Frame::Close(Some(close)))) => {
                            return Err(Refused::Closed(close.code, close.reason.to_string()));
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("neither an echo nor a close frame: {other:?}"),
                    }
                }
            })
            .await
        }
    }
}
