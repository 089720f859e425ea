//! Which web pages may call the public ports. Browsers name the page a request comes from in
//! `Origin` (on every WebSocket handshake and every gRPC-Web call); clients that are not browsers
//! send none and are not affected.
//!
//! By default only the server's own pages may: an origin whose host is the host the request was
//! sent to (`Host`, or `:authority` over HTTP/2), when that host is an IP address or `localhost`.
//! Refused are a page of any other site, and a page that points a DNS name of its own at the
//! server (DNS rebinding: there the origin and `Host` are both the attacker's name, so only a name
//! the operator listed can be trusted). Why it matters: with auth off every room is open to
//! whoever reaches the port, so without this any page a person visits could read and write the
//! rooms of every chat server that person's browser reaches, an internal one say; with auth on it
//! could still use whatever `--allow-anonymous` grants. A server reached by a DNS name lists the
//! origins of its pages (`https://chat.example.com`); `*` lets every page in.

use std::{net::IpAddr, sync::Arc};

use http::{HeaderMap, HeaderValue, Uri, header, uri::Authority};

/// Whether a page may call another port of its host (gRPC-Web from the chat page on the
/// WebSocket port) or only its own (a WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The origin's port must be the one called.
    Same,
    /// Any port of the same host.
    Any,
}

/// The origins browsers may call from: `--ws-allowed-origins`, `--cors-allowed-origins`.
#[derive(Debug, Clone)]
pub struct BrowserOrigins {
    any: bool,
    listed: Arc<[String]>,
    ports: Ports,
}

impl BrowserOrigins {
    /// The policy of a flag's values: `*` for any page, exact origins, or none for the server's
    /// own pages only (on `ports`).
    pub fn new(configured: &[String], ports: Ports) -> Self {
        Self {
            any: configured.iter().any(|origin| origin == "*"),
            listed: configured
                .iter()
                .filter(|origin| !origin.is_empty() && *origin != "*")
                .cloned()
                .collect(),
            ports,
        }
    }

    /// Whether every page may call.
    pub fn any(&self) -> bool {
        self.any
    }

    /// Whether a request to `uri` with `headers` may be served: it comes from no page, or from
    /// one that may call.
    pub fn allow(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        self.any || self.listed_or_own(origin, target(uri, headers).as_ref())
    }

    fn listed_or_own(&self, origin: &HeaderValue, target: Option<&Authority>) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.listed.iter().any(|listed| listed == origin) {
            return true;
        }
        let (Some(target), Ok(origin)) = (target, origin.parse::<Uri>()) else {
            return false;
        };
        let (Some(scheme), Some(page)) = (origin.scheme_str(), origin.authority()) else {
            return false;
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let same_port =
            || page.port_u16().unwrap_or(default_port) == target.port_u16().unwrap_or(default_port);
        page.host().eq_ignore_ascii_case(target.host())
            && not_rebindable(page.host())
            && (self.ports == Ports::Any || same_port())
    }
}

/// The authority a request was sent to: its URI's (HTTP/2), else its `Host`.
fn target(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    uri.authority().cloned().or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
    })
}

/// Whether `host` is a name no web page can point elsewhere: an IP address or `localhost`
/// (which browsers resolve to loopback themselves).
fn not_rebindable(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str, origin: Option<&str>) -> (Uri, HeaderMap) {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        ("/ws".parse().unwrap(), headers)
    }

    fn allows(policy: &BrowserOrigins, host: &str, origin: Option<&str>) -> bool {
        let (uri, headers) = request(host, origin);
        policy.allow(&uri, &headers)
    }

    #[test]
    fn by_default_only_the_server_s_own_pages_may_call() {
        let own = BrowserOrigins::new(&[], Ports::Same);
        assert!(allows(&own, "127.0.0.1:8080", None), "not a browser");
        assert!(allows(
            &own,
            "127.0.0.1:8080",
            Some("http://127.0.0.1:8080")
        ));
        assert!(allows(
            &own,
            "localhost:8080",
            Some("http://localhost:8080")
        ));
        assert!(allows(&own, "[::1]:8080", Some("http://[::1]:8080")));
        assert!(allows(&own, "10.0.0.5", Some("http://10.0.0.5")));
        assert!(allows(&own, "10.0.0.5:443", Some("https://10.0.0.5")));
        assert!(!allows(&own, "127.0.0.1:8080", Some("http://evil.example")));
        assert!(!allows(
            &own,
            "127.0.0.1:8080",
            Some("http://127.0.0.1:3000")
        ));
        assert!(!allows(&own, "127.0.0.1:8080", Some("null")));
        assert!(
            !allows(&own, "evil.example:8080", Some("http://evil.example:8080")),
            "DNS rebinding: a name is trusted only when listed"
        );
        let other_ports = BrowserOrigins::new(&[], Ports::Any);
        assert!(allows(
            &other_ports,
            "127.0.0.1:50051",
            Some("http://127.0.0.1:8080")
        ));
        assert!(!allows(
            &other_ports,
            "127.0.0.1:50051",
            Some("http://10.0.0.9:8080")
        ));
    }

    #[test]
    fn listed_origins_and_any_page() {
        let listed = BrowserOrigins::new(&["https://chat.example.com".into()], Ports::Same);
        assert!(allows(
            &listed,
            "chat.example.com",
            Some("https://chat.example.com")
        ));
        assert!(allows(
            &listed,
            "10.0.0.5",
            Some("https://chat.example.com")
        ));
        assert!(!allows(
            &listed,
            "evil.example",
            Some("https://evil.example")
        ));
        let any = BrowserOrigins::new(&["*".into()], Ports::Same);
        assert!(any.any());
        assert!(allows(&any, "evil.example", Some("https://evil.example")));
    }
}
