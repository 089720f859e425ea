//! Who is calling, and what they may do: one verifier shared by every door.
//!
//! * [`config`]: the `--jwt-*` and `--allow-*` settings;
//! * [`keys`]: the verifying keys, reloaded without a restart; [`jwks`]: fetching a JWKS URL;
//! * [`token`]: verifying one JWT into a user name, room grants and an expiry;
//! * [`grants`]: capabilities per room pattern;
//! * [`limits`]: publish rate per identity, call rate and rooms per connection.
//!
//! Every call (and every WebSocket) becomes a [`Caller`] once, from its bearer token; its
//! handlers then ask the caller for every room it touches ([`Caller::authorize`]) and for the
//! user name to act as ([`Caller::name`]). With no key configured auth is off and every caller
//! is [`Identity::Open`]: anyone may do anything under any name but the reserved ones.

mod cache;
pub mod config;
pub mod grants;
pub(crate) mod jwks;
pub mod keys;
pub mod limits;
pub mod token;

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use metrics::Counter;
use tokio_util::sync::CancellationToken;

use self::{
    cache::VerifiedTokens,
    config::AuthOptions,
    grants::{Capability, Grant, GrantList},
    keys::Keys,
    limits::{AddressTicket, ConnectionQuota, IdentityTicket, Limits, RateKey, RoomTicket},
    token::{Refusal, Rules, Verified},
};
use crate::{
    error::ChatError,
    monitoring::{Monitoring, names},
    net::{Peer, admission::client_address},
    room::{RoomName, UserName},
};

/// The metadata (HTTP header) a token comes in.
pub const AUTHORIZATION: &str = "authorization";

/// The authentication and permission settings in force; shared by every door.
pub struct Auth {
    verifier: Option<Verifier>,
    limits: Arc<Limits>,
    /// Whether a client address tells callers without a token apart.
    addresses_identify: bool,
    anonymous: Vec<Grant>,
    authenticated: Vec<Grant>,
    /// Refusals for a missing or bad token, and for a missing permission.
    refusals: [Counter; 2],
}

/// The keys, the claim rules, and the tokens already verified.
struct Verifier {
    keys: Arc<Keys>,
    rules: Rules,
    verified: VerifiedTokens,
}

impl Verifier {
    /// Who `token` is: from the cache when it was verified with the keys in use, else verified
    /// now (and cached).
    fn verify(&self, token: &str) -> Result<Arc<Verified>, Refusal> {
        let keys = self.keys.current();
        if let Some(verified) = self.verified.get(token, keys.generation) {
            return Ok(verified);
        }
        let verified = Arc::new(self.rules.verify(&keys, token)?);
        self.verified
            .insert(token, keys.generation, Arc::clone(&verified));
        Ok(verified)
    }
}

impl Auth {
    /// Auth as configured by `options`, counted in `monitoring`; off when no key is configured.
    /// Callers without a token are told apart by their address when `addresses_identify` (no
    /// proxy in front gives every client its own address); else no limit counts them.
    pub fn new(
        options: &AuthOptions,
        addresses_identify: bool,
        monitoring: &Monitoring,
    ) -> Result<Arc<Self>, String> {
        let verifier = if options.enabled() {
            Some(Verifier {
                keys: Keys::load(options, monitoring)?,
                rules: Rules::new(options),
                verified: VerifiedTokens::default(),
            })
        } else {
            None
        };
        Ok(Arc::new(Self {
            limits: Limits::new(&options.limits, verifier.is_some(), monitoring),
            addresses_identify,
            verifier,
            anonymous: options
                .allow_anonymous
                .iter()
                .flat_map(GrantList::iter)
                .cloned()
                .collect(),
            authenticated: options
                .allow_authenticated
                .iter()
                .flat_map(GrantList::iter)
                .cloned()
                .collect(),
            refusals: ["unauthenticated", "permission_denied"]
                .map(|reason| monitoring.counter(names::AUTH_REFUSALS, &[("reason", reason)])),
        }))
    }

    /// The abuse limits, which depend on whether auth is on.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Whether tokens are checked.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// Keeps the keys in step with their files (and SIGHUP) until `stop`; nothing to do when
    /// auth is off.
    pub async fn watch_keys(self: Arc<Self>, stop: CancellationToken) {
        if let Some(verifier) = &self.verifier {
            Arc::clone(&verifier.keys).watch(stop).await;
        }
    }

    /// The caller presenting `token` (None: no token) on a request with `extensions` (its
    /// connection's [`Peer`] and quota); refused when the token is not valid, or when the
    /// connection starts calls faster than its limit.
    pub fn caller(
        self: &Arc<Self>,
        token: Option<&str>,
        extensions: &http::Extensions,
    ) -> Result<Caller, ChatError> {
        let quota = extensions.get::<Arc<ConnectionQuota>>().cloned();
        if let Some(quota) = &quota {
            quota.start_call()?;
        }
        Ok(Caller {
            identity: self.identify(token)?,
            peer: extensions.get::<Peer>().map(|peer| peer.0.ip()),
            quota,
            auth: Arc::clone(self),
        })
    }

    /// Who `token` says the caller is.
    fn identify(&self, token: Option<&str>) -> Result<Identity, ChatError> {
        Ok(match (&self.verifier, token) {
            (None, _) => Identity::Open,
            (Some(_), None) => Identity::Anonymous,
            (Some(verifier), Some(token)) => match verifier.verify(token) {
                Ok(verified) => Identity::User(verified),
                Err(Refusal::UnknownKey(reason)) if verifier.keys.fetched() => {
                    verifier.keys.unknown_kid();
                    return Err(self.unauthenticated(format!(
                        "{reason}; the key set is being fetched again, retry in a few seconds"
                    )));
                }
                Err(Refusal::Invalid(reason) | Refusal::UnknownKey(reason)) => {
                    return Err(self.unauthenticated(reason));
                }
                Err(Refusal::Forbidden(reason)) => return Err(self.denied(reason)),
            },
        })
    }

    /// The caller of a request with `headers` and `extensions`: its `authorization: Bearer`
    /// token, if any.
    pub fn caller_of(
        self: &Arc<Self>,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, ChatError> {
        if !self.enabled() {
            return self.caller(None, extensions);
        }
        let Some(value) = headers.get(AUTHORIZATION) else {
            return self.caller(None, extensions);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                self.unauthenticated("authorization: expected \"Bearer <JWT>\"".into())
            })?;
        self.caller(Some(token), extensions)
    }

    fn unauthenticated(&self, reason: String) -> ChatError {
        self.refusals[0].increment(1);
        ChatError::Unauthenticated(reason)
    }

    fn denied(&self, reason: String) -> ChatError {
        self.refusals[1].increment(1);
        ChatError::PermissionDenied(reason)
    }
}

/// A subscription's places under the caps, given back when dropped.
pub struct Places {
    _in_connection: Option<RoomTicket>,
    _of_identity: Option<IdentityTicket>,
    _from_address: Option<AddressTicket>,
}

/// Who a caller is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Auth is off: anyone may do anything, under the name they give.
    Open,
    /// Auth is on and no token came: only what `--allow-anonymous` grants.
    Anonymous,
    /// A valid token's user.
    User(Arc<Verified>),
}

/// One call's (or one WebSocket's) identity, where it comes from, and the rules it is judged
/// by; cheap to clone.
#[derive(Clone)]
pub struct Caller {
    identity: Identity,
    /// The client's address, which callers without a token are limited by.
    peer: Option<IpAddr>,
    /// Its connection's quota.
    quota: Option<Arc<ConnectionQuota>>,
    auth: Arc<Auth>,
}

impl Caller {
    /// Who it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The same caller, now presenting `token` (a WebSocket's `auth` frame).
    pub fn signed_in(&self, token: &str) -> Result<Caller, ChatError> {
        Ok(Caller {
            identity: self.auth.identify(Some(token))?,
            ..self.clone()
        })
    }

    /// The user its token names (None: it has no token).
    pub fn user(&self) -> Option<&UserName> {
        match &self.identity {
            Identity::User(user) => Some(&user.user),
            Identity::Open | Identity::Anonymous => None,
        }
    }

    /// When its token expires (None: it has none).
    pub fn expires(&self) -> Option<SystemTime> {
        match &self.identity {
            Identity::User(user) => Some(user.expires),
            Identity::Open | Identity::Anonymous => None,
        }
    }

    /// Whether it may do `capability` in `room`.
    pub fn may(&self, room: &RoomName, capability: Capability) -> bool {
        match &self.identity {
            Identity::Open => true,
            // A direct room is its pair's alone, whatever the grants say.
            Identity::Anonymous if room.is_direct() => false,
            Identity::User(user) if room.is_direct() => room.is_direct_member(&user.user),
            Identity::Anonymous => grants::allows(&self.auth.anonymous, room, capability),
            Identity::User(user) => grants::allows(
                user.grants.iter().chain(&self.auth.authenticated),
                room,
                capability,
            ),
        }
    }

    /// Whether it may delete anyone's messages in `room`: a caller with the moderate capability
    /// there. With authentication off nobody is, since anyone may take any name: a delete is
    /// then its author's alone.
    pub fn moderates(&self, room: &RoomName) -> bool {
        !matches!(self.identity, Identity::Open) && self.may(room, Capability::Moderate)
    }

    /// Refuses unless it may do `capability` in `room`: without a token UNAUTHENTICATED (a
    /// token might allow it), with one PERMISSION_DENIED.
    pub fn authorize(&self, room: &RoomName, capability: Capability) -> Result<(), ChatError> {
        if self.may(room, capability) {
            return Ok(());
        }
        let action = capability.action();
        Err(match &self.identity {
            Identity::Open => unreachable!("an open caller may do anything"),
            Identity::Anonymous => self.auth.unauthenticated(format!(
                "no token: to {action} room {room} send \"authorization: Bearer <JWT>\""
            )),
            Identity::User(user) if room.is_direct() => self.auth.denied(format!(
                "user {} may not {action} room {room}: a direct room is its two members' only",
                user.user
            )),
            Identity::User(user) => self.auth.denied(format!(
                "user {} may not {action} room {room} (needs the {} capability)",
                user.user,
                capability.name()
            )),
        })
    }

    /// The name to act as in a direct room, given `sent` in the field `field`: as
    /// [`Caller::name`], but a caller without a token while auth is on is nobody (UNAUTHENTICATED).
    pub fn direct_name(&self, field: &str, sent: &str) -> Result<UserName, ChatError> {
        match &self.identity {
            Identity::Anonymous => Err(self.auth.unauthenticated(
                "no token: a direct room is its two members' only, so it needs a token to say \
                 who you are"
                    .into(),
            )),
            Identity::Open | Identity::User(_) => self.name(field, sent),
        }
    }

    /// The name to act as, given `sent` in the field `field`: with a token, the token's user
    /// (an empty field means it; another name is PERMISSION_DENIED); without, the name sent.
    pub fn name(&self, field: &str, sent: &str) -> Result<UserName, ChatError> {
        match &self.identity {
            Identity::Open | Identity::Anonymous => UserName::parse(field, sent),
            Identity::User(user) if sent.is_empty() || sent == user.user.as_str() => {
                Ok(user.user.clone())
            }
            Identity::User(user) => {
                // Checked first, so a reserved or malformed name is refused as such.
                UserName::parse(field, sent)?;
                Err(self.auth.denied(format!(
                    "{field}: the token is for user {:?}, not {sent:?}",
                    user.user.as_str()
                )))
            }
        }
    }

    /// Whom its limits count against: a token's user by name, a caller without one by its
    /// client address (IPv6: its /64); `None` for a caller no limit can tell apart from another:
    /// without a token, behind a proxy (where every client has the proxy's address) or through no
    /// socket.
    fn rate_key(&self) -> Option<RateKey> {
        match (&self.identity, self.peer) {
            (Identity::User(user), _) => Some(RateKey::User(user.user.clone())),
            (_, Some(address)) if self.auth.addresses_identify => {
                Some(RateKey::Address(client_address(address)))
            }
            _ => None,
        }
    }

    /// Refuses a publish beyond the caller's rate.
    pub fn publish_allowed(&self) -> Result<(), ChatError> {
        match self.rate_key() {
            Some(key) => self.auth.limits.publish(&key),
            None => Ok(()),
        }
    }

    /// Refuses a signal of the caller (a read marker moved, typing) beyond its rate.
    pub fn signal_allowed(&self) -> Result<(), ChatError> {
        match self.rate_key() {
            Some(key) => self.auth.limits.signal(&key),
            None => Ok(()),
        }
    }

    /// Refuses opening `room`, which the server does not hold open, beyond the caller's rate.
    pub fn open_room_allowed(&self, room: &RoomName) -> Result<(), ChatError> {
        match self.rate_key() {
            Some(key) => self.auth.limits.open_room(&key, room),
            None => Ok(()),
        }
    }

    /// Takes the places of a subscription to `room` (`None`: a metrics stream) under the caps:
    /// among the rooms its connection reads, its identity's subscriptions and its address's,
    /// until the places are dropped.
    pub fn enter(&self, room: Option<&RoomName>) -> Result<Places, ChatError> {
        let in_connection = match (&self.quota, room) {
            (Some(quota), Some(room)) => quota.enter(room)?,
            _ => None,
        };
        let of_identity = match self.rate_key() {
            Some(key) => Some(self.auth.limits.subscribe(&key, room)?),
            None => None,
        };
        let from_address = match self.peer {
            Some(address) if self.auth.addresses_identify => {
                Some(self.auth.limits.subscribe_from(client_address(address))?)
            }
            _ => None,
        };
        Ok(Places {
            _in_connection: in_connection,
            _of_identity: of_identity,
            _from_address: from_address,
        })
    }

    /// Refuses following the server's metrics without the metrics capability (auth off: anyone
    /// may).
    pub fn authorize_metrics(&self) -> Result<(), ChatError> {
        let granted = match &self.identity {
            Identity::Open => true,
            Identity::Anonymous => grants::grants_any(&self.auth.anonymous, Capability::Metrics),
            Identity::User(user) => grants::grants_any(
                user.grants.iter().chain(&self.auth.authenticated),
                Capability::Metrics,
            ),
        };
        if granted {
            return Ok(());
        }
        Err(match &self.identity {
            Identity::User(user) => self.auth.denied(format!(
                "user {} may not follow the server's metrics (needs the metrics capability: a \
                 grant \"*:metrics\")",
                user.user
            )),
            _ => self.auth.unauthenticated(
                "no token: following the server's metrics needs a token with the metrics \
                 capability (a grant \"*:metrics\")"
                    .into(),
            ),
        })
    }
}
