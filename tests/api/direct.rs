//! Direct rooms: two users get the same room whichever of them asks, and only they may use it
//! on any door, whatever the other grants say.

use grpc_chat::{
    auth::{config::AuthOptions, grants::GrantList},
    config::ServeConfig,
    proto::DirectRoomRequest,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tonic::Code;

use crate::helpers::*;

/// The direct room `token`'s user has with `peer`.
async fn direct_room(
    app: &TestApp,
    token: Option<&str>,
    user: &str,
    peer: &str,
) -> Result<String, tonic::Status> {
    let request = DirectRoomRequest {
        user: user.into(),
        peer: peer.into(),
    };
    let response = app
        .new_client()
        .await
        .direct_room(with_token(request, token))
        .await?;
    Ok(response.into_inner().room)
}

#[tokio::test]
async fn a_direct_room_is_its_pair_s_alone_on_every_door() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: AuthOptions {
            // Anyone may do anything anywhere, as far as grants go.
            allow_anonymous: vec![GrantList::parse("*:all").unwrap()],
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &[], json!({})));
    let bob = keys.rsa_token(claims("Bób Ørsted", &[], json!({})));
    let carol = keys.rsa_token(claims("carol", &["*:all"], json!({})));

    let room = direct_room(&app, Some(&alice), "", "Bób Ørsted")
        .await
        .unwrap();
    assert_eq!(
        direct_room(&app, Some(&bob), "Bób Ørsted", "alice")
            .await
            .unwrap(),
        room,
        "the same room whichever of them asks"
    );
    assert!(room.starts_with("dm.") && room.len() == 44, "{room}");
    assert_ne!(
        direct_room(&app, Some(&alice), "", "carol").await.unwrap(),
        room
    );

    for door in DOORS {
        attempt_in(&app, &room, door, Some(&alice), "alice")
            .await
            .unwrap();
        attempt_in(&app, &room, door, Some(&bob), "Bób Ørsted")
            .await
            .unwrap();
        let refused = attempt_in(&app, &room, door, Some(&carol), "carol")
            .await
            .unwrap_err();
        let reason = match &refused {
            Refused::Status(code, reason) => {
                assert_eq!(*code, Code::PermissionDenied, "{door:?}: {reason}");
                reason
            }
            Refused::Closed(code, reason) => {
                assert_eq!(*code, CloseCode::Policy, "{door:?}: {reason}");
                reason
            }
        };
        assert!(
            reason.contains("a direct room is its two members' only"),
            "{door:?}: {reason}"
        );
        assert!(
            attempt_in(&app, &room, door, None, "alice").await.is_err(),
            "{door:?} without a token"
        );
    }
}

#[tokio::test]
async fn asking_for_a_direct_room_is_refused_with_what_is_wrong() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &[], json!({})));
    let refusals = [
        (None, "alice", "bob", Code::Unauthenticated, "no token"),
        (
            Some(alice.as_str()),
            "bob",
            "carol",
            Code::PermissionDenied,
            "user: the token is for user \"alice\"",
        ),
        (
            Some(alice.as_str()),
            "",
            "",
            Code::InvalidArgument,
            "peer: must not be empty",
        ),
        (
            Some(alice.as_str()),
            "",
            "System",
            Code::InvalidArgument,
            "peer: \"System\" is reserved",
        ),
    ];
    for (token, user, peer, code, reason) in refusals {
        let status = direct_room(&app, token, user, peer).await.unwrap_err();
        assert_eq!(status.code(), code, "{peer}: {}", status.message());
        assert!(status.message().starts_with(reason), "{}", status.message());
    }

    // A name that only looks like a direct room's is no room.
    let mut client = app.new_client().await;
    for name in [
        "dm.alice.bob",
        "dm.0123456789abcdef0123",
        "dm.ffffffffffffffffffff.00000000000000000000",
    ] {
        let status = client
            .send_message(with_token(send_request(name, "", "hi"), Some(&alice)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(
            status
                .message()
                .starts_with("room: names starting \"dm.\" are direct rooms"),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn without_authentication_a_direct_room_is_named_for_the_names_sent() {
    let app = spawn_app().await;
    let room = direct_room(&app, None, "alice", "bob").await.unwrap();
    assert_eq!(direct_room(&app, None, "bob", "alice").await.unwrap(), room);
    let sent = app.send(&room, "alice", "hello bob").await;
    assert_eq!(sent.offset, 1);
}
