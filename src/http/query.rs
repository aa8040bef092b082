//! Query strings whose keys are bytes.
//!
//! A key may be any bytes, and a query string can carry any byte as `%XX`;
//! but axum's `Query` (serde_urlencoded over `form_urlencoded`) decodes
//! every parameter to a `String`, replacing bytes that are not UTF-8 with
//! U+FFFD, so `prefix=%FF` would silently become another prefix. Here the
//! parameters that name keys (`prefix`, `after`, ...) are percent-decoded
//! as bytes (`percent_encoding`, as the key in a path is), and the others
//! still go through `Query` into their typed struct, with its checks and
//! messages (`deny_unknown_fields`, numbers, booleans).

use axum::extract::Query;
use axum::http::Uri;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The query of `uri`: the parameters named in `keys`, percent-decoded as
/// bytes (`+` is a space, as in every form encoding), in the order of
/// `keys`; the other parameters deserialized into `T`. A key parameter
/// given twice is refused, as `Query` refuses a field given twice.
pub(super) fn key_query<T: DeserializeOwned, const N: usize>(
    uri: &Uri,
    keys: [&str; N],
) -> Result<(T, [Option<Bytes>; N]), ApiError> {
    let mut found: [Option<Bytes>; N] = std::array::from_fn(|_| None);
    let mut rest: Vec<&str> = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name);
        match keys.iter().position(|key| key.as_bytes() == name) {
            Some(at) if found[at].is_some() => {
                return Err(ApiError::bad_request(format!(
                    "{} is given more than once",
                    keys[at]
                )));
            }
            Some(at) => found[at] = Some(Bytes::from(decode(value))),
            None => rest.push(pair),
        }
    }
    // The other parameters, still encoded, form a query `Query` reads.
    let others: Uri = format!("/?{}", rest.join("&"))
        .parse()
        .map_err(|_| ApiError::bad_request("the query is not a valid URI query"))?;
    let Query(typed) =
        Query::<T>::try_from_uri(&others).map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok((typed, found))
}

/// One form-encoded name or value as bytes: `+` is a space, `%XX` the byte
/// XX (any byte), anything else itself.
fn decode(text: &str) -> Vec<u8> {
    let spaced: Vec<u8> = text
        .bytes()
        .map(|byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    percent_encoding::percent_decode(&spaced).collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Other {
        limit: Option<u32>,
    }

    fn parse(query: &str) -> Result<(Other, [Option<Bytes>; 2]), ApiError> {
        key_query(&format!("/x?{query}").parse().unwrap(), ["prefix", "after"])
    }

    #[test]
    fn key_parameters_are_bytes_and_the_rest_is_typed() {
        let (other, [prefix, after]) = parse("prefix=%FF%00a&limit=3&after=a+b%2Bc").unwrap();
        assert_eq!(other, Other { limit: Some(3) });
        assert_eq!(prefix.as_deref(), Some(&[0xff, 0x00, b'a'][..]));
        assert_eq!(after.as_deref(), Some(&b"a b+c"[..]));
        // UTF-8 as it is, and an empty value is an empty key.
        let (_, [prefix, after]) = parse("prefix=%C3%A9t%C3%A9&after=").unwrap();
        assert_eq!(prefix.as_deref(), Some("été".as_bytes()));
        assert_eq!(after.as_deref(), Some(&b""[..]));
        let (other, [prefix, after]) = parse("").unwrap();
        assert_eq!((other, prefix, after), (Other { limit: None }, None, None));
    }

    #[test]
    fn twice_and_unknown_parameters_are_refused() {
        assert!(parse("prefix=a&prefix=b").is_err());
        assert!(parse("colour=red").is_err());
        assert!(parse("limit=many").is_err());
    }
}
