//! Verifying a JWT: the key its header picks, the algorithms that key allows, the registered
//! claims, then the user name and room grants it carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{config::AuthOptions, grants::Grant, keys::KeySet};
use crate::room::UserName;

/// Longest token accepted, in bytes: far above any real one, and a bound on the work a caller
/// can make the server do before it is refused.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who a valid token says its caller is.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The user name, from the configured claim.
    pub user: UserName,
    /// The room grants of its rooms claim.
    pub grants: Vec<Grant>,
    /// Its `exp`.
    pub expires: SystemTime,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It could not be verified: the reason, for UNAUTHENTICATED.
    Invalid(String),
    /// It names a key (`kid`) that is not held: UNAUTHENTICATED, and maybe a reason to fetch
    /// the keys again.
    UnknownKey(String),
    /// It is valid but names an identity nobody may have: for PERMISSION_DENIED.
    Forbidden(String),
}

/// What a token must say besides its signature.
#[derive(Debug, Clone)]
pub struct Rules {
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    user_claim: String,
    rooms_claim: String,
}

impl Rules {
    /// The rules of `options`.
    pub fn new(options: &AuthOptions) -> Self {
        Self {
            issuer: options.jwt_issuer.clone(),
            audience: options.jwt_audience.clone(),
            leeway: options.jwt_leeway,
            user_claim: options.jwt_user_claim.clone(),
            rooms_claim: options.jwt_rooms_claim.clone(),
        }
    }

    /// Verifies `token` with `keys`.
    pub fn verify(&self, keys: &KeySet, token: &str) -> Result<Verified, Refusal> {
        let invalid = |reason: String| Refusal::Invalid(reason);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "token too long: at most {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid(header_problem(token)))?;
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => {
                let named: Vec<_> = keys
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(Refusal::UnknownKey(format!("unknown key id (kid) {kid:?}")));
                }
                named
            }
            None => keys.keys.iter().filter(|key| key.kid.is_none()).collect(),
        };
        let candidates: Vec<_> = candidates
            .into_iter()
            .filter(|key| key.algorithms.contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted by the key{} (each key accepts only the \
                 algorithms of its type)",
                header.alg,
                header
                    .kid
                    .as_ref()
                    .map_or(String::new(), |kid| format!(" {kid:?}"))
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        // A configured audience or issuer is required, not only checked when present: a token
        // without it may be meant for another service that trusts the same keys.
        let required: Vec<&str> = std::iter::once("exp")
            .chain(self.audience.is_some().then_some("aud"))
            .chain(self.issuer.is_some().then_some("iss"))
            .collect();
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.validate_aud = self.audience.is_some();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let mut last = ErrorKind::InvalidSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(error) => last = error.into_kind(),
            }
        }
        Err(invalid(self.describe(&last)))
    }

    /// What `error` means to the caller.
    fn describe(&self, error: &ErrorKind) -> String {
        match error {
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::ExpiredSignature => "token expired (exp is past)".into(),
            ErrorKind::ImmatureSignature => "token not valid yet (nbf is in the future)".into(),
            ErrorKind::InvalidAudience => format!(
                "wrong audience: expected {:?}",
                self.audience.as_deref().unwrap_or_default()
            ),
            ErrorKind::InvalidIssuer => format!(
                "wrong issuer: expected {:?}",
                self.issuer.as_deref().unwrap_or_default()
            ),
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "aud" => format!(
                    "missing claim \"aud\": this server requires audience {:?}",
                    self.audience.as_deref().unwrap_or_default()
                ),
                "iss" => format!(
                    "missing claim \"iss\": this server requires issuer {:?}",
                    self.issuer.as_deref().unwrap_or_default()
                ),
                _ => format!("missing claim {claim:?}"),
            },
            ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim:?}"),
            _ => "malformed token".into(),
        }
    }

    /// The identity the verified `claims` give.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Verified, Refusal> {
        let now = SystemTime::now();
        if let Some(issued) = claims.get("iat") {
            let issued = issued
                .as_u64()
                .ok_or_else(|| Refusal::Invalid("malformed claim \"iat\"".into()))?;
            // A time past what the clock can hold is in the future too.
            if time_claim(issued).is_none_or(|issued| issued > now + self.leeway) {
                return Err(Refusal::Invalid(
                    "token issued in the future (iat is ahead of the server's clock)".into(),
                ));
            }
        }
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| Refusal::Invalid("malformed claim \"exp\"".into()))?;
        let expires = time_claim(expires).ok_or_else(|| {
            Refusal::Invalid(format!(
                "claim \"exp\" is too far in the future: at most {MAX_TIME_CLAIM} (the year \
                 9999)"
            ))
        })?;
        let claim = &self.user_claim;
        let Some(name) = claims.get(claim).and_then(Value::as_str) else {
            return Err(Refusal::Invalid(format!(
                "the token has no user name: claim {claim:?} must be a string"
            )));
        };
        let user = UserName::parse(claim, name)
            .map_err(|error| Refusal::Forbidden(format!("token claim {error}")))?;
        let grants = match claims.get(&self.rooms_claim) {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries
                .iter()
                .map(|entry| {
                    entry
                        .as_str()
                        .ok_or_else(|| "not a string".to_owned())
                        .and_then(Grant::parse)
                })
                .collect::<Result<_, _>>()
                .map_err(|error| {
                    Refusal::Invalid(format!("claim {:?}: {error}", self.rooms_claim))
                })?,
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "claim {:?} must be a list of PATTERN:CAPABILITIES strings",
                    self.rooms_claim
                )));
            }
        };
        Ok(Verified {
            user,
            grants,
            expires,
        })
    }
}

/// The latest time a time claim may name (the end of the year 9999, in seconds since the epoch):
/// beyond it a claim is refused rather than turned into a time the clock cannot hold.
pub const MAX_TIME_CLAIM: u64 = 253_402_300_799;

/// The time a claim of `seconds` since the epoch names, if it is at most [`MAX_TIME_CLAIM`].
fn time_claim(seconds: u64) -> Option<SystemTime> {
    (seconds <= MAX_TIME_CLAIM).then(|| UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Why a token's header could not be read: an unsigned token (`alg: none`) is named as such.
fn header_problem(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .and_then(|header| header.get("alg").and_then(Value::as_str).map(str::to_owned));
    match alg {
        Some(alg) if alg.eq_ignore_ascii_case("none") => {
            "unsigned tokens (alg \"none\") are not accepted".into()
        }
        Some(alg) => format!("unsupported algorithm {alg:?}"),
        None => "malformed token: expected a JWT (header.payload.signature)".into(),
    }
}
