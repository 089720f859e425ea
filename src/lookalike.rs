//! Names compared by what they look like, so that nobody can pass for the server or for another
//! person with a name that differs only in characters that look the same.
//!
//! Two names look alike when they share a *look key*. A name has two: its confusable skeleton
//! (Unicode Technical Standard #39, section 4: normalised, default-ignorable characters removed,
//! each character replaced by its prototype from Unicode's confusables table) with every letter's
//! case folded, and the same of the name case-folded first. The first catches `Systеm` (a
//! Cyrillic е), `Ｓｙｓｔｅｍ` (full width), `𝐒ystem` (mathematical bold), `SΕRVΕR` (Greek Ε) and
//! `Ilya` against `llya` (a capital I against a small L); the second catches what only case
//! folding joins, such as `ſystem` (a long s, whose prototype is f) against `system`. Case is
//! folded by upper-casing, then lower-casing, each character (`ſ` → `S` → `s`, `ß` → `SS` → `ss`).

use std::{collections::HashMap, sync::LazyLock};

use unicode_security::confusable_detection::skeleton;

use crate::{error::ChatError, room::UserName};

/// The look keys of a name; two names look alike when any key of one is a key of the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookKeys {
    /// The folded skeleton of the name as written.
    written: String,
    /// The folded skeleton of the name case-folded first; often the same as `written`.
    folded: String,
}

impl LookKeys {
    /// The keys of `name`.
    pub fn of(name: &str) -> Self {
        Self {
            written: fold(&skeleton_of(name)),
            folded: fold(&skeleton_of(&fold(name))),
        }
    }

    /// Its keys, without repeats.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.written.as_str())
            .chain((self.folded != self.written).then_some(self.folded.as_str()))
    }

    /// Whether a name of these keys looks like one of `other`.
    pub fn matches(&self, other: &LookKeys) -> bool {
        self.iter()
            .any(|key| other.iter().any(|theirs| theirs == key))
    }
}

/// The skeleton of each ASCII character where it is ASCII too (`m` is `rn`, `0` is `O`, `I` is
/// `l`; `%` is not): a name of such characters has these put together as its skeleton. Most
/// names take this path, in a tenth of the time.
static ASCII_SKELETONS: LazyLock<Vec<Option<String>>> = LazyLock::new(|| {
    (0..128u8)
        .map(|byte| {
            let prototype: String = skeleton(&char::from(byte).to_string()).collect();
            prototype.is_ascii().then_some(prototype)
        })
        .collect()
});

/// The confusable skeleton of `text`.
fn skeleton_of(text: &str) -> String {
    let ascii: Option<String> = text
        .bytes()
        .map(|byte| ASCII_SKELETONS.get(usize::from(byte))?.as_deref())
        .collect();
    ascii.unwrap_or_else(|| skeleton(text).collect())
}

/// `text` with each character's case folded: upper-cased, then lower-cased.
fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `a` and `b` look alike.
pub fn look_alike(a: &str, b: &str) -> bool {
    LookKeys::of(a).matches(&LookKeys::of(b))
}

/// Names present in a room, by their look keys: who a newcomer looks like, at the cost of a
/// lookup rather than a look at everyone.
#[derive(Debug, Default)]
pub struct LookIndex(HashMap<String, UserName>);

impl LookIndex {
    /// The name here that `name` looks like without being it.
    pub fn look_alike(&self, name: &UserName) -> Option<&UserName> {
        LookKeys::of(name.as_str())
            .iter()
            .filter_map(|key| self.0.get(key))
            .find(|present| *present != name)
    }

    /// Adds `name` (which looks like nobody here).
    pub fn insert(&mut self, name: &UserName) {
        for key in LookKeys::of(name.as_str()).iter() {
            self.0.insert(key.to_owned(), name.clone());
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &UserName) {
        for key in LookKeys::of(name.as_str()).iter() {
            self.0.remove(key);
        }
    }
}

/// Of the names `present`, the one `name` looks like without being it.
pub fn look_alike_among<'a>(
    name: &UserName,
    present: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let keys = LookKeys::of(name.as_str());
    present
        .into_iter()
        .find(|other| *other != name.as_str() && keys.matches(&LookKeys::of(other)))
}

/// The refusal of `user` in `room`, where `present` is, who looks the same.
pub fn refusal(user: &UserName, present: &str, room: impl std::fmt::Display) -> ChatError {
    ChatError::AlreadyExists(format!(
        "user name {user:?} looks like {present:?}, who is in room {room}: a name must not be \
         mistaken for another's"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_system_or_server_look_alike() {
        for spoof in [
            "System",
            "system",
            "SYSTEM",
            "Ｓｙｓｔｅｍ",
            "Systеm",
            "Ѕystem",
            "𝐒ystem",
            "ſystem",
            "Sуstem",
            "Systern",
        ] {
            assert!(look_alike(spoof, "System"), "{spoof}");
        }
        for spoof in ["SERVER", "server", "ＳＥＲＶＥＲ", "SΕRVΕR", "ЅERVER"] {
            assert!(look_alike(spoof, "SERVER"), "{spoof}");
        }
    }

    #[test]
    fn the_ascii_path_gives_the_skeleton_unicode_gives() {
        let printable: Vec<char> = (' '..='~').collect();
        for a in &printable {
            for b in &printable {
                let text = format!("x{a}{b}");
                assert_eq!(
                    skeleton_of(&text),
                    skeleton(&text).collect::<String>(),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn people_who_look_alike_and_people_who_do_not() {
        assert!(look_alike("alice", "аlice"), "a Cyrillic а");
        assert!(look_alike("Ilya", "llya"), "a capital I and a small L");
        assert!(look_alike("Alice", "alice"), "case");
        assert!(look_alike("modern", "rnodern"), "r n and m");
        assert!(!look_alike("alice", "alicia"));
        assert!(!look_alike("bob", "rob"));
        assert!(!look_alike("Zoë", "Zoe"), "a diaeresis is seen");
        assert!(!look_alike("Łukasz", "Lukasz"), "a stroke is seen");
        assert!(!look_alike("张伟", "李伟"));
    }
}
