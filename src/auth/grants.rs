//! What an identity may do in a room: capabilities granted per room pattern.
//!
//! A grant is written `PATTERN:CAPABILITIES`, the same in the config (`--allow-anonymous`,
//! `--allow-authenticated`), in a token's rooms claim and in `grpc-chat token --room`:
//! `team-*:publish,subscribe`, `lobby:sub`, `*:all`. A pattern is a room name in which `*`
//! stands for any run of characters. Capabilities: `subscribe` (`sub`), `publish` (`pub`, which
//! also lets one edit, delete and react to one's own messages), `history`, `presence`, or `all`
//! (those four); `moderate` (delete anyone's messages), which `all` does not include, so that no
//! grant written before it gains it; and `metrics`, which is not about rooms: any grant that has
//! it (write it `*:metrics`) lets a caller follow the server's metrics.

use std::fmt;

use crate::room::RoomName;

/// One thing a caller may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Receive a room's messages as they are published.
    Subscribe,
    /// Publish to a room.
    Publish,
    /// Replay a room's history: subscribe from an offset, resume.
    History,
    /// Be announced and listed as a room's member, and see who is there.
    Presence,
    /// Delete anyone's messages in a room.
    Moderate,
    /// Follow the server's metrics (`StreamMetrics`); not about rooms.
    Metrics,
}

impl Capability {
    /// What `all` grants: everything about rooms.
    const ALL: [Self; 4] = [
        Self::Subscribe,
        Self::Publish,
        Self::History,
        Self::Presence,
    ];
    /// Every capability, in the order they are written.
    const EVERY: [Self; 6] = [
        Self::Subscribe,
        Self::Publish,
        Self::History,
        Self::Presence,
        Self::Moderate,
        Self::Metrics,
    ];

    /// Its name in grants and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::History => "history",
            Self::Presence => "presence",
            Self::Moderate => "moderate",
            Self::Metrics => "metrics",
        }
    }

    /// What it lets a caller do to a room, for refusals ("may not publish to room R").
    pub fn action(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe to",
            Self::Publish => "publish to",
            Self::History => "read the history of",
            Self::Presence => "be present in",
            Self::Moderate => "moderate",
            Self::Metrics => "follow the metrics of",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn parse(raw: &str) -> Option<Capabilities> {
        let one = match raw {
            "all" => return Some(Capabilities(Self::ALL.iter().map(|c| c.bit()).sum())),
            "sub" | "subscribe" => Self::Subscribe,
            "pub" | "publish" => Self::Publish,
            "history" => Self::History,
            "presence" => Self::Presence,
            "moderate" => Self::Moderate,
            "metrics" => Self::Metrics,
            _ => return None,
        };
        Some(Capabilities(one.bit()))
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    /// Whether `capability` is in the set.
    pub fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Capability::EVERY
            .iter()
            .filter(|capability| self.has(**capability))
            .map(|capability| capability.name())
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Room names with `*` standing for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern(String);

impl RoomPattern {
    /// Whether `room` matches.
    pub fn matches(&self, room: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = room.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// Capabilities in the rooms a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rooms.
    pub rooms: RoomPattern,
    /// What may be done in them.
    pub capabilities: Capabilities,
}

impl Grant {
    /// Parses `PATTERN:CAPABILITIES`; the error says what is wrong and the expected form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let expected = "expected PATTERN:CAPABILITIES, e.g. 'team-*:publish,subscribe' \
                        (capabilities: subscribe, publish, history, presence, all, metrics)";
        let Some((pattern, capabilities)) = raw.rsplit_once(':') else {
            return Err(format!("{raw:?}: {expected}"));
        };
        // A pattern is a room name with `*` allowed; check it with the room-name rules.
        let probe = pattern.replace('*', "x");
        if let Err(error) = RoomName::parse("room pattern", &probe) {
            return Err(format!("{raw:?}: {error}"));
        }
        let mut set = Capabilities::default();
        for name in capabilities.split(',').map(str::trim) {
            match Capability::parse(name) {
                Some(more) => set.0 |= more.0,
                None => return Err(format!("{raw:?}: unknown capability {name:?}; {expected}")),
            }
        }
        Ok(Self {
            rooms: RoomPattern(pattern.to_owned()),
            capabilities: set,
        })
    }
}

/// Grants written as one comma-separated list, as in `--allow-anonymous`: a grant's
/// capabilities are comma separated too, so an item without `:` adds to the grant before it
/// (`public-*:sub,history,lobby:all` is two grants).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantList(Vec<Grant>);

impl GrantList {
    /// Parses the list; the error names the grant that is wrong and the expected form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut grants: Vec<String> = Vec::new();
        for item in raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            match grants.last_mut() {
                Some(grant) if !item.contains(':') => {
                    grant.push(',');
                    grant.push_str(item);
                }
                _ => grants.push(item.to_owned()),
            }
        }
        grants
            .iter()
            .map(|grant| Grant::parse(grant))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The grants.
    pub fn iter(&self) -> std::slice::Iter<'_, Grant> {
        self.0.iter()
    }
}

impl fmt::Display for Grant {
    /// The grant as it is written: `PATTERN:CAPABILITIES`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.rooms.0, self.capabilities)
    }
}

/// Whether any of `grants` has `capability`, in whatever rooms (for capabilities that are not
/// about rooms).
pub fn grants_any<'a>(grants: impl IntoIterator<Item = &'a Grant>, capability: Capability) -> bool {
    grants
        .into_iter()
        .any(|grant| grant.capabilities.has(capability))
}

/// Whether any of `grants` gives `capability` in `room`.
pub fn allows<'a>(
    grants: impl IntoIterator<Item = &'a Grant>,
    room: &RoomName,
    capability: Capability,
) -> bool {
    grants
        .into_iter()
        .any(|grant| grant.capabilities.has(capability) && grant.rooms.matches(room.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(raw: &str) -> RoomPattern {
        RoomPattern(raw.into())
    }

    #[test]
    fn patterns_match_with_stars_anywhere() {
        assert!(pattern("lobby").matches("lobby"));
        assert!(!pattern("lobby").matches("lobby2"));
        assert!(pattern("*").matches("anything"));
        assert!(pattern("team-*").matches("team-a"));
        assert!(pattern("team-*").matches("team-"));
        assert!(!pattern("team-*").matches("teams"));
        assert!(pattern("*-ops").matches("eu-ops"));
        assert!(!pattern("*-ops").matches("eu-opsx"));
        assert!(pattern("a*b*c").matches("aXbYc"));
        assert!(pattern("a*b*c").matches("abc"));
        assert!(!pattern("a*b*c").matches("acb"));
        assert!(
            !pattern("ab*ba").matches("aba"),
            "the ends must not overlap"
        );
    }

    #[test]
    fn grants_parse_their_capabilities_and_refuse_what_they_do_not_know() {
        let grant = Grant::parse("team-*:pub,sub").unwrap();
        assert_eq!(grant.to_string(), "team-*:subscribe,publish");
        assert_eq!(Grant::parse(&grant.to_string()), Ok(grant.clone()));
        assert_eq!(
            Grant::parse("*:all").unwrap().capabilities.to_string(),
            "subscribe,publish,history,presence"
        );
        let metrics = Grant::parse("*:metrics").unwrap();
        assert_eq!(metrics.to_string(), "*:metrics");
        assert!(grants_any([&metrics], Capability::Metrics));
        assert!(
            !grants_any([&grant], Capability::Metrics),
            "all is about rooms"
        );
        let room = RoomName::parse("room", "team-a").unwrap();
        assert!(allows([&grant], &room, Capability::Publish));
        assert!(!allows([&grant], &room, Capability::History));
        for bad in ["team", "team:fly", "bad room:sub", ":sub"] {
            assert!(Grant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_list_of_grants_keeps_each_grant_s_capabilities_together() {
        let list = GrantList::parse("public-*:sub,history, lobby:all,pub").unwrap();
        let written: Vec<String> = list.iter().map(Grant::to_string).collect();
        assert_eq!(
            written,
            [
                "public-*:subscribe,history",
                "lobby:subscribe,publish,history,presence"
            ]
        );
        let error = GrantList::parse("history,public-*:sub").unwrap_err();
        assert!(
            error.starts_with("\"history\": expected PATTERN:CAPABILITIES"),
            "{error}"
        );
        assert!(GrantList::parse("public-*:sub,fly").is_err());
    }
}
