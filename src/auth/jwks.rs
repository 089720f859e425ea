//! A JWKS document fetched over HTTP or HTTPS (`--jwt-jwks-url`): one bounded GET, over rustls
//! with the ring provider and the system's roots (or `--jwt-jwks-ca`).

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// A fetch gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document accepted: far above any real key set.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where the document is and how to reach it.
pub(crate) struct RemoteJwks {
    uri: Uri,
    /// `host:port` to connect to.
    address: String,
    /// For https: the connector and the name the certificate must have.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl RemoteJwks {
    /// The document at `url` (http:// or https://), verified with the CA certificates in `ca`
    /// or, without, the system's roots.
    pub(crate) fn new(url: &str, ca: Option<&Path>) -> Result<Self, String> {
        let bad = |why: &str| format!("--jwt-jwks-url {url:?}: {why}");
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must be http:// or https://")),
        };
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = if secure {
            let roots = match ca {
                Some(ca) => crate::pem::read_roots("--jwt-jwks-ca", ca)?,
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    for certificate in rustls_native_certs::load_native_certs().certs {
                        // A system root rustls cannot use is skipped, as browsers do.
                        let _ = roots.add(certificate);
                    }
                    roots
                }
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| bad("host is not a valid server name"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            address: format!("{host}:{port}"),
            uri,
            tls,
        })
    }

    /// Fetches the document.
    pub(crate) async fn fetch(&self) -> Result<JwkSet, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get())
            .await
            .map_err(|_| format!("{}: no answer within {FETCH_TIMEOUT:?}", self.uri))?
            .map_err(|error| format!("{}: {error}", self.uri))
    }

    async fn get(&self) -> Result<JwkSet, String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|error| error.to_string())?;
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|error| format!("TLS: {error}"))?,
            ),
            None => Box::new(tcp),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|error| error.to_string())?;
        let request = Request::get(self.uri.path_and_query().map_or("/", |path| path.as_str()))
            .header(header::HOST, self.address.as_str())
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        // The connection is driven here, beside its one request, and ends with it.
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| error.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|error| format!("reading the document: {error}"))?
                .to_bytes();
            serde_json::from_slice::<JwkSet>(&body)
                .map_err(|error| format!("not a JWKS document: {error}"))
        };
        let (document, _) = tokio::join!(exchange, connection);
        document
    }
}
