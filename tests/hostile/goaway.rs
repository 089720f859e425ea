//! `--max-connection-age`: a real GOAWAY at the age, streams that keep working through the grace,
//! then a notice saying where to resume and UNAVAILABLE; the client's next calls go to a new
//! connection.

use std::time::Duration;

use grpc_chat::{config::ServeConfig, proto::MessageType};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tonic::Code;

use crate::{
    helpers::*,
    raw::{H2_EMPTY_SETTINGS, H2_GOAWAY, H2_PREFACE, read_h2_frame},
};

const AGE: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(30);

async fn app() -> TestApp {
    spawn_app_with(ServeConfig {
        max_connection_age: AGE,
        max_connection_age_grace: GRACE,
        // Not what is tested here.
        idle_timeout: Duration::ZERO,
        http2_keepalive_interval: Duration::ZERO,
        ..ServeConfig::default()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_connection_gets_a_goaway_with_no_error_at_its_maximum_age() {
    let app = app().await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(&[H2_PREFACE, H2_EMPTY_SETTINGS].concat())
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    let goaway = within_for("a GOAWAY", 2 * AGE, async {
        loop {
            let frame = read_h2_frame(&mut socket)
                .await
                .expect("closed without a GOAWAY");
            if frame.kind == H2_GOAWAY {
                return frame;
            }
        }
    })
    .await;
    let age = opened.elapsed();
    assert!(
        age >= AGE && age < AGE + Duration::from_secs(1),
        "GOAWAY at {age:?}"
    );
    let error_code = u32::from_be_bytes(goaway.payload[4..8].try_into().unwrap());
    assert_eq!(error_code, 0, "NO_ERROR: a graceful close");
}

#[tokio::test(start_paused = true)]
async fn streams_get_the_grace_then_a_resume_notice_and_new_calls_a_new_connection() {
    let app = app().await;
    let mut client = app.new_client().await;
    let mut stream = subscribe_on(&mut client, live("general")).await;
    app.send("general", "Alice", "one").await;
    assert_eq!(next(&mut stream).await.offset, 1);

    // Past the age, within the grace: the stream still delivers.
    tokio::time::sleep(AGE + GRACE / 2).await;
    app.send("general", "Alice", "two").await;
    assert_eq!(next(&mut stream).await.offset, 2);
    // New calls on the same client go to a new connection meanwhile. (tonic's client fails the
    // first call it makes after a GOAWAY with CANCELLED, then reconnects: retried once, as a
    // client with a retry policy would.)
    let three = send_request("general", "Alice", "three");
    if let Err(status) = client.send_message(three.clone()).await {
        assert_eq!(status.code(), Code::Cancelled, "{status:?}");
        client.send_message(three).await.unwrap();
    }
    assert_eq!(next(&mut stream).await.offset, 3);

    let notice = within_for("the notice", GRACE, stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.r#type, MessageType::System as i32);
    assert_eq!(
        (notice.resume_from, notice.epoch.len()),
        (4, 8),
        "{notice:?}"
    );
    assert_eq!(
        notice.content,
        format!(
            "this connection reached its maximum age; reconnect with from_offset=4 epoch={} to \
             resume",
            notice.epoch
        )
    );
    assert_status(
        &final_status(&mut stream).await,
        Code::Unavailable,
        &["maximum age"],
    );
    // The advice holds: resuming there misses nothing.
    let mut resumed = subscribe_on(
        &mut client,
        grpc_chat::proto::SubscribeRequest {
            from_offset: 4,
            epoch: notice.epoch.clone(),
            ..live("general")
        },
    )
    .await;
    app.send("general", "Alice", "four").await;
    assert_eq!(next(&mut resumed).await.offset, 4);
    assert!(
        app.metric_labelled(
            "grpc_chat_connections_closed_total",
            &[("listener", "grpc"), ("reason", "max_age")]
        )
        .await
            >= 2.0,
        "the test's connection and the subscriber's"
    );
}
