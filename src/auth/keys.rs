//! The keys tokens are verified with, loaded from the configured files and swapped whole when a
//! file changes or on SIGHUP; a reload that fails keeps the keys in use.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet},
};
use metrics::Counter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{config::AuthOptions, jwks::RemoteJwks};
use crate::monitoring::{Monitoring, names};

/// Fetches asked for by unknown key ids are at least this far apart.
pub const REFETCH_SPACING: Duration = Duration::from_secs(5);

/// One key and the algorithms it accepts.
#[derive(Clone)]
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
    /// Which set this is: it changes whenever the keys do, so what was verified with an older
    /// set can be told apart.
    pub generation: u64,
}

impl KeySet {
    /// Loads the keys of every configured file; the error names the file and what is wrong
    /// with it.
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
            keys.extend(jwks_keys(&set).map_err(|error| format!("{}: {error}", path.display()))?);
        }
        Ok(Self {
            keys,
            generation: 0,
        })
    }
}

/// The keys of a JWKS document.
fn jwks_keys(set: &JwkSet) -> Result<Vec<VerifyingKey>, String> {
    set.keys.iter().map(jwks_key).collect()
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

/// The keys in use, shared by every door and swapped whole on reload: those of the files and
/// those fetched from `--jwt-jwks-url`.
pub struct Keys {
    current: ArcSwap<KeySet>,
    /// The two parts `current` is made of, as last loaded. Held only to swap one part, never
    /// across an await.
    parts: Mutex<Parts>,
    options: AuthOptions,
    remote: Option<RemoteJwks>,
    /// Asks the fetch task for the document now (a token named a key we do not hold).
    refetch: Notify,
    /// Reloads that worked and that failed.
    reloads: [Counter; 2],
}

#[derive(Default)]
struct Parts {
    files: Vec<VerifyingKey>,
    remote: Vec<VerifyingKey>,
    /// Of the set last published.
    generation: u64,
}

impl Keys {
    /// Loads the configured key files (a JWKS URL is fetched by [`Keys::watch`]); reloads are
    /// counted in `monitoring`.
    pub fn load(options: &AuthOptions, monitoring: &Monitoring) -> Result<Arc<Self>, String> {
        let files = KeySet::load(options)?;
        let remote = options
            .jwt_jwks_url
            .as_deref()
            .map(|url| RemoteJwks::new(url, options.jwt_jwks_ca.as_deref()))
            .transpose()?;
        Ok(Arc::new(Self {
            parts: Mutex::new(Parts {
                files: files.keys.clone(),
                ..Parts::default()
            }),
            current: ArcSwap::from_pointee(files),
            options: options.clone(),
            remote,
            refetch: Notify::new(),
            reloads: ["ok", "error"]
                .map(|result| monitoring.counter(names::AUTH_KEY_RELOADS, &[("result", result)])),
        }))
    }

    /// The keys as they are now.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Whether keys are fetched from a URL, so an unknown `kid` may be known soon.
    pub fn fetched(&self) -> bool {
        self.remote.is_some()
    }

    /// A token named a key we do not hold: fetch the document again (at most every
    /// [`REFETCH_SPACING`]).
    pub fn unknown_kid(&self) {
        if self.remote.is_some() {
            self.refetch.notify_one();
        }
    }

    /// Replaces one part of the keys and publishes both.
    fn publish(&self, update: impl FnOnce(&mut Parts)) {
        let mut parts = self
            .parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        update(&mut parts);
        parts.generation += 1;
        let keys = parts.files.iter().chain(&parts.remote).cloned().collect();
        self.current.store(Arc::new(KeySet {
            keys,
            generation: parts.generation,
        }));
    }

    fn counted<T>(&self, why: &str, outcome: Result<T, String>) -> Option<T> {
        match outcome {
            Ok(value) => {
                self.reloads[0].increment(1);
                Some(value)
            }
            Err(error) => {
                tracing::error!(why, %error, "token keys not reloaded; the keys in use stay");
                self.reloads[1].increment(1);
                None
            }
        }
    }

    /// Loads the key files again; on failure the keys in use stay.
    pub fn reload(&self, why: &str) {
        if let Some(files) = self.counted(why, KeySet::load(&self.options)) {
            tracing::info!(why, keys = files.keys.len(), "token keys reloaded");
            self.publish(|parts| parts.files = files.keys);
        }
    }

    /// Fetches the JWKS URL; on failure the keys in use stay.
    async fn refetch(&self, remote: &RemoteJwks, why: &str) {
        let fetched = remote.fetch().await.and_then(|set| jwks_keys(&set));
        if let Some(keys) = self.counted(why, fetched) {
            tracing::info!(why, keys = keys.len(), "token keys fetched");
            self.publish(|parts| parts.remote = keys);
        }
    }

    /// Fetches the JWKS URL now, every `--jwt-jwks-refresh`, and when asked by
    /// [`Keys::unknown_kid`], until `stop`.
    async fn keep_fetching(&self, stop: &CancellationToken) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut ticks = tokio::time::interval(self.options.jwt_jwks_refresh);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None::<tokio::time::Instant>;
        loop {
            let why = tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => "refresh",
                () = self.refetch.notified() => "a token named an unknown key",
            };
            // A stream of tokens with made-up key ids must not become a stream of fetches.
            if let Some(last) = last
                && why != "refresh"
                && last.elapsed() < REFETCH_SPACING
            {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(last + REFETCH_SPACING) => {}
                }
            }
            last = Some(tokio::time::Instant::now());
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.refetch(remote, why) => {}
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
    /// SIGHUP, and keeps the JWKS URL's fetched, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let files = self.files();
        let watch_files = crate::reload::on_change(
            files,
            self.options.jwt_reload_interval,
            stop.clone(),
            |why| {
                self.reload(why);
            },
        );
        tokio::join!(watch_files, self.keep_fetching(&stop));
    }
}
