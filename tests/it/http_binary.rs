//! The JSON API is binary-safe in both directions: keys that are not UTF-8
//! go in as `%XX` bytes, in a path and in the query parameters that name
//! keys (`prefix`, `after`, `delimiter`, a watch's `key`), and come out as
//! base64 marked by `{field}_encoding` in every key field (`key`, `next`,
//! `prefixes[].prefix`, a lease's `next_key`), through the real binary.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::StatusCode;
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
use serde_json::{Value as Json, json};

use crate::http::{call_json, next_event, send, start_http};

/// `bytes` percent-encoded, every byte that is not a letter or digit.
fn pct(bytes: &[u8]) -> String {
    percent_encode(bytes, NON_ALPHANUMERIC).to_string()
}

/// The bytes of `object[field]`: text, or base64 when
/// `{field}_encoding` says so (and nothing else may say).
fn bytes_of(object: &Json, field: &str) -> Vec<u8> {
    let text = object[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {object}"));
    match object.get(format!("{field}_encoding")) {
        None => text.as_bytes().to_vec(),
        Some(encoding) => {
            assert_eq!(encoding, "base64", "{object}");
            BASE64.decode(text).unwrap()
        }
    }
}

async fn put(addr: &str, key: &[u8], lease: Option<i64>) -> Json {
    let mut path = format!("/v1/kv/{}", pct(key));
    if let Some(lease) = lease {
        path.push_str(&format!("?lease={lease}"));
    }
    let (status, body) = call_json(addr, "PUT", &path, &[], "v").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn binary_prefixes_and_afters_page_and_group_with_marked_keys() {
    let (_server, addr) = start_http(&[]);
    let under: Vec<&[u8]> = vec![
        b"\xff\x00a",
        b"\xff\x00b",
        b"\xff/x/1",
        b"\xff/x/2",
        b"\xff/\x80/1",
        b"\xff/y",
    ];
    // Not under 0xFF: ÿ in UTF-8 is 0xC3 0xBF.
    let outside: Vec<&[u8]> = vec![b"\xfe", b"a", "\u{ff}".as_bytes()];
    for key in under.iter().chain(outside.iter()) {
        put(&addr, key, None).await;
    }

    // Pages of two under the prefix 0xFF, each page's `next` (base64,
    // marked) sent back as `after` in %XX.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut path = "/v1/kv?prefix=%FF&limit=2".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", pct(after)));
        }
        let (status, page) = call_json(&addr, "GET", &path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for kv in page["kvs"].as_array().unwrap() {
            assert_eq!(kv["key_encoding"], "base64", "{kv}");
            seen.push(bytes_of(kv, "key"));
        }
        if page["more"] == false {
            assert!(page["next"].is_null(), "{page}");
            break;
        }
        assert_eq!(page["next_encoding"], "base64", "{page}");
        let next = bytes_of(&page, "next");
        assert_eq!(Some(&next), seen.last(), "{page}");
        after = Some(next);
    }
    let mut expected: Vec<Vec<u8>> = under.iter().map(|key| key.to_vec()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // Grouped by `/` under 0xFF `/`: each group a marked `prefix`, paged
    // one entry at a time with the group as `after`.
    let (_, page) = call_json(
        &addr,
        "GET",
        "/v1/kv?prefix=%FF%2F&delimiter=%2F&keys_only=true",
        &[],
        "",
    )
    .await;
    assert_eq!(
        page["prefixes"],
        json!([
            {"prefix": BASE64.encode(b"\xff/x/"), "prefix_encoding": "base64"},
            {"prefix": BASE64.encode(b"\xff/\x80/"), "prefix_encoding": "base64"},
        ]),
        "{page}"
    );
    let keys: Vec<Vec<u8>> = page["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| bytes_of(kv, "key"))
        .collect();
    assert_eq!(keys, [b"\xff/y".to_vec()]);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut path = "/v1/kv?prefix=%FF/&delimiter=/&limit=1".to_owned();
    loop {
        let (status, page) = call_json(&addr, "GET", &path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for group in page["prefixes"].as_array().unwrap() {
            entries.push(bytes_of(group, "prefix"));
        }
        for kv in page["kvs"].as_array().unwrap() {
            entries.push(bytes_of(kv, "key"));
        }
        if page["more"] == false {
            break;
        }
        let next = bytes_of(&page, "next");
        assert_eq!(Some(&next), entries.last(), "{page}");
        path = format!(
            "/v1/kv?prefix=%FF/&delimiter=/&limit=1&after={}",
            pct(&next)
        );
    }
    assert_eq!(
        entries,
        // In byte order: `y` (0x79) before 0x80.
        [
            b"\xff/x/".to_vec(),
            b"\xff/y".to_vec(),
            b"\xff/\x80/".to_vec()
        ]
    );

    // Bytes, not text: %FF is not U+FFFD, and an `after` outside the prefix
    // is refused even when it is not UTF-8.
    let (_, none) = call_json(&addr, "GET", "/v1/kv?prefix=%EF%BF%BD", &[], "").await;
    assert_eq!(none["kvs"], json!([]), "{none}");
    let (status, refused) = call_json(&addr, "GET", "/v1/kv?prefix=%FF&after=%FE", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = call_json(&addr, "GET", "/v1/kv?prefix=%FF&prefix=a", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The other parameters are still checked.
    let (status, _) = call_json(&addr, "GET", "/v1/kv?prefix=%FF&limit=many", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_leases_binary_keys_page_and_a_binary_prefix_is_watched() {
    let (_server, addr) = start_http(&[]);
    let (_, first) = call_json(&addr, "PUT", "/v1/kv/%FF%01?ttl=60s", &[], "v").await;
    let lease = first["lease"].as_i64().unwrap();
    put(&addr, b"\xff\x02", Some(lease)).await;
    let (status, page) = call_json(
        &addr,
        "GET",
        &format!("/v1/leases/{lease}?limit=1"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["keys"],
        json!([{"key": BASE64.encode(b"\xff\x01"), "key_encoding": "base64"}])
    );
    assert_eq!(page["next_key_encoding"], "base64", "{page}");
    let after = pct(&bytes_of(&page, "next_key"));
    let path = format!("/v1/leases/{lease}?limit=1&after={after}");
    let (_, rest) = call_json(&addr, "GET", &path, &[], "").await;
    let keys: Vec<Vec<u8>> = rest["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| bytes_of(key, "key"))
        .collect();
    assert_eq!(keys, [b"\xff\x02".to_vec()], "{rest}");
    assert_eq!(rest["more_keys"], false);

    // A watch of the prefix 0xFF from the first revision sees both keys and
    // nothing else.
    put(&addr, b"elsewhere", None).await;
    let from = first["revision"].as_u64().unwrap();
    let path = format!("/v1/watch?prefix=%FF&from_revision={from}");
    let response = send(&addr, "GET", &path, &[], "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut buffer = String::new();
    for expected in [&b"\xff\x01"[..], b"\xff\x02"] {
        let event = next_event(&mut body, &mut buffer).await;
        let data: Json = serde_json::from_str(&event["data"]).unwrap();
        assert_eq!(bytes_of(&data["kv"], "key"), expected, "{data}");
    }
}
