//! TLS on the public ports (gRPC, gRPC-Web and Chitty-Chat on one, WebSockets on the other):
//! rustls with the ring provider, ALPN `h2` and `http/1.1`, and optionally client certificates
//! verified against a CA (mTLS). The certificate, its key and the client CA are read from PEM
//! files and the whole configuration is swapped when one changes or on SIGHUP; connections
//! already open keep the configuration they were accepted with.

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use clap::Args;
use metrics::Counter;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::monitoring::{Monitoring, names};

/// The `--tls-*` settings.
#[derive(Debug, Clone, Args)]
pub struct TlsOptions {
    /// The server's certificate chain (PEM), leaf first; turns TLS on for the gRPC and
    /// WebSocket ports (with --tls-key). The admin port stays plain HTTP.
    #[arg(long, env = "GRPC_CHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "GRPC_CHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) client certificates must be signed by: with it, a client without
    /// a valid certificate is refused during the handshake (mTLS).
    #[arg(long, env = "GRPC_CHAT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the certificate, key and client CA files are checked for changes (they are
    /// also reloaded on SIGHUP).
    #[arg(long, env = "GRPC_CHAT_TLS_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
}

impl TlsOptions {
    /// Rejects settings that cannot work, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.tls_cert.is_some() && self.tls_reload_interval.is_zero() {
            return Err("--tls-reload-interval must be above 0s (for example 2s)".into());
        }
        Ok(())
    }

    /// The files the configuration is read from.
    fn files(&self) -> Vec<PathBuf> {
        self.tls_cert
            .iter()
            .chain(&self.tls_key)
            .chain(&self.tls_client_ca)
            .cloned()
            .collect()
    }
}

/// One configuration, per what a listener speaks.
struct Configs {
    /// ALPN `h2` and `http/1.1`: the gRPC port.
    http2: Arc<ServerConfig>,
    /// ALPN `http/1.1` only: the WebSocket port, whose clients must not pick HTTP/2.
    http1: Arc<ServerConfig>,
}

impl Configs {
    fn load(options: &TlsOptions) -> Result<Self, String> {
        let mut http1 = server_config(options)?;
        let mut http2 = http1.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        http2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            http2: Arc::new(http2),
            http1: Arc::new(http1),
        })
    }
}

/// The TLS configuration in use, shared by the public listeners.
pub struct Tls {
    current: ArcSwap<Configs>,
    options: TlsOptions,
    /// Reloads that worked and that failed.
    reloads: [Counter; 2],
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The configuration of `options`, or None when TLS is off; reloads counted in
    /// `monitoring`. The error names the file and what is wrong with it.
    pub fn load(
        options: &TlsOptions,
        monitoring: &Monitoring,
    ) -> Result<Option<Arc<Self>>, String> {
        if options.tls_cert.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            current: ArcSwap::from_pointee(Configs::load(options)?),
            options: options.clone(),
            reloads: ["ok", "error"]
                .map(|result| monitoring.counter(names::TLS_RELOADS, &[("result", result)])),
        })))
    }

    /// An acceptor with the configuration as it is now, offering HTTP/2 in ALPN or not.
    pub fn acceptor(&self, http2: bool) -> TlsAcceptor {
        let configs = self.current.load();
        TlsAcceptor::from(Arc::clone(if http2 {
            &configs.http2
        } else {
            &configs.http1
        }))
    }

    fn reload(&self, why: &str) {
        match Configs::load(&self.options) {
            Ok(config) => {
                tracing::info!(why, "TLS certificate reloaded");
                self.current.store(Arc::new(config));
                self.reloads[0].increment(1);
            }
            Err(error) => {
                tracing::error!(why, %error, "TLS certificate not reloaded; the one in use stays");
                self.reloads[1].increment(1);
            }
        }
    }

    /// Reloads when a file changes or on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let interval = self.options.tls_reload_interval;
        crate::reload::on_change(self.options.files(), interval, stop, |why| self.reload(why))
            .await;
    }
}

/// Reads the files of `options` into a server configuration.
fn server_config(options: &TlsOptions) -> Result<ServerConfig, String> {
    let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) else {
        return Err("--tls-cert and --tls-key go together".into());
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("--tls-cert {}: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("--tls-key {}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let builder = match &options.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = crate::pem::read_roots("--tls-client-ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|error| format!("--tls-client-ca {}: {error}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|error| format!("--tls-key does not fit --tls-cert: {error}"))
}
