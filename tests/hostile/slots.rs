//! One identity cannot take the server's rooms or a room's places from everyone else: opening
//! rooms, by any operation of any door, counts against a rate per identity (callers without a
//! token share their address's), and subscriptions against caps per identity, in all and in one
//! room.

use std::time::Duration;

use grpc_chat::{
    auth::grants::GrantList,
    config::ServeConfig,
    proto::{Message, MessageType, SubscribeRequest, chat_service_client::ChatServiceClient},
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::helpers::*;

/// A server with auth on and the call rate off (so that only the limits under test refuse);
/// `tweak` sets the rest.
async fn secured(keys: &TokenKeys, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut config = ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    };
    config.auth.limits.call_rate = Some(0);
    tweak(&mut config);
    spawn_app_with(config).await
}

/// A subscription with `token` (and the status if refused), kept open by the caller.
async fn subscribe(
    client: &mut ChatServiceClient<Channel>,
    request: SubscribeRequest,
    token: Option<&str>,
) -> Result<Streaming<Message>, Status> {
    let stream = client
        .subscribe_messages(with_token(request, token))
        .await?
        .into_inner();
    Ok(welcomed(stream).await)
}

fn opening_refused(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted
        && status.message().starts_with("room opening rate limit")
}

#[tokio::test]
async fn opening_rooms_by_any_operation_counts_against_one_rate_per_identity() {
    let keys = TokenKeys::generate();
    let app = secured(&keys, |_| {}).await;
    let mallory = keys.rsa_token(claims("mallory", &["*:all"], json!({})));
    let bob = keys.rsa_token(claims("bob", &["*:all"], json!({})));
    let token = Some(mallory.as_str());
    let mut client = app.new_client().await;
    let mut kept = Vec::new();
    // The burst (100) spent by four operations, 25 each, each opening a room of its own.
    for i in 0..25 {
        kept.push(
            subscribe(&mut client, live(&format!("sub-{i}")), token)
                .await
                .unwrap(),
        );
        let replay = SubscribeRequest {
            last: 5,
            ..live(&format!("replay-{i}"))
        };
        kept.push(subscribe(&mut client, replay, token).await.unwrap());
        client
            .send_message(with_token(
                send_request(&format!("pub-{i}"), "", "hi"),
                token,
            ))
            .await
            .unwrap();
    }
    let (joins, messages) = mpsc::channel(64);
    let mut chat = client
        .chat(with_token(ReceiverStream::new(messages), token))
        .await
        .unwrap()
        .into_inner();
    for i in 0..25 {
        let join = Message {
            r#type: MessageType::Join as i32,
            ..chat_message(&format!("join-{i}"), "", "")
        };
        joins.send(join).await.unwrap();
    }
    // The 26th JOIN is the 101st room: the stream ends with the rate's status.
    let join = Message {
        r#type: MessageType::Join as i32,
        ..chat_message("join-25", "", "")
    };
    joins.send(join).await.unwrap();
    let status = final_status(&mut chat).await;
    assert!(opening_refused(&status), "{status:?}");
    // Every other operation is refused too, and says when to retry.
    let status = subscribe(&mut client, live("one-more"), token)
        .await
        .unwrap_err();
    assert!(opening_refused(&status), "{status:?}");
    assert!(
        status
            .message()
            .contains("user mallory may open at most 1 rooms per second")
    );
    let status = client
        .send_message(with_token(send_request("one-more", "", "hi"), token))
        .await
        .unwrap_err();
    assert!(opening_refused(&status), "{status:?}");
    // Rooms already open still work for her, and others still open rooms.
    client
        .send_message(with_token(send_request("pub-0", "", "still here"), token))
        .await
        .unwrap();
    subscribe(&mut client, live("bobs-room"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(
        app.metric_labelled("grpc_chat_rate_limited_total", &[("limit", "room_opens")])
            .await,
        3.0
    );
    assert!(app.metric("grpc_chat_rooms").await <= 101.0);
    drop(kept);
}

#[tokio::test]
async fn callers_without_a_token_share_their_address_s_rate() {
    let keys = TokenKeys::generate();
    let app = secured(&keys, |config| {
        config.auth.allow_anonymous = vec![GrantList::parse("public-*:sub").unwrap()];
    })
    .await;
    let mut kept = Vec::new();
    // Two anonymous clients behind one address spend one burst between them.
    let (mut first, mut second) = (app.new_client().await, app.new_client().await);
    for i in 0..50 {
        kept.push(
            subscribe(&mut first, live(&format!("public-a{i}")), None)
                .await
                .unwrap(),
        );
        kept.push(
            subscribe(&mut second, live(&format!("public-b{i}")), None)
                .await
                .unwrap(),
        );
    }
    let status = subscribe(&mut first, live("public-more"), None)
        .await
        .unwrap_err();
    assert!(opening_refused(&status), "{status:?}");
    assert!(status.message().contains("address 127.0.0.1"), "{status:?}");
    // Another address has its own.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .local_address(Some([127, 0, 0, 5].into()))
        .connect()
        .await
        .unwrap();
    subscribe(
        &mut ChatServiceClient::new(channel),
        live("public-elsewhere"),
        None,
    )
    .await
    .unwrap();
    drop(kept);
}

#[tokio::test]
async fn an_identity_holds_at_most_its_share_of_a_room_and_its_subscriptions() {
    let keys = TokenKeys::generate();
    let app = secured(&keys, |config| {
        config.max_subscribers_per_room = 300;
        config.auth.limits.max_subscriptions_per_user = 150;
    })
    .await;
    let mallory = keys.rsa_token(claims("mallory", &["*:all"], json!({})));
    let bob = keys.rsa_token(claims("bob", &["*:all"], json!({})));
    let mut client = app.new_client().await;
    let mut held = Vec::new();
    let refusal = loop {
        match subscribe(&mut client, live("lobby"), Some(&mallory)).await {
            Ok(stream) => held.push(stream),
            Err(status) => break status,
        }
        assert!(held.len() <= 300, "took every place of the room");
    };
    assert_eq!(held.len(), 100, "a hundred places of three hundred");
    assert_status(
        &refusal,
        Code::ResourceExhausted,
        &["user mallory holds 100 subscriptions to room lobby"],
    );
    // Others still get in.
    let _bobs = subscribe(&mut client, live("lobby"), Some(&bob))
        .await
        .unwrap();
    // Her subscriptions in all are capped too.
    for _ in 0..50 {
        held.push(
            subscribe(&mut client, live("lobby2"), Some(&mallory))
                .await
                .unwrap(),
        );
    }
    let refusal = subscribe(&mut client, live("lobby3"), Some(&mallory))
        .await
        .unwrap_err();
    assert_status(
        &refusal,
        Code::ResourceExhausted,
        &["user mallory holds 150 subscriptions, the most one identity may hold at once"],
    );
    // Places come back as subscriptions end.
    held.truncate(149);
    within("a place to come back", async {
        loop {
            if subscribe(&mut client, live("lobby3"), Some(&mallory))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
