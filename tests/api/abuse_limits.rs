//! Abuse limits: a flood from one user (or one address) is cut to its rate while another user's
//! messages keep flowing with their usual latency; a connection's calls and rooms are capped.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use grpc_chat::{
    auth::limits::LimitOptions,
    config::ServeConfig,
    proto::{SendMessageRequest, chat_service_client::ChatServiceClient},
};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

use crate::helpers::*;

/// Publishes `count` messages as fast as 16 concurrent calls allow; returns how many were
/// accepted and how long it took. Every refusal must be the publish limit's.
async fn flood(
    client: &ChatServiceClient<Channel>,
    token: Option<&str>,
    count: usize,
) -> (usize, Duration) {
    let started = Instant::now();
    let calls = (0..count).map(|i| {
        let mut client = client.clone();
        let request = with_token(
            send_request("lobby", "mallory", &format!("spam {i}")),
            token,
        );
        async move { client.send_message(request).await }
    });
    let outcomes: Vec<_> = futures_util::stream::iter(calls)
        .buffer_unordered(16)
        .collect()
        .await;
    let mut accepted = 0;
    for outcome in outcomes {
        match outcome {
            Ok(_) => accepted += 1,
            Err(status) => assert_status(
                &status,
                Code::ResourceExhausted,
                &[
                    "publish rate limit: at most 20 messages per second",
                    "retry in ",
                ],
            ),
        }
    }
    (accepted, started.elapsed())
}

/// The slowest of `samples` round trips of `user`'s messages (sent every 100 ms, within any
/// rate) to a subscriber.
async fn paced_round_trips(
    app: &TestApp,
    client: &mut ChatServiceClient<Channel>,
    token: Option<&str>,
    user: &str,
    samples: usize,
) -> Duration {
    let mut watcher = app.subscribe("quiet", "").await;
    let mut worst = Duration::ZERO;
    for i in 0..samples {
        let started = Instant::now();
        let request = SendMessageRequest {
            content: format!("ping {i}"),
            ..send_request("quiet", user, "")
        };
        client
            .send_message(with_token(request, token))
            .await
            .unwrap();
        assert_eq!(next(&mut watcher).await.content, format!("ping {i}"));
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worst
}

/// At most what a burst of 40 and 20 per second allow in `elapsed` (one more for rounding).
fn allowed_in(elapsed: Duration) -> usize {
    40 + (20.0 * elapsed.as_secs_f64()).ceil() as usize + 1
}

#[tokio::test]
async fn a_user_s_flood_is_cut_to_the_rate_while_another_user_keeps_flowing() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            allow_anonymous: vec![grpc_chat::auth::grants::GrantList::parse("quiet:sub").unwrap()],
            // One connection floods: the publish rate is what this test is about, not the
            // connection's call rate (tested below).
            limits: LimitOptions {
                call_rate: Some(0),
                ..keys.options().limits
            },
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await;
    let mallory = keys.rsa_token(claims("mallory", &["*:all"], json!({})));
    let alice = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    // The watcher reads anonymously, as "quiet" allows.
    let mut alice_client = app.new_client().await;
    let before = paced_round_trips(&app, &mut alice_client, Some(&alice), "alice", 5).await;

    let flood_client = app.new_client().await;
    let flooding = flood(&flood_client, Some(&mallory), 3000);
    let paced = paced_round_trips(&app, &mut alice_client, Some(&alice), "alice", 10);
    let ((accepted, elapsed), during) = tokio::join!(flooding, paced);
    println!(
        "mallory: {accepted} of 3000 accepted in {elapsed:?}; alice's worst round trip {during:?} \
         during the flood, {before:?} before"
    );
    assert!(accepted >= 40, "the burst passes: {accepted}");
    assert!(accepted <= allowed_in(elapsed), "{accepted} in {elapsed:?}");
    assert!(
        during < before.max(Duration::from_millis(50)) * 5,
        "alice's round trip {during:?} during the flood, {before:?} before"
    );
    assert_eq!(
        app.metric_labelled("grpc_chat_rate_limited_total", &[("limit", "publish")])
            .await,
        (3000 - accepted) as f64
    );
}

/// A connection to `server` from the loopback address `from` (127.0.0.0/8 is all loopback).
async fn channel_from(from: [u8; 4], server: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{server}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            let stream = socket.connect(server).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }))
        .await
        .unwrap()
}

#[tokio::test]
async fn with_auth_off_a_set_publish_rate_cuts_one_address_and_not_another() {
    let app = spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            limits: LimitOptions {
                publish_rate: Some(20),
                ..ServeConfig::default().auth.limits
            },
            ..ServeConfig::default().auth
        },
        ..ServeConfig::default()
    })
    .await;
    let flooder = ChatServiceClient::new(channel_from([127, 0, 0, 2], app.addr).await);
    let mut other = ChatServiceClient::new(channel_from([127, 0, 0, 3], app.addr).await);
    let before = paced_round_trips(&app, &mut other, None, "alice", 5).await;
    let ((accepted, elapsed), during) = tokio::join!(
        flood(&flooder, None, 1000),
        paced_round_trips(&app, &mut other, None, "alice", 10)
    );
    println!("127.0.0.2: {accepted} of 1000 accepted in {elapsed:?}; 127.0.0.3 worst {during:?}");
    assert!((40..=allowed_in(elapsed)).contains(&accepted), "{accepted}");
    assert!(
        during < before.max(Duration::from_millis(50)) * 5,
        "{during:?}"
    );
}

#[tokio::test]
async fn a_connection_s_calls_and_rooms_are_capped_and_a_new_connection_is_not_affected() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            limits: LimitOptions {
                call_rate: Some(10),
                max_rooms_per_connection: Some(5),
                ..keys.options().limits
            },
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await;
    let token = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    let client = app.new_client().await;
    // Five rooms on one connection are fine (two streams of one room count once), a sixth is
    // not.
    let subscribe = |room: &str| {
        let mut client = client.clone();
        let request = with_token(live(room), Some(&token));
        async move { client.subscribe_messages(request).await }
    };
    let mut streams = Vec::new();
    for room in ["a", "b", "c", "d", "e", "a"] {
        streams.push(subscribe(room).await.unwrap());
    }
    assert_status(
        &expect_err(subscribe("f").await),
        Code::ResourceExhausted,
        &["cannot read room f: one connection may read at most 5 rooms at once"],
    );
    drop(streams);
    app.metric_reaches("grpc_chat_rate_limited_total", &[("limit", "rooms")], 1.0)
        .await;

    // Seven calls so far; a burst of 100 more goes past the burst of 20 and is cut.
    let get_room = |client: &ChatServiceClient<Channel>| {
        let mut client = client.clone();
        let request = with_token(
            grpc_chat::proto::GetRoomRequest {
                room: "lobby".into(),
            },
            Some(&token),
        );
        async move { client.get_room(request).await }
    };
    let outcomes = futures_util::future::join_all((0..100).map(|_| get_room(&client))).await;
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(refused.len() >= 50, "{} refused", refused.len());
    for status in refused {
        assert_status(
            status,
            Code::ResourceExhausted,
            &["call rate limit: at most 10 new calls per second on one connection; retry in "],
        );
    }
    // Another connection has its own quota.
    get_room(&app.new_client().await).await.unwrap();
}
