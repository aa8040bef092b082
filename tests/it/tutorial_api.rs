//! The tutorial's contract: `Set` stores, `Get` returns the last value set, a
//! missing key is `NOT_FOUND` with the text `key not found`.

use keyvalue::proto::simplekeyvalue::SetRequest;
use tonic::Code;

use crate::harness::{Server, get, set};

#[tokio::test]
async fn set_then_get_returns_the_value() {
    let server = Server::start();
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    assert_eq!(get(&mut client, "weather").await.unwrap(), "sunny");
}

#[tokio::test]
async fn get_of_a_key_never_set_is_not_found_with_the_tutorials_text() {
    let server = Server::start();
    let mut client = server.client().await;
    let status = get(&mut client, "weather").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "key not found");
}

#[tokio::test]
async fn set_overwrites_and_keys_are_independent() {
    let server = Server::start();
    let mut client = server.client().await;
    set(&mut client, "weather", "sunny").await;
    set(&mut client, "weather", "rainy").await;
    set(&mut client, "weather2", "foggy").await;
    assert_eq!(get(&mut client, "weather").await.unwrap(), "rainy");
    assert_eq!(get(&mut client, "weather2").await.unwrap(), "foggy");
    // A prefix of a stored key is another key.
    let status = get(&mut client, "weath").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn values_keep_every_character() {
    let server = Server::start();
    let mut client = server.client().await;
    for (key, value) in [
        ("equals", "b=c=d"),
        ("unicode ключ 🌦", "ソレイユ ☀"),
        ("spaces", "  leading and trailing  "),
        ("newlines", "line 1\nline 2\n"),
        ("empty-value", ""),
    ] {
        set(&mut client, key, value).await;
        assert_eq!(get(&mut client, key).await.unwrap(), value, "key {key:?}");
    }
}

#[tokio::test]
async fn empty_key_is_invalid_for_set_and_get() {
    let server = Server::start();
    let mut client = server.client().await;
    let status = client
        .set(SetRequest {
            key: String::new(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "key is empty");
    let status = get(&mut client, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn clients_on_different_connections_see_each_others_writes() {
    let server = Server::start();
    let mut writer = server.client().await;
    let mut reader = server.client().await;
    set(&mut writer, "shared", "from-writer").await;
    assert_eq!(get(&mut reader, "shared").await.unwrap(), "from-writer");
}
