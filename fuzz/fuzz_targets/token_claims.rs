//! Arbitrary bytes as the claims of a correctly signed token: the verifier never panics (time
//! claims of any size included), and accepts only claims that meet every rule: a required
//! audience and issuer present and matching, an expiry that is a whole number of seconds, not past
//! and not beyond what the server's clock holds, and a valid user name.
#![no_main]

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use grpc_chat::{
    auth::{
        config::AuthOptions,
        keys::KeySet,
        token::{MAX_TIME_CLAIM, Refusal, Rules},
    },
    config::ServeConfig,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SECRET: &str = "the fuzzer signs every input with this secret, 32+ bytes";
const AUDIENCE: &str = "chat";
const ISSUER: &str = "https://issuer.example";

static OPTIONS: LazyLock<AuthOptions> = LazyLock::new(|| AuthOptions {
    jwt_hmac_secret: Some(SECRET.into()),
    jwt_audience: Some(AUDIENCE.into()),
    jwt_issuer: Some(ISSUER.into()),
    ..ServeConfig::default().auth
});
static KEYS: LazyLock<KeySet> = LazyLock::new(|| KeySet::load(&OPTIONS).expect("the secret"));
static RULES: LazyLock<Rules> = LazyLock::new(|| Rules::new(&OPTIONS));
static SIGNING: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key"));

/// `claims` signed with the server's secret.
fn signed(claims: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &SIGNING, Algorithm::HS256)
        .expect("HMAC signs anything");
    format!("{message}.{signature}")
}

/// Whether `claims` holds `expected` as its audience (a string, or a list holding it).
fn has_audience(claims: &Map<String, Value>) -> bool {
    match claims.get("aud") {
        Some(Value::String(audience)) => audience == AUDIENCE,
        Some(Value::Array(audiences)) => audiences.iter().any(|a| a == AUDIENCE),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let token = signed(data);
    match RULES.verify(&KEYS, &token) {
        Err(
            Refusal::Invalid(reason) | Refusal::UnknownKey(reason) | Refusal::Forbidden(reason),
        ) => assert!(!reason.is_empty()),
        Ok(verified) => {
            let claims: Map<String, Value> =
                serde_json::from_slice(data).expect("accepted claims are a JSON object");
            assert!(has_audience(&claims), "accepted without the audience");
            assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
            let exp = claims["exp"].as_u64().expect("a whole number of seconds");
            assert!(exp <= MAX_TIME_CLAIM);
            assert_eq!(
                verified.expires,
                UNIX_EPOCH + std::time::Duration::from_secs(exp)
            );
            let now = SystemTime::now();
            let leeway = OPTIONS.jwt_leeway;
            assert!(
                verified.expires + leeway >= now,
                "accepted after its expiry"
            );
            assert_eq!(
                claims.get("sub").and_then(Value::as_str),
                Some(verified.user.as_str())
            );
        }
    }
});
