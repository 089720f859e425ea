//! Room names as NATS subject tokens and key-value keys, one to one.
//!
//! Room names allow `A-Z a-z 0-9 _ - .`, and `.` separates subject tokens, so a name is escaped:
//! `_` becomes `__` and `.` becomes `_d`. Every `_` of a token starts an escape, so two names never
//! share a token. The token is also a valid key-value key.

use crate::room::RoomName;

/// The one subject token (and key) of `room`.
pub(crate) fn token(room: &RoomName) -> String {
    let mut token = String::with_capacity(room.as_str().len() + 4);
    for c in room.as_str().chars() {
        match c {
            '_' => token.push_str("__"),
            '.' => token.push_str("_d"),
            c => token.push(c),
        }
    }
    token
}

/// The room whose token `token` is, if it is one.
pub(crate) fn room_of(token: &str) -> Option<RoomName> {
    let mut name = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => name.push('_'),
                'd' => name.push('.'),
                _ => return None,
            },
            c => name.push(c),
        }
    }
    RoomName::parse("room", &name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_one_to_one_and_hold_no_separator() {
        let names = [
            "general",
            "a.b",
            "a_d",
            "a__b",
            "_",
            ".",
            "x_.y",
            "team-1.dev_ops",
        ];
        let tokens: Vec<String> = names
            .iter()
            .map(|name| token(&RoomName::parse("room", name).unwrap()))
            .collect();
        for (name, token) in names.iter().zip(&tokens) {
            assert!(!token.contains('.'), "{token}");
            assert_eq!(room_of(token).unwrap().as_str(), *name);
        }
        let distinct: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert_eq!(room_of("a_x"), None);
        assert_eq!(room_of("a_"), None);
    }
}
