//! Every request message of `chat.ChatService`, decoded from arbitrary bytes and validated as the
//! server does; what passes becomes a room event whose shared frames must give back its content.
#![no_main]

use std::{sync::LazyLock, time::SystemTime};

use grpc_chat::{
    auth::{Auth, Caller},
    config::ServeConfig,
    event::{Event, EventParts},
    grpc::{
        Encoded,
        convert::{self, Command},
    },
    monitoring::Monitoring,
    proto::{Message, MetricsRequest, SendMessageRequest, SubscribeRequest},
    protocol::PREFIX as GRPC_PREFIX,
    room::{self, Epoch, EventKind, RoomName, UserName},
    text_frame::TextFrame,
    websocket::event_text,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const MAX_CONTENT: usize = 4096;

/// A caller as every caller is with auth off (the default): anyone, under the name they give.
static ANYONE: LazyLock<Caller> = LazyLock::new(|| {
    let auth =
        Auth::new(&ServeConfig::default().auth, true, &Monitoring::new()).expect("auth is off");
    auth.caller(None, &Default::default())
        .expect("an open caller")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let _ = convert::command(&message, &ANYONE, false);
        if let Ok(Command::Say(room, said)) = convert::command(&message, &ANYONE, true)
            && room::check_content("content", &said.content, MAX_CONTENT).is_ok()
        {
            round_trip(room, said.author, &said.content);
        }
    }
    if let Ok(request) = SendMessageRequest::decode(data)
        && let (Ok(room), Ok(user), Ok(())) = (
            RoomName::parse("room", &request.room),
            UserName::parse("user", &request.user),
            room::check_content("content", &request.content, MAX_CONTENT),
        )
    {
        round_trip(room, user, &request.content);
    }
    if let Ok(request) = SubscribeRequest::decode(data) {
        let _ = RoomName::parse("room", &request.room);
        let _ = convert::start_at(
            request.from_offset,
            request.last,
            &request.epoch,
            convert::FROM_OFFSET_FIELD,
        );
    }
    let _ = MetricsRequest::decode(data);
});

/// The event made of what passed: its gRPC frame decodes to the same message, content included,
/// and its WebSocket text frame parses back to the same author and content.
fn round_trip(room: RoomName, user: UserName, content: &str) {
    let event = Event::new(EventParts {
        id: uuid::Uuid::nil(),
        room,
        epoch: Epoch::random(),
        user: user.clone(),
        content,
        kind: EventKind::Chat,
        offset: 1,
        lamport: 1,
        messages: 1,
        timestamp: SystemTime::UNIX_EPOCH,
        traceparent: None,
        reply: None,
        change: None,
        standing: None,
    });
    let frame = Encoded::event(&event);
    let decoded = Message::decode(&frame.framed()[GRPC_PREFIX..]).expect("the frame decodes");
    assert_eq!(decoded.content, content);
    assert_eq!(decoded.user, user.as_str());
    assert_eq!(event.content(), content);
    // The seed's frame, and the one with changes, both parse back to what was said.
    for changes in [false, true] {
        let text = event_text(&event, changes);
        let frame = TextFrame::parse(&text).expect("the text frame parses");
        assert_eq!(
            (frame.author.as_str(), frame.content.as_str()),
            (user.as_str(), content)
        );
    }
}
