//! WebSocket text frames from arbitrary text, parsed and validated as the server does; encoding
//! what parsed gives the same frame back.
#![no_main]

use grpc_chat::{
    room::{self, UserName},
    text_frame::TextFrame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = TextFrame::parse(text) else {
        return;
    };
    let _ = UserName::parse("Author", &frame.author);
    let _ = room::check_content("Content", &frame.content, 4096);
    // The server writes the two fields every client reads (a reply's come from the log).
    let encoded = TextFrame::encode(&frame.author, &frame.content, None);
    let again = TextFrame::parse(&encoded).expect("an encoded frame parses");
    assert_eq!((again.author, again.content), (frame.author, frame.content));
});
