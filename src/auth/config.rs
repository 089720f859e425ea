//! Settings of authentication and room permissions, each with an environment twin. Auth is on
//! when any key is configured; with none, every door is open as before (and the names the server
//! speaks with are still reserved).

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{grants::GrantList, limits::LimitOptions};

/// Where the keys that verify tokens come from, what a token must say, and what callers may do.
#[derive(Debug, Clone, Args)]
pub struct AuthOptions {
    /// A file holding the HMAC secret tokens are signed with (HS256, HS384, HS512); a trailing
    /// newline is not part of the secret.
    #[arg(long, env = "GRPC_CHAT_JWT_HMAC_SECRET_FILE")]
    pub jwt_hmac_secret_file: Option<PathBuf>,

    /// The HMAC secret itself; prefer the environment variable or the file to the flag, which
    /// other users of the machine can see.
    #[arg(long, env = "GRPC_CHAT_JWT_HMAC_SECRET", hide_env_values = true)]
    pub jwt_hmac_secret: Option<String>,

    /// Public keys (PEM: RSA, EC P-256/P-384 or Ed25519) tokens are signed for, comma separated;
    /// each accepts only the algorithms of its type (RS*/PS*, ES256/ES384, EdDSA).
    #[arg(long, env = "GRPC_CHAT_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    pub jwt_public_keys: Vec<PathBuf>,

    /// A JWKS document (JSON) of keys picked by the token's `kid`; each key accepts its `alg` if
    /// it names one, else the algorithms of its type.
    #[arg(long, env = "GRPC_CHAT_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// A JWKS document to fetch (http:// or https://), cached and fetched again every
    /// --jwt-jwks-refresh and when a token names a key it does not hold.
    #[arg(long, env = "GRPC_CHAT_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// CA certificates (PEM) to verify an https:// --jwt-jwks-url with (default: the system's).
    #[arg(long, env = "GRPC_CHAT_JWT_JWKS_CA", requires = "jwt_jwks_url")]
    pub jwt_jwks_ca: Option<PathBuf>,

    /// How often --jwt-jwks-url is fetched again.
    #[arg(long, env = "GRPC_CHAT_JWT_JWKS_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwt_jwks_refresh: Duration,

    /// How often key files are checked for changes (they are also reloaded on SIGHUP).
    #[arg(long, env = "GRPC_CHAT_JWT_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub jwt_reload_interval: Duration,

    /// The `iss` a token must carry, if set.
    #[arg(long, env = "GRPC_CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` a token must carry (one of them), if set.
    #[arg(long, env = "GRPC_CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp`, `nbf` and `iat`.
    #[arg(long, env = "GRPC_CHAT_JWT_LEEWAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// The claim holding the user name (checked by the user-name rules).
    #[arg(long, env = "GRPC_CHAT_JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// The claim holding the token's room grants: a list of PATTERN:CAPABILITIES strings.
    #[arg(long, env = "GRPC_CHAT_JWT_ROOMS_CLAIM", default_value = "rooms")]
    pub jwt_rooms_claim: String,

    /// Grants to callers without a token, comma separated PATTERN:CAPABILITIES
    /// ('public-*:subscribe,history,lobby:all'); none by default: with auth on, a call without a
    /// token is refused.
    #[arg(long, env = "GRPC_CHAT_ALLOW_ANONYMOUS", value_parser = GrantList::parse)]
    pub allow_anonymous: Vec<GrantList>,

    /// Grants to every caller with a valid token, besides its rooms claim ('*:subscribe');
    /// none by default.
    #[arg(long, env = "GRPC_CHAT_ALLOW_AUTHENTICATED", value_parser = GrantList::parse)]
    pub allow_authenticated: Vec<GrantList>,

    /// Abuse limits per identity and per connection.
    #[command(flatten)]
    pub limits: LimitOptions,
}

impl AuthOptions {
    /// Whether any key is configured, which turns auth on.
    pub fn enabled(&self) -> bool {
        self.jwt_hmac_secret_file.is_some()
            || self.jwt_hmac_secret.is_some()
            || !self.jwt_public_keys.is_empty()
            || self.jwt_jwks_file.is_some()
            || self.jwt_jwks_url.is_some()
    }

    /// Rejects settings that cannot work, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.enabled() {
            if self.jwt_jwks_url.is_some() && self.jwt_jwks_refresh < Duration::from_secs(1) {
                return Err("--jwt-jwks-refresh must be at least 1s (for example 5m)".into());
            }
            if self.jwt_reload_interval.is_zero() {
                return Err("--jwt-reload-interval must be above 0s (for example 2s)".into());
            }
            if self.jwt_hmac_secret_file.is_some() && self.jwt_hmac_secret.is_some() {
                return Err(
                    "--jwt-hmac-secret and --jwt-hmac-secret-file: give the secret once".into(),
                );
            }
            return Ok(());
        }
        if !self.allow_anonymous.is_empty() || !self.allow_authenticated.is_empty() {
            return Err(
                "--allow-anonymous and --allow-authenticated need auth on: configure \
                        --jwt-hmac-secret-file, --jwt-public-keys, --jwt-jwks-file or --jwt-jwks-url"
                    .into(),
            );
        }
        Ok(())
    }
}
