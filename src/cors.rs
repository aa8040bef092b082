//! CORS for gRPC-Web on the gRPC port (`--grpc-web-allow-origin`), so a
//! browser application served from another origin (its own web server, say
//! `https://app.example.com`) may call `keyvalue.v1.KV` directly.
//!
//! A gRPC-Web call is a cross-origin `POST` with a non-simple content type
//! (`application/grpc-web+proto`) and headers of its own, so the browser
//! first sends a preflight `OPTIONS`, and reads the answer's `grpc-status`
//! only if the server exposes it. tonic-web 0.14 answers neither (it left
//! CORS to the application), so without this flag a browser allows only
//! same-origin calls. tower-http's `CorsLayer` does it: a well-kept
//! implementation of the CORS rules (preflight, `Vary`, the allowed and
//! exposed header lists) rather than one written here; it is the layer
//! tonic-web's own documentation composes with it.
//!
//! Off by default: no CORS headers at all. Origins are listed exactly
//! (`scheme://host[:port]`), or `*` for any origin. Tokens still apply: a
//! page from an allowed origin must still send `authorization: Bearer`.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The request headers a gRPC-Web client sends: grpc-web's and
/// connect-web's own, the token, and the deadline.
const ALLOWED_HEADERS: [&str; 6] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "connect-protocol-version",
];

/// The response headers a browser application must be able to read: the
/// call's status, which gRPC-Web sends as headers when there is no body.
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Checks one value of `--grpc-web-allow-origin`: `*`, or an origin as a
/// browser sends it (`https://app.example.com`, `http://localhost:3000`: a
/// scheme, a host, maybe a port, and no path).
pub fn parse_origin(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "{text:?} is not an origin: write it as the browser sends it, \
             scheme://host[:port] (https://app.example.com), or * for any"
        ));
    };
    let bad = if !matches!(scheme, "http" | "https") {
        Some("its scheme is not http or https")
    } else if rest.is_empty() {
        Some("it has no host")
    } else if rest.contains('/') {
        Some("an origin has no path, not even a trailing /")
    } else if HeaderValue::from_str(text).is_err() {
        Some("it holds characters a header may not")
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!("{text:?} is not an origin: {why}")),
        None => Ok(text.to_owned()),
    }
}

/// The CORS layer for `origins` (values [`parse_origin`] accepted), or
/// `None` when there are none: then the server sends no CORS headers.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|origin| HeaderValue::from_str(origin).expect("checked by parse_origin")),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_as_a_browser_writes_them() {
        for good in ["*", "https://app.example.com", "http://localhost:3000"] {
            assert_eq!(parse_origin(good).as_deref(), Ok(good));
        }
        for (bad, why) in [
            ("app.example.com", "scheme://host"),
            ("ftp://app.example.com", "not http or https"),
            ("https://", "no host"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/ui", "no path"),
        ] {
            let error = parse_origin(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(layer(&[]).is_none());
    }
}
