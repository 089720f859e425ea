//! How our own clients (the CLI and `grpc-chat bench`) reach a server: the token they present on
//! every call, and the token `grpc-chat token` mints for trying auth out.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Args;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use grpc_chat::{auth::grants::Grant, room::UserName};

/// The token a client presents, from the flag, its environment twin, or a file.
#[derive(Debug, Clone, Args)]
pub struct Credentials {
    /// A JWT to present on every call (`authorization: Bearer`; on WebSockets in
    /// Sec-WebSocket-Protocol).
    #[arg(
        long,
        env = "GRPC_CHAT_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the JWT to present (read once, trailing whitespace dropped).
    #[arg(long, env = "GRPC_CHAT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl Credentials {
    /// The token to present, if any.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(token.trim().to_owned())),
            (None, Some(path)) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --token-file {}", path.display()))?;
                Ok(Some(token.trim().to_owned()))
            }
            (None, None) => Ok(None),
        }
    }

    /// What adds the token to every call.
    pub fn bearer(&self) -> anyhow::Result<BearerToken> {
        let value = self
            .token()?
            .map(|token| {
                let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
                    .parse()
                    .context("the token is not valid in a header (a JWT is ASCII)")?;
                value.set_sensitive(true);
                anyhow::Ok(value)
            })
            .transpose()?;
        Ok(BearerToken(value))
    }
}

/// How a client verifies the server over TLS (and proves itself, for mTLS).
#[derive(Debug, Clone, Args)]
pub struct TlsClientOptions {
    /// CA certificates (PEM) to verify the server with; implies TLS (an https:// address also
    /// does, with the system's roots when this is not given).
    #[arg(long, env = "GRPC_CHAT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for servers that verify clients (with --tls-key).
    #[arg(long, env = "GRPC_CHAT_CLIENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "GRPC_CHAT_CLIENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsClientOptions {
    /// An endpoint for `addr` (http:// or https://), with TLS as these options say.
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        let mut addr = addr.to_owned();
        if self.tls_ca.is_some() && addr.starts_with("http://") {
            addr = addr.replacen("http://", "https://", 1);
        }
        let endpoint = Endpoint::from_shared(addr.clone())
            .with_context(|| format!("{addr:?} is not a URL like http://host:port"))?;
        if !addr.starts_with("https://") {
            return Ok(endpoint);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls.with_enabled_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(endpoint.tls_config(tls)?)
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to the server that presents the client's token.
pub type ClientChannel = InterceptedService<Channel, BearerToken>;

/// `channel`, presenting `bearer`.
pub fn with_token(channel: Channel, bearer: &BearerToken) -> ClientChannel {
    InterceptedService::new(channel, bearer.clone())
}

/// A WebSocket request for `url` offering `token` as `bearer.<token>` beside the protocol the
/// server selects.
pub fn websocket_request(
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<tungstenite::handshake::client::Request> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        let protocols = format!(
            "{}, {}{token}",
            grpc_chat::websocket::SUBPROTOCOL,
            grpc_chat::websocket::BEARER_PROTOCOL_PREFIX
        );
        request
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocols.parse()?);
    }
    Ok(request)
}

/// Arguments of `grpc-chat token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user the token is for (its `sub`).
    #[arg(long)]
    sub: String,
    /// Room grants, PATTERN:CAPABILITIES, repeatable ('team-*:pub,sub', 'lobby:all').
    #[arg(long, value_parser = Grant::parse)]
    room: Vec<Grant>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The `aud` claim, for a server with --jwt-audience.
    #[arg(long)]
    aud: Option<String>,
    /// The `iss` claim, for a server with --jwt-issuer.
    #[arg(long)]
    iss: Option<String>,
    /// The HMAC secret to sign with (the server's --jwt-hmac-secret).
    #[arg(long, env = "GRPC_CHAT_JWT_HMAC_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the HMAC secret (the server's --jwt-hmac-secret-file).
    #[arg(
        long,
        env = "GRPC_CHAT_JWT_HMAC_SECRET_FILE",
        conflicts_with = "secret"
    )]
    secret_file: Option<PathBuf>,
}

/// Mints an HS256 token for testing, as the server with the same secret accepts it.
pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    UserName::parse("--sub", &args.sub).map_err(anyhow::Error::msg)?;
    let mut secret = match (&args.secret, &args.secret_file) {
        (Some(secret), _) => secret.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("cannot read --secret-file {}", path.display()))?,
        (None, None) => bail!(
            "no secret: pass --secret-file, or set GRPC_CHAT_JWT_HMAC_SECRET as for the server"
        ),
    };
    while secret
        .last()
        .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
    {
        secret.pop();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl.as_secs(),
        "rooms": args.room.iter().map(Grant::to_string).collect::<Vec<_>>(),
    });
    if let Some(aud) = &args.aud {
        claims["aud"] = aud.as_str().into();
    }
    if let Some(iss) = &args.iss {
        claims["iss"] = iss.as_str().into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(&secret)?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}
