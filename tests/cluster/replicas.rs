//! What replicas share: rooms on every front door, positions, presence, history.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grpc_chat::proto::{MessageType, SubscribeRequest};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message as Frame};

use crate::{helpers::*, replica};

/// The next text frame of `socket`, as JSON.
async fn next_frame<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    within("a WebSocket frame", async {
        loop {
            match socket.next().await.unwrap().unwrap() {
                Frame::Text(text) => return serde_json::from_str(&text).unwrap(),
                _ => continue,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_door_delivers_across_replicas() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut on_b = subscribe_on(
        &mut connect(b.addr).await,
        SubscribeRequest {
            user: "Bob".into(),
            ..live("general")
        },
    )
    .await;
    let bob_joined = next(&mut on_b).await;
    assert_eq!(
        (bob_joined.r#type, bob_joined.user.as_str()),
        (MessageType::Join as i32, "Bob")
    );
    let (mut socket_b, _) = connect_async(format!("ws://{}/ws?roomCode=general", b.ws_addr))
        .await
        .unwrap();
    let (mut socket_a, _) = connect_async(format!("ws://{}/ws?roomCode=general", a.ws_addr))
        .await
        .unwrap();
    // Sockets carry no position: wait until both are subscribed, by a message they both see.
    let mut client_a = connect(a.addr).await;
    within("the sockets to subscribe", async {
        loop {
            client_a
                .send_message(send_request("general", "Alice", "anyone?"))
                .await
                .unwrap();
            let seen = next(&mut on_b).await;
            assert_eq!(seen.content, "anyone?");
            let mut frames = Vec::new();
            for socket in [&mut socket_a, &mut socket_b] {
                let frame =
                    tokio::time::timeout(Duration::from_millis(200), next_frame(socket)).await;
                frames.push(frame.is_ok());
            }
            if frames.iter().all(|seen| *seen) {
                return;
            }
        }
    })
    .await;
    // Drain what the sockets got from the retries above.
    let marker = client_a
        .send_message(send_request("general", "Alice", "marker"))
        .await
        .unwrap()
        .into_inner();
    for socket in [&mut socket_a, &mut socket_b] {
        while next_frame(socket).await != json!({"Author": "Alice", "Content": "marker"}) {}
    }
    while next(&mut on_b).await.offset != marker.offset {}

    // gRPC on A reaches gRPC and WebSocket on B.
    client_a
        .send_message(send_request("general", "Alice", "grpc on A"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await.content, "grpc on A");
    assert_eq!(
        next_frame(&mut socket_b).await,
        json!({"Author": "Alice", "Content": "grpc on A"})
    );
    // A WebSocket on A reaches B's subscribers.
    socket_a
        .send(Frame::Text(
            json!({"Author": "Carol", "Content": "socket on A"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let seen = next(&mut on_b).await;
    assert_eq!(
        (seen.user.as_str(), seen.content.as_str()),
        ("Carol", "socket on A")
    );
    assert_eq!(
        next_frame(&mut socket_b).await,
        json!({"Author": "Carol", "Content": "socket on A"})
    );
    // A Chat stream on B is echoed with its id and seen on A.
    let mut on_a = subscribe_on(&mut client_a, live("general")).await;
    let (chat, rx) = tokio::sync::mpsc::channel(4);
    let mut chat_b = connect(b.addr)
        .await
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    chat.send(chat_message("general", "Dave", "chat on B"))
        .await
        .unwrap();
    let seen_on_a = next_events(&mut on_a, 2).await;
    assert_eq!(seen_on_a[0].user, "Dave");
    assert_eq!(seen_on_a[0].r#type, MessageType::Join as i32);
    assert_eq!(seen_on_a[1].content, "chat on B");
    let echoed = next_events(&mut chat_b, 2).await;
    assert_eq!(
        echoed[1].id, seen_on_a[1].id,
        "one message, one id, on every replica"
    );
    // Who is here, from either replica.
    for replica in [&a, &b] {
        let state = connect(replica.addr)
            .await
            .get_room(grpc_chat::proto::GetRoomRequest {
                room: "general".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let members: Vec<&str> = state
            .members
            .iter()
            .map(|member| member.user.as_str())
            .collect();
        assert_eq!(members, ["Bob", "Dave"], "{state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_replica_with_nothing_lost() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut client_a = connect(a.addr).await;
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = client_a
            .send_message(send_request("general", "Alice", &format!("m{i}")))
            .await
            .unwrap()
            .into_inner()
            .epoch;
    }
    let mut reading = replay_from(&mut client_a, "general", 1).await;
    assert_eq!(next_events(&mut reading, 3).await[2].offset, 3);
    drop(reading);
    let mut client_b = connect(b.addr).await;
    for i in 4..=5 {
        client_b
            .send_message(send_request("general", "Alice", &format!("m{i}")))
            .await
            .unwrap();
    }
    let mut resumed = subscribe_on(
        &mut client_b,
        SubscribeRequest {
            from_offset: 4,
            epoch: epoch.clone(),
            ..live("general")
        },
    )
    .await;
    let rest = next_events(&mut resumed, 2).await;
    assert_eq!(
        rest.iter()
            .map(|m| (m.offset, m.content.as_str(), m.epoch.as_str()))
            .collect::<Vec<_>>(),
        [(4, "m4", epoch.as_str()), (5, "m5", epoch.as_str())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_its_sessions_to_the_others_and_its_clients_resume_elsewhere() {
    let nats = NatsServer::start();
    let ttl = ["--nats-presence-ttl", "2s"];
    let (mut a, b) = (replica(&nats, &ttl), replica(&nats, &ttl));
    let mut observer = subscribe_on(&mut connect(b.addr).await, live("general")).await;
    let mut alice = subscribe_on(
        &mut connect(a.addr).await,
        SubscribeRequest {
            user: "Alice".into(),
            ..live("general")
        },
    )
    .await;
    let joined = next(&mut observer).await;
    assert_eq!(
        (joined.r#type, joined.user.as_str()),
        (MessageType::Join as i32, "Alice")
    );
    let said = connect(a.addr)
        .await
        .send_message(send_request("general", "Alice", "before the crash"))
        .await
        .unwrap()
        .into_inner();
    let last_seen = next_events(&mut alice, 2).await.pop().unwrap();
    assert_eq!(last_seen.offset, said.offset);
    assert_eq!(next(&mut observer).await.offset, said.offset);

    let killed = std::time::Instant::now();
    a.child.0.kill().unwrap();
    a.child.0.wait().unwrap();
    let left = within_for(
        "the dead replica's LEAVE",
        Duration::from_secs(15),
        next(&mut observer),
    )
    .await;
    assert_eq!(
        (left.r#type, left.user.as_str()),
        (MessageType::Leave as i32, "Alice")
    );
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(4),
        "2 s TTL + 1 s sweep: took {after:?}"
    );
    // Alice's client resumes on B from where it was: the LEAVE after her message, nothing lost.
    let mut resumed = subscribe_on(
        &mut connect(b.addr).await,
        SubscribeRequest {
            from_offset: last_seen.offset + 1,
            epoch: last_seen.epoch.clone(),
            ..live("general")
        },
    )
    .await;
    let next_one = next(&mut resumed).await;
    assert_eq!(
        (next_one.offset, next_one.r#type),
        (left.offset, MessageType::Leave as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_replica_keeps_the_history() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut sent = Vec::new();
    for (i, replica) in [&a, &b, &a, &b, &a].iter().enumerate() {
        sent.push(
            connect(replica.addr)
                .await
                .send_message(send_request("general", "Alice", &format!("m{i}")))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    for mut replica in [a, b] {
        replica.terminate();
        assert!(replica.wait_exit(PATIENCE).await.success());
    }
    let again = replica(&nats, &[]);
    let mut replay = subscribe_on(
        &mut connect(again.addr).await,
        SubscribeRequest {
            from_offset: 1,
            epoch: sent[0].epoch.clone(),
            ..live("general")
        },
    )
    .await;
    let history = next_events(&mut replay, 5).await;
    assert_eq!(
        history
            .iter()
            .map(|m| (m.id.as_str(), m.offset))
            .collect::<Vec<_>>(),
        sent.iter()
            .map(|s| (s.message_id.as_str(), s.offset))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_different_replicas_get_one_order_everyone_agrees_on() {
    const EACH: usize = 100;
    let nats = NatsServer::start();
    let replicas = [replica(&nats, &[]), replica(&nats, &[])];
    let mut followers = Vec::new();
    for replica in &replicas {
        followers.push(subscribe_on(&mut connect(replica.addr).await, live("general")).await);
    }
    let mut publishers = tokio::task::JoinSet::new();
    for (index, replica) in replicas.iter().chain(replicas.iter()).enumerate() {
        let mut client = connect(replica.addr).await;
        publishers.spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..EACH {
                let sent = client
                    .send_message(send_request("general", "Alice", &format!("{index}:{i}")))
                    .await
                    .unwrap()
                    .into_inner();
                offsets.push(sent.offset);
            }
            offsets
        });
    }
    let total = (4 * EACH) as u64;
    assert_acknowledged_once(&mut publishers, total).await;
    let mut orders = Vec::new();
    for follower in &mut followers {
        let seen = next_events(follower, 4 * EACH).await;
        assert_eq!(
            seen.iter()
                .map(|message| message.offset)
                .collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        orders.push(
            seen.into_iter()
                .map(|message| message.id)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(orders[0], orders[1], "both replicas deliver one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chitty_chat_reaches_across_replicas() {
    use grpc_chat::proto::chitty_chat::{
        ChatEvent,
        chat_client::ChatClient,
        chat_event::{ChatMessage as Say, Event, UserJoin},
    };
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut on_a = subscribe_on(&mut connect(a.addr).await, live("general")).await;
    let (events, outbox) = tokio::sync::mpsc::channel(4);
    let mut on_b = ChatClient::new(channel(b.addr).await)
        .broadcast(tokio_stream::wrappers::ReceiverStream::new(outbox))
        .await
        .unwrap()
        .into_inner();
    let event = |event| ChatEvent {
        timestamp: 1,
        event: Some(event),
    };
    events
        .send(event(Event::Join(UserJoin {
            username: "eve".into(),
        })))
        .await
        .unwrap();
    let line = |message: grpc_chat::proto::chitty_chat::ChatMessage| {
        format!("{}: {}", message.username, message.message)
    };
    let joined = within("Eve's announcement", on_b.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line(joined), "SERVER: Participant eve joined Chitty-Chat");
    // On A, Eve's arrival is a JOIN of the room, then what Chitty-Chat on B says.
    let join = next(&mut on_a).await;
    assert_eq!(
        (join.r#type, join.user.as_str()),
        (MessageType::Join as i32, "eve")
    );
    events
        .send(event(Event::Message(Say {
            username: "eve".into(),
            message: "from B".into(),
        })))
        .await
        .unwrap();
    let said = next(&mut on_a).await;
    assert_eq!(
        (said.user.as_str(), said.content.as_str()),
        ("eve", "from B")
    );
    // And gRPC on A reaches Chitty-Chat on B (after Eve's own message comes back to her).
    connect(a.addr)
        .await
        .send_message(send_request("general", "Alice", "from A"))
        .await
        .unwrap();
    let mut lines = Vec::new();
    while lines
        .last()
        .is_none_or(|last: &String| last != "Alice: from A")
    {
        lines.push(line(
            within("a Chitty-Chat line", on_b.message())
                .await
                .unwrap()
                .unwrap(),
        ));
    }
    assert_eq!(lines, ["eve: from B", "Alice: from A"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_on_another_replica_or_after_a_restart_is_stored_once() {
    let nats = NatsServer::start();
    let (mut a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let keyed = || grpc_chat::proto::SendMessageRequest {
        client_message_id: "k-1".into(),
        ..send_request("general", "Alice", "once")
    };
    let send = |addr, request| async move {
        connect(addr)
            .await
            .send_message(request)
            .await
            .unwrap()
            .into_inner()
    };
    let first = send(a.addr, keyed()).await;
    // Someone else speaks first, so the retry is not the room's last message.
    send(a.addr, send_request("general", "Bob", "between")).await;
    assert_eq!(
        send(b.addr, keyed()).await,
        first,
        "retried on the other replica"
    );
    a.terminate();
    assert!(a.wait_exit(PATIENCE).await.success());
    let again = replica(&nats, &[]);
    assert_eq!(
        send(again.addr, keyed()).await,
        first,
        "retried after a restart"
    );
    let last = send(again.addr, send_request("general", "Bob", "last")).await;
    assert_eq!(last.offset, first.offset + 2, "one message per send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_quotes_a_message_sent_through_another_replica_and_both_deliver_it() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut on_a = subscribe_on(&mut connect(a.addr).await, live("general")).await;
    let question = connect(b.addr)
        .await
        .send_message(send_request("general", "Alice", "who is on call?"))
        .await
        .unwrap()
        .into_inner();
    let answer = connect(a.addr)
        .await
        .send_message(grpc_chat::proto::SendMessageRequest {
            reply_to: question.offset,
            reply_to_epoch: question.epoch.clone(),
            ..send_request("general", "Bob", "I am")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.offset, question.offset + 1);
    let mut on_b = subscribe_on(
        &mut connect(b.addr).await,
        SubscribeRequest {
            from_offset: answer.offset,
            ..live("general")
        },
    )
    .await;
    let live_copy = loop {
        let message = next(&mut on_a).await;
        if message.content == "I am" {
            break message;
        }
    };
    let replayed = next(&mut on_b).await;
    for message in [live_copy, replayed] {
        assert_eq!(
            (
                message.reply_to,
                message.reply_author.as_str(),
                message.reply_preview.as_str()
            ),
            (question.offset, "Alice", "who is on call?")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_marker_moved_on_one_replica_is_heard_and_read_on_the_other() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    for text in ["one", "two", "three"] {
        connect(a.addr)
            .await
            .send_message(send_request("general", "Bob", text))
            .await
            .unwrap();
    }
    // Alice's phone listens on replica B (its JOIN is offset 4).
    let mut phone = subscribe_on(
        &mut connect(b.addr).await,
        SubscribeRequest {
            user: "Alice".into(),
            signals: true,
            ..live("general")
        },
    )
    .await;
    let mark = |offset| grpc_chat::proto::MarkReadRequest {
        room: "general".into(),
        user: "Alice".into(),
        offset,
        epoch: String::new(),
    };
    // Her laptop, on replica A, has read two.
    let state = connect(a.addr)
        .await
        .mark_read(mark(2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((state.read_offset, state.unread), (2, 1));
    let read = loop {
        let message = next(&mut phone).await;
        if message.r#type == grpc_chat::proto::MessageType::Read as i32 {
            break message;
        }
    };
    assert_eq!(
        (read.user.as_str(), read.read_offset, read.unread),
        ("Alice", 2, 1)
    );
    // Replica B reads the same marker, and moves it only forward.
    let on_b = connect(b.addr)
        .await
        .get_read_state(grpc_chat::proto::GetReadStateRequest {
            room: "general".into(),
            user: "Alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((on_b.read_offset, on_b.unread, on_b.last_offset), (2, 1, 4));
    let back = connect(b.addr)
        .await
        .mark_read(mark(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.read_offset, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_on_one_replica_is_heard_on_the_other_and_not_stored() {
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut on_b = subscribe_on(
        &mut connect(b.addr).await,
        SubscribeRequest {
            user: "Bob".into(),
            signals: true,
            ..live("general")
        },
    )
    .await;
    let typing = |typing| grpc_chat::proto::SetTypingRequest {
        room: "general".into(),
        user: "Alice".into(),
        typing,
    };
    let mut client_a = connect(a.addr).await;
    for state in [true, false] {
        client_a.set_typing(typing(state)).await.unwrap();
        let heard = loop {
            let message = next(&mut on_b).await;
            if message.r#type == grpc_chat::proto::MessageType::Typing as i32 {
                break message;
            }
        };
        assert_eq!((heard.user.as_str(), heard.typing), ("Alice", state));
    }
    // Only Bob's JOIN is in the log.
    let room = client_a
        .get_room(grpc_chat::proto::GetRoomRequest {
            room: "general".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(room.last_offset, 1);
}

/// The message at offset 1 of `general` as a replay from the replica at `addr` serves it.
async fn first_message_on(addr: std::net::SocketAddr) -> grpc_chat::proto::Message {
    let request = SubscribeRequest {
        from_offset: 1,
        changes: true,
        ..live("general")
    };
    let mut stream = subscribe_on(&mut connect(addr).await, request).await;
    loop {
        let message = next(&mut stream).await;
        if message.offset == 1 {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_reactions_on_one_replica_are_heard_and_replayed_on_the_other() {
    use grpc_chat::proto::{DeleteMessageRequest, EditMessageRequest, ReactRequest};
    let nats = NatsServer::start();
    let (a, b) = (replica(&nats, &[]), replica(&nats, &[]));
    let mut client_a = connect(a.addr).await;
    let mut client_b = connect(b.addr).await;
    let mut on_b = subscribe_on(
        &mut client_b,
        SubscribeRequest {
            changes: true,
            ..live("general")
        },
    )
    .await;
    let first = client_a
        .send_message(send_request("general", "Alice", "helo"))
        .await
        .unwrap()
        .into_inner();
    client_b
        .send_message(send_request("general", "Bob", "hi"))
        .await
        .unwrap();
    // Alice edits on A, Bob reacts on B, Carol reacts on A; B hears all three in order.
    client_a
        .edit_message(EditMessageRequest {
            room: "general".into(),
            user: "Alice".into(),
            offset: first.offset,
            content: "hello".into(),
            ..EditMessageRequest::default()
        })
        .await
        .unwrap();
    let react = |user: &str, key: &str| ReactRequest {
        room: "general".into(),
        user: user.into(),
        offset: first.offset,
        reaction: key.into(),
        ..ReactRequest::default()
    };
    client_b.react(react("Bob", "👍")).await.unwrap();
    client_a.react(react("Carol", "👍")).await.unwrap();
    let mut heard = Vec::new();
    while heard.len() < 5 {
        let message = next(&mut on_b).await;
        if message.r#type != MessageType::System as i32 {
            heard.push((message.r#type, message.user, message.version));
        }
    }
    let (chat, edit, reaction) = (
        MessageType::Chat as i32,
        MessageType::Edit as i32,
        MessageType::Reaction as i32,
    );
    assert_eq!(
        heard,
        [
            (chat, "Alice".into(), 0),
            (chat, "Bob".into(), 0),
            (edit, "Alice".into(), 1),
            (reaction, "Bob".into(), 0),
            (reaction, "Carol".into(), 0),
        ]
    );
    // A replay serves the message as it stands, the same on both replicas.
    let standing = first_message_on(b.addr).await;
    assert_eq!((standing.content.as_str(), standing.version), ("hello", 1));
    assert_eq!(standing.reactions.len(), 1);
    assert_eq!(
        (
            standing.reactions[0].count,
            standing.reactions[0].users.clone()
        ),
        (2, vec!["Bob".to_string(), "Carol".to_string()])
    );
    assert_eq!(
        first_message_on(a.addr).await,
        standing,
        "both replicas hold the same"
    );
    // Alice deletes on B: A's replay serves the tombstone.
    client_b
        .delete_message(DeleteMessageRequest {
            room: "general".into(),
            user: "Alice".into(),
            offset: first.offset,
            ..DeleteMessageRequest::default()
        })
        .await
        .unwrap();
    let tombstone = within("the tombstone on A", async {
        loop {
            let message = first_message_on(a.addr).await;
            if message.deleted {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        (tombstone.content.as_str(), tombstone.reactions.len()),
        ("", 0)
    );
}
