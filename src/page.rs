//! The chat page: a single-page client at `/` on the WebSocket port, built from `web/` into
//! `web/dist/` (committed, so building the server needs no Node) and embedded in the binary.
//!
//! The page speaks gRPC-Web to `chat.ChatService`. Where it sends its calls is decided when it
//! is served, without configuration: a request that came through a proxy (it carries
//! `Forwarded` or `X-Forwarded-*`) gets its own origin, since that proxy serves gRPC-Web beside
//! the page (Envoy in the compose stack); a direct request gets the page's host on the gRPC
//! port. `--web-grpc-url` names another place. The scripts and styles are served under names
//! holding their content's hash, cached for a year; the page itself is never cached, and its
//! Content-Security-Policy allows only those assets and calls to where it sends them.

use std::sync::{Arc, LazyLock};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The page, with `{{…}}` placeholders filled in when it is served.
const TEMPLATE: &str = include_str!("../web/index.html");
/// The bundled script (`web/src/chat.ts` and its libraries), as is and gzipped.
const SCRIPT: &[u8] = include_bytes!("../web/dist/chat.js");
const SCRIPT_GZIP: &[u8] = include_bytes!("../web/dist/chat.js.gz");
/// The page's styles, as is and gzipped.
const STYLE: &[u8] = include_bytes!("../web/dist/chat.css");
const STYLE_GZIP: &[u8] = include_bytes!("../web/dist/chat.css.gz");

/// How long browsers may keep an asset: its name changes with its content.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Request headers by which a proxy says it forwarded the request.
const FORWARDED_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-proto", "x-forwarded-host"];

/// An embedded file, named by its content.
struct Asset {
    /// `chat.<hash>.js`.
    name: String,
    content_type: &'static str,
    body: &'static [u8],
    /// The same, gzipped, for browsers that accept it.
    gzipped: &'static [u8],
}

impl Asset {
    fn new(
        stem: &str,
        extension: &str,
        content_type: &'static str,
        [body, gzipped]: [&'static [u8]; 2],
    ) -> Self {
        let hash = crate::digest::sha256_hex(&[body], 6);
        Self {
            name: format!("{stem}.{hash}.{extension}"),
            content_type,
            body,
            gzipped,
        }
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset::new(
            "chat",
            "js",
            "text/javascript; charset=utf-8",
            [SCRIPT, SCRIPT_GZIP],
        ),
        Asset::new(
            "chat",
            "css",
            "text/css; charset=utf-8",
            [STYLE, STYLE_GZIP],
        ),
    ]
});

/// Where the page sends its gRPC-Web calls.
#[derive(Debug, Clone)]
pub(crate) enum GrpcWebTarget {
    /// Decided per request: the page's own origin behind a proxy, else its host on the gRPC
    /// port.
    Auto {
        /// The gRPC port.
        grpc_port: u16,
        /// Whether that port speaks TLS.
        tls: bool,
    },
    /// This URL (`--web-grpc-url`).
    Url(String),
}

/// What the page needs to know of the server.
#[derive(Debug, Clone)]
pub(crate) struct PageSettings {
    /// Where gRPC-Web calls go.
    pub grpc_web: GrpcWebTarget,
    /// The token claim naming the user when tokens are accepted; `None` with auth off.
    pub user_claim: Option<String>,
    /// Longest message content, in bytes of UTF-8.
    pub max_content_bytes: usize,
}

/// The page at `/` and its assets under `/assets/`.
pub(crate) fn router(settings: PageSettings) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/{name}", get(asset))
        .with_state(Arc::new(Pages::render(&settings)))
}

/// The page as served, rendered once for each way it may be reached.
struct Pages {
    /// For a request a proxy forwarded.
    proxied: Rendered,
    /// For a direct request.
    direct: Rendered,
}

/// One rendering of the page and its Content-Security-Policy.
struct Rendered {
    html: String,
    policy: HeaderValue,
}

impl Pages {
    fn render(settings: &PageSettings) -> Self {
        // The value the page reads from its `grpc-chat-grpc-web` meta tag: empty for its own
        // origin, `:PORT` for its own host on that port, or a URL; and the origin CSP lets it
        // call.
        let (proxied, direct) = match &settings.grpc_web {
            GrpcWebTarget::Url(url) => {
                let target = (url.clone(), origin_of(url));
                (target.clone(), target)
            }
            GrpcWebTarget::Auto { grpc_port, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                (
                    (String::new(), "'self'".to_owned()),
                    (format!(":{grpc_port}"), format!("{scheme}://*:{grpc_port}")),
                )
            }
        };
        Self {
            proxied: Rendered::new(settings, proxied),
            direct: Rendered::new(settings, direct),
        }
    }
}

impl Rendered {
    fn new(settings: &PageSettings, (target, connect_src): (String, String)) -> Self {
        let [script, style] = &*ASSETS;
        let html = TEMPLATE
            .replace("{{script}}", &format!("/assets/{}", script.name))
            .replace("{{style}}", &format!("/assets/{}", style.name))
            .replace("{{grpc_web}}", &escape_attribute(&target))
            .replace(
                "{{user_claim}}",
                &escape_attribute(settings.user_claim.as_deref().unwrap_or("")),
            )
            .replace(
                "{{max_content_bytes}}",
                &settings.max_content_bytes.to_string(),
            );
        let policy = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect_src}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        // The policy is built from the configured URL's origin (checked by its parser) and a
        // port number; one that could not be a header would only fail closed.
        let policy = HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
        Self { html, policy }
    }
}

async fn page(State(pages): State<Arc<Pages>>, headers: HeaderMap) -> Response {
    let proxied = FORWARDED_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name));
    let page = if proxied {
        &pages.proxied
    } else {
        &pages.direct
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CONTENT_SECURITY_POLICY, page.policy.clone()),
        ],
        page.html.clone(),
    )
        .into_response()
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let gzip = accepts_gzip(&headers);
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::VARY, "accept-encoding"),
        ],
        if gzip { asset.gzipped } else { asset.body },
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` takes gzip (named, or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `scheme://host[:port]` of an absolute URL (checked by `--web-grpc-url`'s parser).
fn origin_of(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => "'none'".to_owned(),
        },
        Err(_) => "'none'".to_owned(),
    }
}

/// `value` safe inside a double-quoted HTML attribute.
fn escape_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Parses `--web-grpc-url`: an absolute `http` or `https` URL with no path beyond `/`.
pub(crate) fn parse_grpc_web_url(raw: &str) -> Result<String, String> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|error| format!("{raw:?} is not a URL: {error}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(authority))
            if uri.path() == "/" && uri.query().is_none() && !authority.as_str().contains('@') =>
        {
            Ok(raw.trim_end_matches('/').to_owned())
        }
        _ => Err(format!(
            "{raw:?} must be an http:// or https:// origin such as https://chat.example.com"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_their_content_hash() {
        let [script, style] = &*ASSETS;
        assert!(script.name.starts_with("chat.") && script.name.ends_with(".js"));
        assert_eq!(script.name.len(), "chat..js".len() + 12);
        assert_ne!(
            Asset::new("chat", "js", "", [b"a", b""]).name,
            Asset::new("chat", "js", "", [b"b", b""]).name
        );
        assert!(style.name.ends_with(".css"));
    }

    #[test]
    fn grpc_web_urls_are_origins() {
        assert_eq!(
            parse_grpc_web_url("https://chat.example.com/"),
            Ok("https://chat.example.com".to_owned())
        );
        assert_eq!(
            parse_grpc_web_url("http://127.0.0.1:50051"),
            Ok("http://127.0.0.1:50051".to_owned())
        );
        for bad in [
            "chat.example.com",
            "ftp://chat.example.com",
            "https://chat.example.com/api",
            "https://user@chat.example.com",
            "https://chat.example.com/?a=b",
        ] {
            assert!(parse_grpc_web_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            origin_of("https://chat.example.com:8443"),
            "https://chat.example.com:8443"
        );
    }

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        let accepting = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accepting("gzip, deflate, br, zstd"));
        assert!(accepting("br;q=1.0, GZIP;q=0.5"));
        assert!(accepting("*"));
        assert!(!accepting("br"));
        assert!(!accepting("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn attributes_are_escaped() {
        assert_eq!(
            escape_attribute(r#""><script>&"#),
            "&quot;&gt;&lt;script&gt;&amp;"
        );
    }
}
