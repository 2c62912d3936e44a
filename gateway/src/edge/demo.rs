//! The demo chat page, the browser client, and demo tokens.
//!
//! Most people meet Switchboard through `gateway --standalone` and a browser,
//! so every gateway serves a small chat page at `/` and the JavaScript client
//! at `/switchboard.js`. Both are compiled into the binary from `clients/js/`:
//! the binary is all one needs, and the page always matches the gateway.
//!
//! The page needs a token for whatever name its user picks. When the gateway
//! generated its own secret, nobody else can sign tokens for it, so it mints
//! short-lived ones at `/demo/token` — but only for callers presenting the
//! demo token printed at start-up, so reaching the port is not enough to speak
//! as anyone. With a configured secret or key, tokens are the application's
//! business and the endpoint does not exist.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};

use crate::session::auth::token_from_request;

/// The user of the printed demo token.
pub const DEMO_USER: &str = "demo";
/// Lifetime of the printed demo token.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a minted token: short, the client fetches a new one as needed.
pub const MINTED_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// What the page needs to be served, and the minter when tokens may be minted.
pub struct Demo {
    minter: Option<Minter>,
}

/// Mints tokens with the gateway's generated secret, for holders of the demo token.
pub struct Minter {
    secret: Vec<u8>,
    demo_token: String,
    demo_exp: i64,
}

/// A file compiled into the binary.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../clients/js/demo/index.html"),
    },
    Asset {
        path: "/demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../clients/js/demo/demo.js"),
    },
    Asset {
        path: "/demo.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../clients/js/demo/demo.css"),
    },
    Asset {
        path: "/switchboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../clients/js/switchboard.js"),
    },
    Asset {
        path: "/switchboard.d.ts",
        content_type: "application/typescript; charset=utf-8",
        body: include_bytes!("../../../clients/js/switchboard.d.ts"),
    },
];

/// The page loads only its own files and talks only to its own gateway.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                           img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl Demo {
    /// `minter` is `Some` only when the gateway generated its own secret.
    pub fn new(minter: Option<Minter>) -> Self {
        Self { minter }
    }

    /// Answers `req` if its path is one of the demo's, else `None`.
    pub fn respond<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let path = req.uri().path();
        if path == "/demo/token" {
            let minter = self.minter.as_ref()?;
            return Some(match *req.method() {
                Method::GET => minter.respond(req),
                _ => method_not_allowed("GET"),
            });
        }
        let asset = ASSETS.iter().find(|a| a.path == path)?;
        Some(match *req.method() {
            Method::GET | Method::HEAD => serve(asset, req),
            _ => method_not_allowed("GET, HEAD"),
        })
    }
}

impl Minter {
    /// A minter for `secret`, with a fresh demo token valid for a day.
    pub fn new(secret: &[u8]) -> Self {
        let demo_exp = now_secs() + DEMO_TOKEN_TTL.as_secs() as i64;
        let demo_token = mint(secret, DEMO_USER, demo_exp);
        Self { secret: secret.to_vec(), demo_token, demo_exp }
    }

    /// The token to print; it also unlocks `/demo/token`.
    pub fn demo_token(&self) -> &str {
        &self.demo_token
    }

    /// `GET /demo/token?user=<id>` with `Authorization: Bearer <demo token>`.
    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        // Only the header: a token in this URL would end up in browser history.
        let presented = token_from_request(req.headers(), None);
        let authorized =
            presented.is_some_and(|t| shell::grpc::constant_time_eq(t.as_bytes(), self.demo_token.as_bytes()));
        if !authorized || now_secs() >= self.demo_exp {
            let mut r = text(StatusCode::UNAUTHORIZED, "present the demo token printed by the gateway\n");
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return r;
        }
        let user = req.uri().query().and_then(|q| query_param(q, "user"));
        let Some(user) = user.filter(|u| proto::subject::valid_id(u)) else {
            return text(StatusCode::BAD_REQUEST, format!("user must be {}\n", proto::subject::ID_RULE));
        };
        let exp = now_secs() + MINTED_TOKEN_TTL.as_secs() as i64;
        let body = serde_json::json!({ "token": mint(&self.secret, &user, exp), "user": user, "exp": exp });
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/json")
            // A credential: never to be stored by a cache.
            .header(CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("static response parts are valid")
    }
}

/// An HS256 token for `sub`, expiring at `exp` (seconds since the epoch).
pub fn mint(secret: &[u8], sub: &str, exp: i64) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: i64,
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims { sub, exp },
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing cannot fail")
}

fn serve<B>(asset: &Asset, req: &Request<B>) -> Response<Full<Bytes>> {
    // `no-cache` means "revalidate": cheap with the ETag, and a browser never
    // runs a page or client older than the gateway it talks to.
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let mut builder = Response::builder()
        .header(CONTENT_TYPE, asset.content_type)
        .header(CACHE_CONTROL, "no-cache")
        .header(ETAG, &etag)
        .header("x-content-type-options", "nosniff");
    if asset.path == "/" {
        // The page's URL carries a token: keep it out of Referer headers.
        builder = builder
            .header("content-security-policy", PAGE_POLICY)
            .header("referrer-policy", "no-referrer")
            .header("x-frame-options", "DENY");
    } else {
        // Lets applications on other origins import the client from the gateway.
        builder = builder.header("access-control-allow-origin", "*");
    }
    let (status, body) =
        if fresh { (StatusCode::NOT_MODIFIED, Bytes::new()) } else { (StatusCode::OK, Bytes::from_static(asset.body)) };
    builder.status(status).body(Full::new(body)).expect("static response parts are valid")
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut().insert("allow", HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// The percent-decoded value of `name` in a query string. Ids never contain
/// `+`, so it is left alone rather than read as a space.
fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a: a stable content hash for ETags (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn now_secs() -> i64 {
    proto::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_decodes_percent_escapes() {
        assert_eq!(query_param("user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(query_param("x=1&user=a%3Ab%40c", "user").as_deref(), Some("a:b@c"));
        assert_eq!(query_param("username=x", "user"), None);
        assert_eq!(query_param("user=%zz", "user"), None);
        assert_eq!(query_param("user=%4", "user").as_deref(), Some("%4"));
    }

    #[test]
    fn every_asset_is_served_with_its_type() {
        for a in ASSETS {
            let req = Request::get(a.path).body(()).unwrap();
            let r = Demo::new(None).respond(&req).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(r.headers()[CONTENT_TYPE], a.content_type);
        }
    }
}
