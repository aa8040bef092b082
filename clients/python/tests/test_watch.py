"""Tests of Client.watch against a real kvserver: replay, live events, expiry, errors.

Also a watch that another server cuts short, and an event of an unknown kind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cutting_server import CUT_DETAILS, SENT_KEY
from kvserver_process import KvServer, serve
from watch_helpers import EVENT_WAIT, take

from keyvalue import (
    Client,
    Compacted,
    Event,
    RequestFailed,
    ResourceExhausted,
    ServerUnavailable,
    Watch,
)
from keyvalue._proto import kv_pb2

HISTORY = 5


@pytest.fixture(scope="module")
def short_history_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver keeping only HISTORY events for watches from the past."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--watch-history", str(HISTORY)])


@pytest.fixture
def one_watcher_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver allowing a single open watch, for this test alone (no slot taken)."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--max-watchers", "1"])


def watch_once_freed(client: Client, key: str, within: float = EVENT_WAIT) -> Watch:
    """A watch of ``key``, retried while the server has no free slot, up to ``within`` s.

    The server frees a cancelled watch's slot shortly after the cancellation arrives.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            return client.watch(key)
        except ResourceExhausted:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def summary(events: list[Event]) -> list[tuple[str | int, bytes, bytes]]:
    return [(event.kind, event.kv.key, event.kv.value) for event in events]


def test_watch_sees_later_changes_of_its_key_only(client: Client, key: str) -> None:
    with client.watch(key) as watch:
        client.put(key + "-other", "ignored")
        put = client.put(key, "v1")
        client.delete(key)
        events = take(watch, 2)
    assert summary(events) == [("put", key.encode(), b"v1"), ("delete", key.encode(), b"")]
    assert events[0].kv.mod_revision == events[0].revision == put.revision
    assert events[0].kv.version == 1
    assert events[1].revision > put.revision


def test_watch_a_prefix(client: Client, key: str) -> None:
    with client.watch(f"{key}/", prefix=True) as watch:
        client.put(f"{key}-outside", "x")
        client.batch_put({f"{key}/a": "1", f"{key}/b": "2"})
        client.delete(f"{key}/", prefix=True)
        events = take(watch, 4)
    assert summary(events) == [
        ("put", f"{key}/a".encode(), b"1"),
        ("put", f"{key}/b".encode(), b"2"),
        ("delete", f"{key}/a".encode(), b""),
        ("delete", f"{key}/b".encode(), b""),
    ]
    assert events[0].revision == events[1].revision, "one batch, one revision"


def test_watch_from_a_past_revision_replays_the_missed_events_then_live_ones(
    client: Client, key: str
) -> None:
    seen = client.put(f"{key}/a", "seen before").revision
    missed = [client.put(f"{key}/a", "1").revision, client.put(f"{key}/b", "2").revision]
    assert client.delete(f"{key}/a") == 1
    with client.watch(f"{key}/", prefix=True, start_revision=seen + 1) as watch:
        replayed = take(watch, 3)
        live = client.put(f"{key}/c", "3").revision
        later = take(watch, 1)
    assert summary(replayed) == [
        ("put", f"{key}/a".encode(), b"1"),
        ("put", f"{key}/b".encode(), b"2"),
        ("delete", f"{key}/a".encode(), b""),
    ]
    assert [event.revision for event in replayed[:2]] == missed
    assert missed[1] < replayed[2].revision < live
    assert summary(later) == [("put", f"{key}/c".encode(), b"3")]
    assert later[0].revision == live


def test_leaving_the_with_block_cancels_the_watch_on_the_server(
    one_watcher_server: KvServer, key: str
) -> None:
    with Client(one_watcher_server.address) as client:
        with client.watch(key) as watch:
            open_inside = not watch.cancelled
            with pytest.raises(ResourceExhausted):
                client.watch(key)
        assert open_inside
        assert watch.cancelled
        # The server freed the only slot: another watch opens, and sees changes.
        with watch_once_freed(client, key) as again:
            client.put(key, "after")
            assert summary(take(again, 1)) == [("put", key.encode(), b"after")]


def test_cancel_from_another_thread_ends_a_blocked_iteration(client: Client, key: str) -> None:
    watch = client.watch(key)
    timer = threading.Timer(0.2, watch.cancel)
    timer.start()
    try:
        assert list(watch) == []
    finally:
        timer.cancel()
    assert watch.cancelled


def test_a_watch_the_server_cuts_with_cancelled_raises(cutting_address: str) -> None:
    with Client(cutting_address) as client, client.watch("any") as watch:
        assert [event.kv.key for event in take(watch, 1)] == [SENT_KEY]
        with pytest.raises(RequestFailed) as raised:
            take(watch, 1)
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert f"the watch stream from kvserver at {cutting_address} was cut" in str(raised.value)
    assert CUT_DETAILS in str(raised.value)


def test_closing_the_client_under_a_watch_raises(client: Client, key: str) -> None:
    watch = client.watch(key)
    client.put(key, "seen")
    assert summary(take(watch, 1)) == [("put", key.encode(), b"seen")]
    client.close()
    with pytest.raises(RequestFailed) as raised:
        take(watch, 1)
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert "was cut" in raised.value.message
    assert not watch.cancelled


def test_an_event_kind_this_client_does_not_know_is_kept_as_its_number() -> None:
    # What a newer server with more kinds could send: field 1 (kind) = 7, no
    # Event.Kind of this client, followed by the rest of the event.
    rest = kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", mod_revision=9)).SerializeToString()
    event = Event.from_pb(kv_pb2.Event.FromString(b"\x08\x07" + rest))
    assert event.kind == 7
    assert (event.kv.key, event.revision) == (b"k", 9)
    known = Event.from_pb(kv_pb2.Event(kind=kv_pb2.Event.EXPIRE, kv=kv_pb2.KeyValue(key=b"k")))
    assert known.kind == "expire"


def test_cancel_ends_the_iteration_at_once_even_with_events_received(
    client: Client, key: str
) -> None:
    revision = client.batch_put({f"{key}/{i}": "v" for i in range(3)})
    with client.watch(f"{key}/", prefix=True, start_revision=revision) as watch:
        # One revision, one response: the other two events are received with the first.
        assert len(take(watch, 1)) == 1
        watch.cancel()
        assert list(watch) == []


def test_for_loop_over_a_watch(client: Client, key: str) -> None:
    client.put(key, "first")
    revision = client.put(key, "second").revision
    values = []
    for event in client.watch(key, start_revision=revision):
        values.append(event.kv.value)
        break
    assert values == [b"second"]


def test_watch_from_a_compacted_revision_raises_compacted(
    short_history_server: KvServer, key: str
) -> None:
    with Client(short_history_server.address) as client:
        first = client.put(key, "0").revision
        for i in range(1, 2 * HISTORY):
            client.put(key, str(i))
        with pytest.raises(Compacted) as raised:
            client.watch(key, start_revision=first)
        assert raised.value.code is grpc.StatusCode.OUT_OF_RANGE
        assert "compacted" in raised.value.message
        assert "read the current state" in raised.value.message
        # The recent history is still there.
        latest = client.get_kv(key)
        assert latest is not None
        with client.watch(key, start_revision=latest.mod_revision) as watch:
            assert summary(take(watch, 1)) == [("put", key.encode(), str(2 * HISTORY - 1).encode())]


def test_too_many_watches_raise_resource_exhausted(one_watcher_server: KvServer, key: str) -> None:
    with Client(one_watcher_server.address) as client, client.watch(key) as first:
        with pytest.raises(ResourceExhausted) as raised:
            client.watch(key)
        assert raised.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-watchers" in raised.value.message
        client.put(key, "still watched")
        assert summary(take(first, 1)) == [("put", key.encode(), b"still watched")]


def test_ttl_expiry_is_an_expire_event(client: Client, key: str) -> None:
    with client.watch(key) as watch:
        put = client.put(key, "short-lived", ttl=0.3)
        assert put.lease != 0
        events = take(watch, 2)
    assert summary(events) == [("put", key.encode(), b"short-lived"), ("expire", key.encode(), b"")]
    assert events[0].kv.lease == put.lease
    assert events[1].revision > put.revision
    assert client.get_kv(key) is None
    assert list(client.range(key, range_end=key + "\0")) == []


def test_watch_on_an_unreachable_server_raises_server_unavailable(
    unreachable_address: str,
) -> None:
    with Client(unreachable_address, timeout=5) as client, pytest.raises(ServerUnavailable):
        client.watch("k")


def test_watch_on_a_silent_server_gives_up_after_the_timeout(silent_address: str) -> None:
    with Client(silent_address, timeout=0.5) as client:
        with pytest.raises(ServerUnavailable) as raised:
            client.watch("k")
        assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
