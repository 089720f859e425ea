//! Chitty-Chat events decoded from arbitrary bytes and checked as the server does; a message that
//! passes is written back as a `ChatMessage` that decodes to what was said.
#![no_main]

use std::{sync::Arc, time::SystemTime};

use grpc_chat::{
    event::{Event, EventParts},
    grpc::{
        ChittyOutgoing,
        chitty::{self, Command},
    },
    proto::chitty_chat::{ChatEvent, ChatMessage},
    room::{self, Epoch, EventKind, RoomName, UserName},
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = ChatEvent::decode(data) else {
        return;
    };
    let Ok(Command::Say {
        username,
        text,
        clock,
    }) = chitty::command(event)
    else {
        return;
    };
    // The server only says it under a joined name, which followed the user-name rules, and
    // only what follows the content rules.
    let Ok(user) = UserName::parse("username", &username) else {
        return;
    };
    if room::check_content("message.message", &text, 4096).is_err() {
        return;
    }
    let outgoing = ChittyOutgoing::Event(Arc::new(Event::new(EventParts {
        id: uuid::Uuid::nil(),
        room: RoomName::parse("room", "general").expect("a valid room"),
        epoch: Epoch::random(),
        user,
        content: &text,
        kind: EventKind::Chat,
        offset: 1,
        lamport: clock + 1,
        messages: 1,
        timestamp: SystemTime::UNIX_EPOCH,
        traceparent: None,
        reply: None,
        change: None,
        standing: None,
    })));
    let bytes = outgoing.encode_to_vec();
    assert_eq!(bytes.len(), outgoing.encoded_len());
    let written = ChatMessage::decode(bytes.as_slice()).expect("the message decodes");
    assert_eq!(
        (written.timestamp, written.username, written.message),
        (clock + 1, username, text)
    );
});
