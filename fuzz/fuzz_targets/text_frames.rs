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
    let encoded = TextFrame::encode(&frame.author, &frame.content);
    let again = TextFrame::parse(&encoded).expect("an encoded frame parses");
    assert_eq!(again, frame);
});
