//! A sender that floods client message ids pushes out only its own: another user's retry within
//! the window is still answered as its first send.

use bytesize::ByteSize;
use grpc_chat::{config::ServeConfig, hub::SEND_ID_BYTES, proto::SendMessageRequest};

use crate::helpers::*;

#[tokio::test]
async fn a_flood_of_client_message_ids_forgets_only_the_flooder_s_own() {
    let app = spawn_app_with(ServeConfig {
        // Room for 50 ids over all users, 10 per user.
        send_ids_bytes: ByteSize::b(50 * SEND_ID_BYTES as u64),
        send_ids_per_user: 10,
        ..ServeConfig::default()
    })
    .await;
    let send = |user: &str, key: String| {
        let mut client = app.client.clone();
        let request = SendMessageRequest {
            client_message_id: key,
            ..send_request("general", user, "hello")
        };
        async move { client.send_message(request).await.unwrap().into_inner() }
    };
    let alice = send("Alice", "alice-1".into()).await;
    let first_of_flood = send("Mallory", "flood-0".into()).await;
    for n in 1..200 {
        send("Mallory", format!("flood-{n}")).await;
    }
    assert_eq!(
        send("Alice", "alice-1".into()).await,
        alice,
        "Alice's retry is answered as her first send"
    );
    assert_eq!(
        send("Mallory", "flood-199".into()).await.offset,
        first_of_flood.offset + 199,
        "Mallory's newest ids are held"
    );
    let again = send("Mallory", "flood-0".into()).await;
    assert_eq!(
        again.offset,
        first_of_flood.offset + 200,
        "Mallory's oldest id was forgotten for her newer ones, so it is stored again"
    );
}
