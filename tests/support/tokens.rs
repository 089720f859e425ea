//! Real signing keys made by openssl for each test, the server settings that trust them, and
//! tokens signed with them (and forged ones).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use grpc_chat::auth::config::AuthOptions;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The audience the test server expects.
pub const AUDIENCE: &str = "grpc-chat";
/// The issuer the test server expects.
pub const ISSUER: &str = "https://issuer.test";
/// The `kid` of the JWKS key.
pub const JWKS_KID: &str = "ec-1";

/// A directory of keys: an RSA key pair whose public half the server trusts as a PEM file, an EC
/// P-256 key pair it trusts through a JWKS document, and an HMAC secret it does not trust.
pub struct TokenKeys {
    pub dir: PathBuf,
    pub rsa_private: Vec<u8>,
    pub rsa_public: PathBuf,
    pub ec_private: Vec<u8>,
    pub jwks: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A new EC P-256 private key in `dir`, named `name`.
fn ec_key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
}

/// The JWKS entry of the EC public key in `pem` (uncompressed point from its DER).
fn ec_jwk(dir: &Path, kid: &str, private: &str) -> Value {
    let der = dir.join(format!("{kid}.pub.der"));
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            private,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    let der = std::fs::read(der).unwrap();
    // A P-256 SubjectPublicKeyInfo ends with the 65-byte point 04 || x || y.
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4);
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    })
}

impl TokenKeys {
    /// Generates fresh keys in a directory of their own.
    pub fn generate() -> Self {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "grpc-chat-keys-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pem",
            ],
        );
        openssl(
            &dir,
            &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
        );
        ec_key(&dir, "ec.pem");
        let jwks = dir.join("jwks.json");
        write_jwks(&jwks, &[ec_jwk(&dir, JWKS_KID, "ec.pem")]);
        Self {
            rsa_private: std::fs::read(dir.join("rsa.pem")).unwrap(),
            rsa_public: dir.join("rsa.pub.pem"),
            ec_private: std::fs::read(dir.join("ec.pem")).unwrap(),
            jwks,
            dir,
        }
    }

    /// Settings trusting the RSA key and the JWKS, for audience [`AUDIENCE`] and issuer
    /// [`ISSUER`].
    pub fn options(&self) -> AuthOptions {
        AuthOptions {
            jwt_public_keys: vec![self.rsa_public.clone()],
            jwt_jwks_file: Some(self.jwks.clone()),
            jwt_audience: Some(AUDIENCE.into()),
            jwt_issuer: Some(ISSUER.into()),
            jwt_reload_interval: Duration::from_millis(100),
            ..grpc_chat::config::ServeConfig::default().auth
        }
    }

    /// A new EC key pair `kid` in the directory: its private key and its JWKS entry.
    pub fn new_ec_key(&self, kid: &str) -> (Vec<u8>, Value) {
        let private = format!("{kid}.pem");
        ec_key(&self.dir, &private);
        (
            std::fs::read(self.dir.join(&private)).unwrap(),
            ec_jwk(&self.dir, kid, &private),
        )
    }

    /// An RS256 token with `claims` over the defaults (user `sub`, the audience, an hour left).
    pub fn rsa_token(&self, claims: Value) -> String {
        sign(
            Header::new(Algorithm::RS256),
            &EncodingKey::from_rsa_pem(&self.rsa_private).unwrap(),
            claims,
        )
    }

    /// An ES256 token naming the JWKS key.
    pub fn jwks_token(&self, claims: Value) -> String {
        ec_token(&self.ec_private, JWKS_KID, claims)
    }
}

/// Replaces the JWKS document at `path` with `keys`, in one rename so a reader never sees half.
pub fn write_jwks(path: &Path, keys: &[Value]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(staged, path).unwrap();
}

/// Seconds since the epoch, `offset` from now.
pub fn at(offset: i64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now.checked_add_signed(offset).unwrap()
}

/// The claims of a token for `user` granted `rooms`, valid for an hour, over which `extra` is
/// laid.
pub fn claims(user: &str, rooms: &[&str], extra: Value) -> Value {
    let mut claims = json!({
        "sub": user, "aud": AUDIENCE, "iss": ISSUER, "iat": at(0), "exp": at(3600), "rooms": rooms,
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut claims, extra) {
        base.extend(extra);
    }
    claims
}

/// `claims` signed with `key` under `header`.
pub fn sign(header: Header, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// An ES256 token signed with the EC key `private`, naming it `kid`.
pub fn ec_token(private: &[u8], kid: &str, claims: Value) -> String {
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(Algorithm::ES256)
    };
    sign(header, &EncodingKey::from_ec_pem(private).unwrap(), claims)
}

/// An unsigned token (`alg: none`) with `claims`.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// An HS256 token keyed with the bytes of a public key file: algorithm confusion.
pub fn keyed_with_public_key(public_key: &Path, claims: Value) -> String {
    sign(
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(&std::fs::read(public_key).unwrap()).unwrap(),
        claims,
    )
}

/// `message` as a request presenting `token`, if any (`authorization: Bearer`).
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}
