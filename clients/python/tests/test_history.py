"""Reads at past revisions, compaction and one-snapshot paging, against a real kvserver.

Compaction forgets history for every key, so these tests have a server of
their own (a compaction on the shared one would break other modules' watches
from old revisions). Each test still uses its own keys.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kvserver_process import KvServer, serve

from keyvalue import AsyncClient, Client, Compacted, FutureRevision, KeyValueError
from keyvalue.errors import error_for_status

PAGE = 100  # the server's --max-range-page: a few thousand keys take many pages


@pytest.fixture(scope="module")
def history_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver for this module alone, with small Range pages."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--max-range-page", str(PAGE)])


@pytest.fixture
def hclient(history_server: KvServer) -> Iterator[Client]:
    with Client(history_server.address) as client:
        yield client


def test_reads_at_past_revisions_see_overwrites_and_deletes(hclient: Client, key: str) -> None:
    a, b = f"{key}/a", f"{key}/b"
    r1 = hclient.put(a, "a1").revision
    r2 = hclient.put(b, "b1").revision
    r3 = hclient.put(a, "a2").revision
    assert hclient.delete(b) == 1
    now = hclient.put(f"{key}/c", "c1").revision

    at_r1 = hclient.get_kv(a, revision=r1)
    assert at_r1 is not None
    assert at_r1.value == b"a1"
    assert at_r1.mod_revision == r1
    at_r3 = hclient.get_kv(a, revision=r3)
    assert at_r3 is not None
    assert at_r3.value == b"a2"
    assert at_r3.version == 2
    assert hclient.get_kv(b, revision=r2) is not None
    assert hclient.get_kv(b, revision=r3) is not None
    assert hclient.get_kv(b, revision=now) is None  # deleted before `now`
    assert hclient.get_kv(b) is None

    assert [kv and kv.value for kv in hclient.batch_get([a, b], revision=r2)] == [b"a1", b"b1"]
    assert [kv and kv.value for kv in hclient.batch_get([a, b], revision=now)] == [b"a2", None]

    listed = {kv.key: kv.value for kv in hclient.range(key, prefix=True, revision=r2)}
    assert listed == {a.encode(): b"a1", b.encode(): b"b1"}
    assert [kv.key for kv in hclient.range(key, prefix=True)] == [a.encode(), f"{key}/c".encode()]
    assert hclient.count(key, prefix=True, revision=r1) == 1
    assert hclient.count(key, prefix=True, revision=r3) == 2
    assert hclient.count(key, prefix=True) == 2


def test_compaction_then_older_reads_raise_compacted(hclient: Client, key: str) -> None:
    old = hclient.put(key, "old").revision
    kept = hclient.put(key, "new").revision
    assert hclient.compact(kept) >= kept

    with pytest.raises(Compacted) as raised:
        hclient.get_kv(key, revision=old)
    assert raised.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert raised.value.compacted_revision == kept
    assert raised.value.requested_revision == old
    assert str(kept) in str(raised.value)
    for read in (
        lambda: hclient.batch_get([key], revision=old),
        lambda: list(hclient.range(key, prefix=True, revision=old)),
        lambda: hclient.count(key, prefix=True, revision=old),
    ):
        with pytest.raises(Compacted):
            read()

    # A watch from below the compacted revision is refused the same way.
    with pytest.raises(Compacted) as watched, hclient.watch(key, start_revision=old) as events:
        next(iter(events))
    assert watched.value.compacted_revision == kept

    # At the compacted revision and after, the history is whole.
    at_kept = hclient.get_kv(key, revision=kept)
    assert at_kept is not None
    assert at_kept.value == b"new"

    # Compacting again at (or below) the compacted revision is refused the same way.
    with pytest.raises(Compacted) as again:
        hclient.compact(kept)
    assert again.value.compacted_revision == kept


def test_future_revisions_raise_future_revision(hclient: Client, key: str) -> None:
    current = hclient.put(key, "v").revision
    ahead = current + 1000
    for attempt in (
        lambda: hclient.get_kv(key, revision=ahead),
        lambda: hclient.compact(ahead),
    ):
        with pytest.raises(FutureRevision) as raised:
            attempt()
        error = raised.value
        assert isinstance(error, KeyValueError)
        assert not isinstance(error, Compacted)
        assert error.code == grpc.StatusCode.OUT_OF_RANGE
        assert error.requested_revision == ahead
        assert error.current_revision is not None
        assert current <= error.current_revision < ahead


def test_revisions_are_checked_before_sending(hclient: Client, key: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        hclient.get_kv(key, revision=-1)
    with pytest.raises(ValueError, match="negative"):
        list(hclient.range(key, revision=-1))
    with pytest.raises(ValueError, match="above zero"):
        hclient.compact(0)


def test_a_listing_under_a_writer_is_one_snapshot(hclient: Client, key: str) -> None:
    keys = [f"{key}/{i:05d}".encode() for i in range(3000)]
    for start in range(0, len(keys), 500):
        loaded_at = hclient.batch_put({k: b"v0" for k in keys[start : start + 500]})
    before = {kv.key: kv.value for kv in hclient.range(key + "/", prefix=True)}
    assert len(before) == len(keys)

    listing = hclient.range(key + "/", prefix=True)
    seen = [next(listing)]  # the first page is read: the listing's revision is fixed
    writes = threading.Semaphore(0)
    stop = threading.Event()

    def writer() -> None:
        # Overwrite, delete and insert keys all over the range until told to stop.
        with Client(hclient.address) as other:
            round_ = 0
            while not stop.is_set():
                round_ += 1
                other.batch_put({k: f"w{round_}".encode() for k in keys[round_ % 7 :: 97]})
                other.delete(keys[(round_ * 131) % len(keys)])
                other.put(f"{key}/{round_ * 13 % 3000:05d}x", "inserted")
                writes.release()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for kv in listing:
            seen.append(kv)
            if len(seen) % PAGE == 0:
                # At least one round of writes between every two pages.
                assert writes.acquire(timeout=10), "the writer made no progress"
    finally:
        stop.set()
        thread.join()

    assert {kv.key: kv.value for kv in seen} == before
    assert [kv.key for kv in seen] == keys
    assert max(kv.mod_revision for kv in seen) == loaded_at
    # The writer did change the keyspace: the current listing differs.
    assert {kv.key: kv.value for kv in hclient.range(key + "/", prefix=True)} != before


def test_the_async_client_reads_the_past_and_compacts(history_server: KvServer, key: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(history_server.address) as client:
            first = (await client.put(key, "one")).revision
            second = (await client.put(key, "two")).revision
            past = await client.get_kv(key, revision=first)
            assert past is not None
            assert past.value == b"one"
            assert [kv.value async for kv in client.range(key, revision=first)][:1] == [b"one"]
            assert await client.compact(second) >= second
            with pytest.raises(Compacted) as raised:
                await client.batch_get([key], revision=first)
            assert raised.value.compacted_revision == second
            with pytest.raises(FutureRevision):
                await client.get_kv(key, revision=second + 10_000)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("message", "kind", "revision"),
    [
        (
            "required revision 3 has been compacted: the compacted revision is 7, read at it "
            "or later (or read the current state and watch from that read's revision + 1)",
            Compacted,
            7,
        ),
        # An etcd backend does not say which revision was compacted.
        ("required revision 3 has been compacted; read the current state", Compacted, None),
        ("etcdserver: mvcc: required revision is a future revision", FutureRevision, None),
        (
            "required revision 90 is a future revision: the store is at revision 12",
            FutureRevision,
            12,
        ),
    ],
)
def test_out_of_range_messages_choose_the_error(
    message: str, kind: type[KeyValueError], revision: int | None
) -> None:
    error = error_for_status(grpc.StatusCode.OUT_OF_RANGE, message, service="v1")
    assert type(error) is kind
    name = "compacted_revision" if kind is Compacted else "current_revision"
    assert getattr(error, name) == revision
