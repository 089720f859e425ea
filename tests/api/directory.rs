//! The room directory: the rooms a caller may read, by its grants and its own direct rooms, in
//! name order and in pages, with who is there and when each was last written to.

use grpc_chat::{
    config::ServeConfig,
    proto::{DirectRoomRequest, ListRoomsRequest, RoomDirectory},
};
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

async fn list(
    app: &TestApp,
    token: Option<&str>,
    request: ListRoomsRequest,
) -> Result<RoomDirectory, tonic::Status> {
    let response = app
        .new_client()
        .await
        .list_rooms(with_token(request, token))
        .await?;
    Ok(response.into_inner())
}

fn names(directory: &RoomDirectory) -> Vec<&str> {
    directory
        .rooms
        .iter()
        .map(|room| room.room.as_str())
        .collect()
}

async fn direct(app: &TestApp, token: Option<&str>, user: &str, peer: &str) -> String {
    let request = DirectRoomRequest {
        user: user.into(),
        peer: peer.into(),
    };
    let mut client = app.new_client().await;
    let response = client.direct_room(with_token(request, token)).await;
    response.unwrap().into_inner().room
}

#[tokio::test]
async fn each_caller_sees_the_rooms_its_grants_and_direct_rooms_allow_in_pages() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &["team-*:all"], json!({})));
    let bob = keys.rsa_token(claims("bob", &["*:all"], json!({})));
    let carol = keys.rsa_token(claims("carol", &[], json!({})));
    let alice_bob = direct(&app, Some(&alice), "", "bob").await;
    let bob_carol = direct(&app, Some(&carol), "", "bob").await;
    let mut client = app.new_client().await;
    for (room, token) in [
        ("team-b", &bob),
        ("team-a", &bob),
        ("other", &bob),
        (alice_bob.as_str(), &alice),
        (bob_carol.as_str(), &carol),
    ] {
        client
            .send_message(with_token(send_request(room, "", "hello"), Some(token)))
            .await
            .unwrap();
    }
    let _here = client
        .subscribe_messages(with_token(
            grpc_chat::proto::SubscribeRequest {
                user: "alice".into(),
                ..live("team-a")
            },
            Some(&alice),
        ))
        .await
        .unwrap();

    let seen_by_alice = list(&app, Some(&alice), ListRoomsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        names(&seen_by_alice),
        [alice_bob.as_str(), "team-a", "team-b"]
    );
    assert!(seen_by_alice.next_page_token.is_empty());
    let team_a = &seen_by_alice.rooms[1];
    assert_eq!((team_a.members, team_a.last_offset), (1, 2), "{team_a:?}");
    assert!(!team_a.epoch.is_empty() && team_a.last_activity.is_some());

    // Bob's grants let him read every room, but only his own direct rooms are listed.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &app,
            Some(&bob),
            ListRoomsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..ListRoomsRequest::default()
            },
        )
        .await
        .unwrap();
        pages.push(
            names(&page)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut direct_rooms = [alice_bob.clone(), bob_carol.clone()];
    direct_rooms.sort();
    assert_eq!(
        pages.concat(),
        [
            &direct_rooms[..],
            &["other".into(), "team-a".into(), "team-b".into()]
        ]
        .concat()
    );
    assert!(pages.iter().all(|page| page.len() <= 2), "{pages:?}");
    // Carol may read nothing but her direct room with Bob.
    let seen_by_carol = list(&app, Some(&carol), ListRoomsRequest::default())
        .await
        .unwrap();
    assert_eq!(names(&seen_by_carol), [bob_carol.as_str()]);
    // Without a token (and no anonymous grant) nothing is listed.
    let anonymous = list(&app, None, ListRoomsRequest::default()).await.unwrap();
    assert!(anonymous.rooms.is_empty());

    let refusals = [
        (
            ListRoomsRequest {
                page_size: 101,
                ..ListRoomsRequest::default()
            },
            Code::InvalidArgument,
            "page_size: must be at most 100 (got 101)",
        ),
        (
            ListRoomsRequest {
                page_token: "no room!".into(),
                ..ListRoomsRequest::default()
            },
            Code::InvalidArgument,
            "page_token:",
        ),
        (
            ListRoomsRequest {
                user: "bob".into(),
                ..ListRoomsRequest::default()
            },
            Code::PermissionDenied,
            "user: the token is for user \"alice\"",
        ),
    ];
    for (request, code, phrase) in refusals {
        let status = list(&app, Some(&alice), request).await.unwrap_err();
        assert_status(&status, code, &[phrase]);
    }
}

#[tokio::test]
async fn without_authentication_every_room_is_listed_but_only_the_named_user_s_direct_rooms() {
    let app = spawn_app().await;
    let alice_bob = direct(&app, None, "alice", "bob").await;
    for room in ["general", alice_bob.as_str(), "random"] {
        app.send(room, "alice", "hi").await;
    }
    let anyone = list(&app, None, ListRoomsRequest::default()).await.unwrap();
    assert_eq!(names(&anyone), ["general", "random"]);
    let as_bob = ListRoomsRequest {
        user: "bob".into(),
        ..ListRoomsRequest::default()
    };
    let bob = list(&app, None, as_bob).await.unwrap();
    assert_eq!(names(&bob), [alice_bob.as_str(), "general", "random"]);
}
