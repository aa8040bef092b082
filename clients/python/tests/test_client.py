"""Tests of the keyvalue.Client library against a real kvserver."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kvserver_process import KvServer, serve

from keyvalue import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    KeyNotFound,
    KeyValueError,
    ServerUnavailable,
)

# Limits of the small_server fixture, in bytes.
SMALL_KEY_LIMIT = 8
SMALL_VALUE_LIMIT = 16
# Value limit of the large_server fixture: above grpcio's default 4 MiB.
LARGE_VALUE_LIMIT = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def small_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver with tiny key and value limits."""
    yield from serve(
        kvserver_bin,
        tmp_path_factory,
        [
            "--max-key-bytes",
            str(SMALL_KEY_LIMIT),
            "--max-value-bytes",
            str(SMALL_VALUE_LIMIT),
        ],
    )


@pytest.fixture(scope="module")
def large_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver accepting values above gRPC's default 4 MiB message limit."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--max-value-bytes", str(LARGE_VALUE_LIMIT)])


@pytest.fixture
def small_client(small_server: KvServer) -> Iterator[Client]:
    """A client of the server with tiny limits."""
    with Client(small_server.address) as client:
        yield client


def test_get_returns_the_value_set(client: Client, key: str) -> None:
    client.set(key, "sunny")
    assert client.get(key) == "sunny"


def test_set_overwrites_the_previous_value(client: Client, key: str) -> None:
    client.set(key, "sunny")
    client.set(key, "rainy")
    assert client.get(key) == "rainy"


def test_keys_are_independent(client: Client, key: str) -> None:
    client.set(key + "-a", "1")
    client.set(key + "-b", "2")
    assert (client.get(key + "-a"), client.get(key + "-b")) == ("1", "2")


def test_unicode_keys_and_values_round_trip(client: Client, key: str) -> None:
    unicode_key = f"météo-☀-{key}"
    value = "ensoleillé, 晴れ, 🌞\n second line"
    client.set(unicode_key, value)
    assert client.get(unicode_key) == value


def test_values_may_contain_equals_signs(client: Client, key: str) -> None:
    client.set(key, "b=c")
    assert client.get(key) == "b=c"


def test_empty_value_is_a_value(client: Client, key: str) -> None:
    client.set(key, "")
    assert client.get(key) == ""


def test_missing_key_raises_key_not_found_with_the_server_text(client: Client, key: str) -> None:
    with pytest.raises(KeyNotFound) as raised:
        client.get(key)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert raised.value.message == "key not found"
    assert str(raised.value) == "key not found"


def test_empty_key_is_invalid_for_set_and_get(client: Client) -> None:
    with pytest.raises(InvalidArgument) as on_set:
        client.set("", "value")
    with pytest.raises(InvalidArgument) as on_get:
        client.get("")
    assert on_set.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert on_get.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert on_set.value.message != ""


def _names_limit(message: str, limit: int, flag: str) -> bool:
    return flag in message and re.search(rf"\b{limit}\b", message) is not None


def test_key_at_the_limit_is_accepted(small_client: Client) -> None:
    key = "é" * (SMALL_KEY_LIMIT // 2)  # two bytes each: exactly at the limit
    small_client.set(key, "v")
    assert small_client.get(key) == "v"


def test_key_over_the_limit_is_invalid_and_names_the_limit(small_client: Client) -> None:
    # One character fewer than the byte limit allows, but one byte too many:
    # the limit is in bytes of UTF-8, not characters.
    key = "é" * (SMALL_KEY_LIMIT // 2) + "x"
    assert len(key) <= SMALL_KEY_LIMIT < len(key.encode())
    with pytest.raises(InvalidArgument) as on_set:
        small_client.set(key, "v")
    with pytest.raises(InvalidArgument) as on_get:
        small_client.get(key)
    for error in (on_set.value, on_get.value):
        assert _names_limit(error.message, SMALL_KEY_LIMIT, "--max-key-bytes"), error.message


def test_value_at_the_limit_is_accepted(small_client: Client) -> None:
    small_client.set("k-at", "v" * SMALL_VALUE_LIMIT)
    assert small_client.get("k-at") == "v" * SMALL_VALUE_LIMIT


def test_value_over_the_limit_is_invalid_and_keeps_the_old_value(small_client: Client) -> None:
    small_client.set("k-over", "old")
    with pytest.raises(InvalidArgument) as raised:
        small_client.set("k-over", "v" * (SMALL_VALUE_LIMIT + 1))
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert _names_limit(raised.value.message, SMALL_VALUE_LIMIT, "--max-value-bytes"), (
        raised.value.message
    )
    assert small_client.get("k-over") == "old"


def test_values_above_grpcio_default_message_limit_round_trip(
    large_server: KvServer, key: str
) -> None:
    value = "v" * (5 * 1024 * 1024)
    with Client(large_server.address) as client:
        client.set(key, value)
        assert client.get(key) == value


def test_refused_connection_raises_server_unavailable(unreachable_address: str) -> None:
    with Client(unreachable_address, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable) as raised:
            client.get("weather")
        elapsed = time.monotonic() - started
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert raised.value.message != ""
    assert elapsed < 4, "a refused connection should fail fast, not wait for the deadline"


def test_silent_server_raises_deadline_exceeded_after_the_timeout(silent_address: str) -> None:
    with Client(silent_address, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as raised:
            client.set("weather", "sunny")
        elapsed = time.monotonic() - started
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    # Still a ServerUnavailable, as it was raised before it had a class of its own.
    assert isinstance(raised.value, ServerUnavailable)
    assert 0.4 <= elapsed < 5


def test_a_call_timeout_overrides_the_client_timeout(silent_address: str) -> None:
    with Client(silent_address, timeout=None) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.get_kv("weather", timeout=0.3)
        assert time.monotonic() - started < 3
        with pytest.raises(ValueError, match="timeout must be above zero"):
            client.get_kv("weather", timeout=0)


def test_wait_for_ready_waits_for_the_server_instead_of_failing_fast(
    unreachable_address: str,
) -> None:
    with Client(unreachable_address, timeout=0.5, wait_for_ready=True) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.get("weather")
        assert time.monotonic() - started >= 0.4


def test_errors_are_ours_and_keep_the_grpc_error_as_cause(client: Client, key: str) -> None:
    with pytest.raises(KeyValueError) as raised:
        client.get(key)
    assert grpc.RpcError not in type(raised.value).__mro__
    assert isinstance(raised.value.__cause__, grpc.RpcError)


def test_context_manager_closes_the_client(server: KvServer, key: str) -> None:
    with Client(server.address) as client:
        client.set(key, "v")
        open_inside = not client.closed
    assert open_inside
    assert client.closed
    with pytest.raises(ValueError, match="closed"):
        client.get(key)
    with pytest.raises(ValueError, match="closed"):
        client.set(key, "w")


def test_close_is_idempotent_and_other_clients_see_the_data(server: KvServer, key: str) -> None:
    first = Client(server.address)
    first.set(key, "kept")
    first.close()
    first.close()
    assert first.closed
    with Client(server.address) as second:
        assert second.get(key) == "kept"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client("127.0.0.1:1", timeout=0)


def test_a_nan_timeout_is_refused() -> None:
    # NaN compares false with everything, so it is not "<= 0" either.
    with pytest.raises(ValueError, match="timeout must be above zero, got nan"):
        Client("127.0.0.1:1", timeout=float("nan"))


def test_address_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="address"):
        Client("")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:", "has no port"),
        ("localhost", "has no port"),
        ("kv://localhost", "has no port"),
        (":50051", "has no host"),
        ("localhost:http", "not a number from 1 to 65535"),
        ("localhost:70000", "not a number from 1 to 65535"),
        ("::1:50051", "IPv6 address in brackets"),
        ("http://localhost:50051", "unknown scheme 'http'"),
        ("kv://localhost:50051/path", "kv://host:port, nothing more"),
    ],
)
def test_an_address_without_host_or_port_is_refused_at_construction(
    address: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Client(address)


def test_the_kv_url_form_reaches_the_same_server(server: KvServer, key: str) -> None:
    port = server.address.rpartition(":")[2]
    Client("[::1]:50051").close()  # an IPv6 address in brackets is fine
    with Client(f"kv://127.0.0.1:{port}") as by_url:
        by_url.set(key, "by url")
        assert by_url.get(key) == "by url"
        assert by_url.address == f"kv://127.0.0.1:{port}"
