//! The keys tokens are verified with, loaded from the configured files and swapped whole when a
//! file changes or on SIGHUP; a reload that fails keeps the keys in use.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet},
};
use metrics::Counter;
use tokio_util::sync::CancellationToken;

use super::config::AuthOptions;
use crate::monitoring::{Monitoring, names};

/// One key and the algorithms it accepts.
pub struct VerifyingKey {
    /// The `kid` a token names it by (JWKS keys only).
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// The only algorithms a token verified with it may use.
    pub algorithms: Vec<Algorithm>,
}

/// Every key in use.
#[derive(Default)]
pub struct KeySet {
    /// The keys, in the order they were configured.
    pub keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Loads every configured key; the error names the file and what is wrong with it.
    pub fn load(options: &AuthOptions) -> Result<Self, String> {
        let mut keys = Vec::new();
        let secret = match (&options.jwt_hmac_secret, &options.jwt_hmac_secret_file) {
            (Some(secret), _) => Some(secret.as_bytes().to_vec()),
            (None, Some(path)) => {
                let mut secret = read(path)?;
                while secret
                    .last()
                    .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
                {
                    secret.pop();
                }
                Some(secret)
            }
            (None, None) => None,
        };
        if let Some(secret) = secret {
            // Shorter than the hash it keys, an HMAC secret can be guessed offline (RFC 7518
            // section 3.2 asks for at least as many bits as the hash output).
            if secret.len() < 32 {
                return Err(format!(
                    "the HMAC secret must be at least 32 bytes (got {})",
                    secret.len()
                ));
            }
            let key = DecodingKey::from_secret(&secret).map_err(|error| error.to_string())?;
            keys.push(VerifyingKey {
                kid: None,
                key,
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            });
        }
        for path in &options.jwt_public_keys {
            keys.push(public_key(path)?);
        }
        if let Some(path) = &options.jwt_jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(path)?)
                .map_err(|error| format!("{}: not a JWKS document: {error}", path.display()))?;
            for jwk in &set.keys {
                keys.push(jwks_key(jwk).map_err(|error| format!("{}: {error}", path.display()))?);
            }
        }
        Ok(Self { keys })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// Reads one type of PEM public key.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// A PEM public key; its type decides its algorithms.
fn public_key(path: &Path) -> Result<VerifyingKey, String> {
    let pem = read(path)?;
    let text = String::from_utf8_lossy(&pem);
    let attempts: [(PemParser, &[Algorithm]); 3] = [
        (
            DecodingKey::from_rsa_pem,
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        ),
        (
            DecodingKey::from_ec_pem,
            &[Algorithm::ES256, Algorithm::ES384],
        ),
        (DecodingKey::from_ed_pem, &[Algorithm::EdDSA]),
    ];
    if text.contains("PRIVATE KEY") {
        return Err(format!(
            "{}: a private key; give the public key (openssl pkey -pubout)",
            path.display()
        ));
    }
    attempts
        .iter()
        .find_map(|(parse, algorithms)| {
            parse(&pem).ok().map(|key| VerifyingKey {
                kid: None,
                key,
                algorithms: algorithms.to_vec(),
            })
        })
        .ok_or_else(|| {
            format!(
                "{}: not a PEM RSA, EC (P-256, P-384) or Ed25519 public key",
                path.display()
            )
        })
}

/// A JWKS key: it accepts its `alg` when it names one, else its family's algorithms.
fn jwks_key(jwk: &Jwk) -> Result<VerifyingKey, String> {
    let Some(kid) = jwk.common.key_id.clone() else {
        return Err("every JWKS key needs a kid".into());
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("key {kid:?}: {error}"))?;
    let algorithms = match jwk.common.key_algorithm {
        Some(named) => {
            let algorithm: Algorithm = named
                .to_string()
                .parse()
                .map_err(|_| format!("key {kid:?}: {named} is not a signing algorithm"))?;
            if algorithm.family() != key.family() {
                return Err(format!(
                    "key {kid:?}: alg {named} does not fit its key type"
                ));
            }
            vec![algorithm]
        }
        None => key.family().algorithms().to_vec(),
    };
    Ok(VerifyingKey {
        kid: Some(kid),
        key,
        algorithms,
    })
}

/// The keys in use, shared by every door and swapped whole on reload.
pub struct Keys {
    current: ArcSwap<KeySet>,
    options: AuthOptions,
    /// Reloads that worked and that failed.
    reloads: [Counter; 2],
}

impl Keys {
    /// Loads the configured keys; reloads are counted in `monitoring`.
    pub fn load(options: &AuthOptions, monitoring: &Monitoring) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(KeySet::load(options)?),
            options: options.clone(),
            reloads: ["ok", "error"]
                .map(|result| monitoring.counter(names::AUTH_KEY_RELOADS, &[("result", result)])),
        }))
    }

    /// The keys as they are now.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Loads the keys again; on failure the keys in use stay.
    pub fn reload(&self, why: &str) {
        match KeySet::load(&self.options) {
            Ok(keys) => {
                tracing::info!(why, keys = keys.keys.len(), "token keys reloaded");
                self.current.store(Arc::new(keys));
                self.reloads[0].increment(1);
            }
            Err(error) => {
                tracing::error!(why, %error, "token keys not reloaded; the keys in use stay");
                self.reloads[1].increment(1);
            }
        }
    }

    /// The key files, to watch.
    fn files(&self) -> Vec<PathBuf> {
        let options = &self.options;
        options
            .jwt_hmac_secret_file
            .iter()
            .chain(&options.jwt_public_keys)
            .chain(&options.jwt_jwks_file)
            .cloned()
            .collect()
    }

    /// Reloads the keys when a key file changes (checked every `--jwt-reload-interval`) and on
    /// SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let files = self.files();
        crate::reload::on_change(files, self.options.jwt_reload_interval, stop, |why| {
            self.reload(why);
        })
        .await;
    }
}
