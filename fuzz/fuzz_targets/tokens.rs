//! Arbitrary bytes presented as a bearer token: the verifier refuses what is not a valid token
//! without panicking, and never accepts one without the key's signature.
#![no_main]

use std::sync::LazyLock;

use grpc_chat::{
    auth::{
        config::AuthOptions,
        keys::KeySet,
        token::{Refusal, Rules},
    },
    config::ServeConfig,
};
use libfuzzer_sys::fuzz_target;

/// A server's settings with an HMAC secret the fuzzer does not know.
static OPTIONS: LazyLock<AuthOptions> = LazyLock::new(|| AuthOptions {
    jwt_hmac_secret: Some("a secret no input is signed with, 32 bytes or more".into()),
    ..ServeConfig::default().auth
});
static KEYS: LazyLock<KeySet> = LazyLock::new(|| KeySet::load(&OPTIONS).expect("the secret"));
static RULES: LazyLock<Rules> = LazyLock::new(|| Rules::new(&OPTIONS));

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match RULES.verify(&KEYS, token) {
        Err(
            Refusal::Invalid(reason) | Refusal::UnknownKey(reason) | Refusal::Forbidden(reason),
        ) => {
            assert!(!reason.is_empty());
        }
        Ok(verified) => panic!("an unsigned input was accepted as {verified:?}"),
    }
});
