//! gRPC length-prefixed request bodies from arbitrary bytes, cut into arbitrary chunks: the
//! server's frame reader finds the same messages however the bytes arrive.
#![no_main]

use grpc_chat::protocol::FrameReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = messages(body, &[body]);
    let chunk = usize::from(cut).max(1);
    let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
    assert_eq!(messages(body, &chunks), whole, "chunks of {chunk}");
});

/// The complete messages (flag and length) of `chunks`, and whether the body ends between two.
fn messages(_body: &[u8], chunks: &[&[u8]]) -> (Vec<u8>, usize, bool) {
    let mut reader = FrameReader::default();
    let mut flags = Vec::new();
    let mut complete = 0;
    for chunk in chunks {
        reader
            .feed::<()>(
                chunk,
                |flag| {
                    flags.push(flag);
                    Ok(())
                },
                |_| {
                    complete += 1;
                    Ok(())
                },
            )
            .expect("no rule here refuses anything");
    }
    (flags, complete, reader.at_boundary())
}
