//! The user-name rules and the look-alike comparison on arbitrary text: parsing never panics, a
//! name that looks like one the server speaks as is never accepted, looking alike is symmetric,
//! and a room's index of who is present finds exactly the names that look alike.
#![no_main]

use grpc_chat::{
    lookalike::{LookIndex, look_alike},
    room::{RESERVED_USER_NAMES, UserName},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let parsed = UserName::parse("user", a);
    if RESERVED_USER_NAMES
        .iter()
        .any(|reserved| look_alike(a, reserved))
    {
        assert!(
            parsed.is_err(),
            "{a:?} looks like a reserved name but was accepted"
        );
    }
    assert_eq!(look_alike(a, b), look_alike(b, a), "{a:?} / {b:?}");
    assert!(look_alike(a, a));
    if let (Ok(a), Ok(b)) = (parsed, UserName::parse("user", b)) {
        let mut present = LookIndex::default();
        present.insert(&a);
        let found = present.look_alike(&b);
        let expected = a != b && look_alike(a.as_str(), b.as_str());
        assert_eq!(found.is_some(), expected, "{a:?} / {b:?}");
        present.remove(&a);
        assert!(present.look_alike(&b).is_none());
    }
});
