//! Tokens a hostile client signs with a key the server trusts but for another service (no
//! audience, no issuer) or with time claims past what a clock holds are refused on every door
//! with `UNAUTHENTICATED` saying why (a WebSocket: 1008), never accepted and never a panic.

use grpc_chat::config::ServeConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn tokens_for_other_services_and_times_past_any_clock_are_refused_on_every_door() {
    let keys = TokenKeys::generate();
    // Audience and issuer required (the keys' options set both).
    let app = spawn_app_with(ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    })
    .await;
    // (case, token, user field, a phrase of the reason)
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        (
            "no audience",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"aud": null})))),
            "alice",
            "missing claim \"aud\"",
        ),
        (
            "no issuer",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"iss": null})))),
            "alice",
            "missing claim \"iss\"",
        ),
        (
            "expiry past what a clock holds",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"exp": 1u64 << 63})))),
            "alice",
            "\"exp\" is too far in the future",
        ),
        (
            "expiry at the largest number",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"exp": u64::MAX})))),
            "alice",
            "\"exp\" is too far in the future",
        ),
        (
            "issued past what a clock holds",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"iat": 1u64 << 63})))),
            "alice",
            "issued in the future",
        ),
        (
            "not valid before a time past what a clock holds",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"nbf": u64::MAX})))),
            "alice",
            "not valid yet",
        ),
        (
            "expiry as a huge fraction",
            Some(keys.rsa_token(claims("alice", &["secure:all"], json!({"exp": 1e300})))),
            "alice",
            "exp",
        ),
    ];
    let mut attempts = 0;
    for (case, token, user, phrase) in &cases {
        for door in DOORS {
            attempts += 1;
            match attempt(&app, door, token.as_deref(), user).await {
                Ok(()) => panic!("{case} was accepted on {door:?}"),
                Err(Refused::Status(code, message)) => {
                    assert_eq!(code, Code::Unauthenticated, "{case} on {door:?}: {message}");
                    assert!(message.contains(phrase), "{case} on {door:?}: {message:?}");
                }
                Err(Refused::Closed(code, reason)) => {
                    assert_eq!(code, CloseCode::Policy, "{case}: {reason}");
                    assert!(reason.contains(phrase), "{case} on WebSocket: {reason:?}");
                }
            }
        }
    }
    assert_eq!(attempts, 35);
    // The server is still there for a good token.
    let good = keys.rsa_token(claims("alice", &["secure:all"], json!({})));
    for door in DOORS {
        attempt(&app, door, Some(&good), "alice").await.unwrap();
    }
}
