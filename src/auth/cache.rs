//! Tokens already verified, so a client that presents the same token on every call (as clients
//! do) pays for its signature once: an RS256 verification costs about as much as the rest of a
//! SendMessage several times over. Keyed by the exact token (the same bytes carry the same
//! signature and claims), valid until the token's `exp`, emptied whenever the keys change, and
//! bounded in bytes.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use super::token::Verified;

/// Bytes of tokens the cache holds at most (each entry also holds its claims, a few hundred bytes
/// more); when full it starts over, which costs one verification per token in use.
const MAX_TOKEN_BYTES: usize = 4 * 1024 * 1024;

/// Verified tokens, for one generation of keys.
#[derive(Default)]
pub(super) struct VerifiedTokens {
    inner: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The keys' generation these were verified with.
    generation: u64,
    tokens: HashMap<Box<str>, Arc<Verified>>,
    bytes: usize,
}

impl VerifiedTokens {
    /// What `token` was verified as with the keys of `generation`, if it still holds.
    pub(super) fn get(&self, token: &str, generation: u64) -> Option<Arc<Verified>> {
        let entries = self.read();
        if entries.generation != generation {
            return None;
        }
        let verified = entries.tokens.get(token)?;
        (verified.expires > SystemTime::now()).then(|| Arc::clone(verified))
    }

    /// Remembers that `token` verified as `verified` with the keys of `generation`.
    pub(super) fn insert(&self, token: &str, generation: u64, verified: Arc<Verified>) {
        let mut entries = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.generation != generation || entries.bytes + token.len() > MAX_TOKEN_BYTES {
            *entries = Entries {
                generation,
                ..Entries::default()
            };
        }
        entries.bytes += token.len();
        entries.tokens.insert(token.into(), verified);
    }

    // Held for a lookup only, never across an await.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::room::UserName;

    fn verified(expires: SystemTime) -> Arc<Verified> {
        Arc::new(Verified {
            user: UserName::parse("sub", "alice").unwrap(),
            grants: Vec::new(),
            expires,
        })
    }

    #[test]
    fn a_token_is_remembered_for_its_keys_until_it_expires() {
        let cache = VerifiedTokens::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        cache.insert("a.b.c", 1, verified(later));
        assert!(cache.get("a.b.c", 1).is_some());
        assert!(cache.get("a.b.d", 1).is_none(), "only the exact token");
        assert!(cache.get("a.b.c", 2).is_none(), "not once the keys changed");
        cache.insert(
            "x.y.z",
            2,
            verified(SystemTime::now() - Duration::from_secs(1)),
        );
        assert!(cache.get("x.y.z", 2).is_none(), "not once it expired");
        assert!(
            cache.get("a.b.c", 1).is_none(),
            "a new generation starts over"
        );
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_bytes() {
        let cache = VerifiedTokens::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let token = "t".repeat(1024);
        for i in 0..(2 * MAX_TOKEN_BYTES / 1024) {
            cache.insert(&format!("{i}{token}"), 1, verified(later));
            assert!(cache.read().bytes <= MAX_TOKEN_BYTES);
        }
    }
}
