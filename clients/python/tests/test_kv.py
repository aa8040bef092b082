"""Tests of the full API (keyvalue.v1.KV) on Client, against a real kvserver.

Reads, writes, deletes, ranges with paging, compare-and-set, transactions and
batches. Watches and leases are in test_watch.py and test_lease.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from kvserver_process import KvServer, serve

from keyvalue import (
    CasResult,
    Client,
    Compare,
    DeleteResult,
    InvalidArgument,
    KeyValue,
    LeaseNotFound,
    Op,
    PutResult,
    RangeResult,
)
from keyvalue._proto import kv_pb2_grpc

PAGE_LIMIT = 100
BATCH_LIMIT = 3


@pytest.fixture(scope="module")
def paging_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver answering at most PAGE_LIMIT keys per Range page."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--max-range-page", str(PAGE_LIMIT)])


@pytest.fixture(scope="module")
def batch_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver taking at most BATCH_LIMIT keys per batch."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--max-batch-keys", str(BATCH_LIMIT)])


# ---- get_kv, put, and the tutorial API over the same data -------------------


def test_a_key_set_through_the_tutorial_api_is_read_by_get_kv(client: Client, key: str) -> None:
    client.set(key, "sunny")
    kv = client.get_kv(key)
    assert kv is not None
    assert (kv.key, kv.value) == (key.encode(), b"sunny")
    assert kv.version == 1
    assert kv.create_revision == kv.mod_revision > 0
    assert kv.lease == 0


def test_a_key_put_through_the_full_api_is_read_by_the_tutorial_get(
    client: Client, key: str
) -> None:
    client.put(key, "météo ☀")
    assert client.get(key) == "météo ☀"
    client.set(key, "rainy")
    kv = client.get_kv(key.encode())
    assert kv is not None
    assert kv.value == b"rainy"
    assert kv.version == 2


def test_get_kv_of_a_missing_key_is_none(client: Client, key: str) -> None:
    assert client.get_kv(key) is None


def test_binary_keys_and_values_round_trip(client: Client, key: str) -> None:
    binary_key = b"\x00\xff\x80" + key.encode() + b"\x00"
    value = bytes(range(256)) * 4
    client.put(binary_key, value)
    kv = client.get_kv(binary_key)
    assert kv is not None
    assert (kv.key, kv.value) == (binary_key, value)
    assert client.get_kv(key) is None, "the binary key is not its printable part"


def test_str_keys_are_utf8_bytes(client: Client, key: str) -> None:
    text_key = f"clé-{key}"
    client.put(text_key, "été")
    kv = client.get_kv(text_key.encode("utf-8"))
    assert kv is not None
    assert kv.value == "été".encode()
    assert kv.key == text_key.encode()


def test_put_revisions_versions_and_prev_kv(client: Client, key: str) -> None:
    first = client.put(key, "one", prev_kv=True)
    assert first.prev is None
    assert first.lease == 0
    second = client.put(key, "two", prev_kv=True)
    assert second.revision > first.revision
    assert second.prev == KeyValue(key.encode(), b"one", first.revision, first.revision, 1, 0)
    third = client.put(key, "three")
    assert third.prev is None, "prev is only returned when asked for"
    assert client.get_kv(key) == KeyValue(
        key.encode(), b"three", first.revision, third.revision, 3, 0
    )


def test_key_value_is_a_frozen_dataclass(client: Client, key: str) -> None:
    client.put(key, "v")
    kv = client.get_kv(key)
    assert kv is not None
    with pytest.raises(AttributeError):
        kv.value = b"changed"  # type: ignore[misc]
    assert kv == client.get_kv(key)
    assert hash(kv) == hash(client.get_kv(key))


def test_invalid_input_raises_invalid_argument(client: Client, key: str) -> None:
    with pytest.raises(InvalidArgument) as empty:
        client.get_kv("")
    assert empty.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.message == "key is empty"
    with pytest.raises(InvalidArgument, match="not both"):
        client.delete(key, prefix=True, range_end=key + "z")
    with pytest.raises(ValueError, match="ttl"):
        client.put(key, "v", ttl=0)
    with pytest.raises(TypeError):
        client.put(key, 5)  # type: ignore[arg-type]
    assert client.get_kv(key) is None


def test_put_with_both_ttl_and_lease_is_invalid(client: Client, key: str) -> None:
    lease = client.lease_grant(5)
    with pytest.raises(InvalidArgument, match="not both"):
        client.put(key, "v", ttl=5, lease=lease.id)
    assert client.get_kv(key) is None


def test_put_with_an_unknown_lease_raises_lease_not_found(client: Client, key: str) -> None:
    with pytest.raises(LeaseNotFound) as raised:
        client.put(key, "v", lease=987_654_321)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert "987654321" in raised.value.message
    assert client.get_kv(key) is None


# ---- delete --------------------------------------------------------------------


def test_delete_one_key_returns_how_many_were_deleted(client: Client, key: str) -> None:
    client.put(key, "v")
    client.put(key + "-sibling", "v")
    assert client.delete(key) == 1
    assert client.get_kv(key) is None
    assert client.get_kv(key + "-sibling") is not None, "only the key itself"
    assert client.delete(key) == 0


def test_delete_a_prefix_counts_the_keys(client: Client, key: str) -> None:
    for suffix in ("a", "b", "c/d"):
        client.put(f"{key}/{suffix}", "v")
    client.put(f"{key}-outside", "v")
    assert client.delete(f"{key}/", prefix=True) == 3
    assert client.count(f"{key}/", prefix=True) == 0
    assert client.get_kv(f"{key}-outside") is not None
    assert client.delete(f"{key}/", prefix=True) == 0


def test_delete_a_range_is_end_exclusive(client: Client, key: str) -> None:
    for suffix in "abcd":
        client.put(f"{key}/{suffix}", "v")
    assert client.delete(f"{key}/a", range_end=f"{key}/c") == 2
    assert [kv.key for kv in client.range(f"{key}/", prefix=True)] == [
        f"{key}/c".encode(),
        f"{key}/d".encode(),
    ]


# ---- range and count -----------------------------------------------------------


def test_range_of_a_prefix_is_sorted_and_excludes_other_keys(client: Client, key: str) -> None:
    for suffix in ["c", "a", "b"]:
        client.put(f"{key}/{suffix}", f"value-{suffix}")
    client.put(f"{key}0", "not in the prefix")
    kvs = list(client.range(f"{key}/", prefix=True))
    assert [(kv.key, kv.value) for kv in kvs] == [
        (f"{key}/a".encode(), b"value-a"),
        (f"{key}/b".encode(), b"value-b"),
        (f"{key}/c".encode(), b"value-c"),
    ]
    assert client.count(f"{key}/", prefix=True) == 3


def test_range_with_range_end_keys_only_and_limit(client: Client, key: str) -> None:
    for suffix in "abcde":
        client.put(f"{key}/{suffix}", "value")
    between = list(client.range(f"{key}/b", range_end=f"{key}/e", keys_only=True))
    assert [kv.key for kv in between] == [f"{key}/{s}".encode() for s in "bcd"]
    assert all(kv.value == b"" for kv in between)
    assert all(kv.version == 1 for kv in between)
    limited = list(client.range(f"{key}/", prefix=True, limit=2))
    assert [kv.key for kv in limited] == [f"{key}/a".encode(), f"{key}/b".encode()]
    assert list(client.range(f"{key}/", prefix=True, limit=0)) == []
    assert client.count(f"{key}/b", range_end=f"{key}/e") == 3


def test_range_without_an_end_runs_to_the_end_of_the_keyspace(client: Client, key: str) -> None:
    last = f"\U0010ffff-{key}"  # sorts after every other test's keys
    client.put(last, "v")
    assert [kv.key for kv in client.range(last)] == [last.encode()]
    assert client.count(last) == 1


def test_range_pages_through_every_key_exactly_once_in_order(paging_server: KvServer) -> None:
    keys = [f"paged/{i:05d}".encode() for i in range(2500)]
    with Client(paging_server.address) as client:
        for start in range(0, len(keys), 500):
            client.batch_put({k: k[::-1] for k in keys[start : start + 500]})
        client.put("paged0", "just past the prefix")
        seen = list(client.range("paged/", prefix=True))
        assert [kv.key for kv in seen] == keys
        assert all(kv.value == kv.key[::-1] for kv in seen)
        assert client.count("paged/", prefix=True) == 2500
        # A page larger than the server allows is capped to it, page after page...
        assert [kv.key for kv in client.range("paged/", prefix=True, page_size=1000)] == keys
        # ...and so is a total limit above it: it only stops the iteration.
        assert [kv.key for kv in client.range("paged/", prefix=True, limit=250)] == keys[:250]
        small_pages = client.range("paged/", prefix=True, page_size=7, limit=30)
        assert [kv.key for kv in small_pages] == keys[:30]


class _RangeRecorder(grpc.UnaryUnaryClientInterceptor):
    """Records the limit of every Range request sent, and the keys each reply held."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[int, int]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if details.method.endswith("/Range"):
            self.exchanges.append((request.limit, len(outcome.result().kvs)))
        return outcome


def _recording(client: Client) -> _RangeRecorder:
    """Spy on the client's keyvalue.v1 calls: they still go to the real server."""
    recorder = _RangeRecorder()
    client._kv = kv_pb2_grpc.KVStub(grpc.intercept_channel(client._channel, recorder))
    return recorder


@pytest.mark.parametrize(
    ("limit", "page_size", "exchanges"),
    [
        # A limit below the page asks for that many keys, and gets only them.
        (1, None, [(1, 1)]),
        (3, 50, [(3, 3)]),
        (250, 100, [(100, 100), (100, 100), (50, 50)]),
        # A limit above the server's page is sent as is; the server caps it.
        (10**12, None, [(2**32 - 1, PAGE_LIMIT), (2**32 - 1, PAGE_LIMIT), (2**32 - 1, 50)]),
        (260, 1000, [(260, PAGE_LIMIT), (160, PAGE_LIMIT), (60, 50)]),
    ],
)
def test_range_asks_for_no_more_than_the_limit(
    paging_server: KvServer, limit: int, page_size: int | None, exchanges: list[tuple[int, int]]
) -> None:
    value = "v" * 1000
    with Client(paging_server.address) as client:
        client.batch_put({f"limited/{i:03d}": value for i in range(250)})
        recorder = _recording(client)
        got = list(client.range("limited/", prefix=True, limit=limit, page_size=page_size))
        assert len(got) == min(limit, 250)
        assert recorder.exchanges == exchanges


def test_range_is_lazy(paging_server: KvServer) -> None:
    with Client(paging_server.address) as client:
        client.batch_put({f"lazy/{i:03d}": "v" for i in range(150)})
        pages = client.range("lazy/", prefix=True)
        first = next(iter(pages))
        assert first.key == b"lazy/000"
        # Later pages are read at the first page's revision: a key written
        # after it does not show up (the listing is one snapshot).
        client.put("lazy/999", "late")
        assert [kv.key for kv in pages][-1] == b"lazy/149"


# ---- compare-and-set -----------------------------------------------------------


def test_compare_and_set_with_zero_only_creates(client: Client, key: str) -> None:
    created = client.compare_and_set(key, "first", expect_revision=0)
    assert created.succeeded
    revision = created.revision
    assert created.current == KeyValue(key.encode(), b"first", revision, revision, 1)
    assert client.get_kv(key) == created.current
    again = client.compare_and_set(key, "second", expect_revision=0)
    assert again == CasResult(succeeded=False, revision=again.revision, current=created.current)
    assert client.get_kv(key) == created.current


def test_compare_and_set_succeeds_on_the_current_revision(client: Client, key: str) -> None:
    first = client.put(key, "one")
    result = client.compare_and_set(key, b"two", expect_revision=first.revision)
    assert result.succeeded
    assert result.revision > first.revision
    assert result.current == client.get_kv(key)
    assert result.current is not None
    assert (result.current.value, result.current.version) == (b"two", 2)
    assert result.current.create_revision == first.revision


def test_compare_and_set_fails_on_a_stale_revision_with_the_current_state(
    client: Client, key: str
) -> None:
    stale = client.put(key, "one").revision
    client.put(key, "two")
    result = client.compare_and_set(key, "three", expect_revision=stale)
    assert not result.succeeded
    assert result.current is not None
    assert result.current.value == b"two"
    assert result.current == client.get_kv(key)
    missing = client.compare_and_set(key + "-missing", "v", expect_revision=stale)
    assert (missing.succeeded, missing.current) == (False, None)
    assert client.get_kv(key + "-missing") is None


def test_racing_compare_and_set_has_exactly_one_winner_each_round(client: Client, key: str) -> None:
    rounds = 200
    barrier = threading.Barrier(2)

    def attempt(name: str, revision: int) -> bool:
        barrier.wait(timeout=10)
        return client.compare_and_set(key, name, expect_revision=revision).succeeded

    revision = client.put(key, "start").revision
    wins = {"a": 0, "b": 0}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(rounds):
            futures = {name: pool.submit(attempt, name, revision) for name in wins}
            results = {name: future.result(timeout=30) for name, future in futures.items()}
            assert sum(results.values()) == 1, results
            winner = next(name for name, won in results.items() if won)
            wins[winner] += 1
            current = client.get_kv(key)
            assert current is not None
            assert current.value == winner.encode()
            revision = current.mod_revision
    assert sum(wins.values()) == rounds
    final = client.get_kv(key)
    assert final is not None
    assert final.version == rounds + 1


def test_delete_if_deletes_only_at_the_expected_revision(client: Client, key: str) -> None:
    written = client.put(key, "v").revision
    client.put(key, "w")
    refused = client.delete_if(key, expect_revision=written)
    assert not refused.succeeded
    assert refused.current is not None
    assert refused.current.value == b"w"
    assert client.get_kv(key) == refused.current
    deleted = client.delete_if(key, expect_revision=refused.current.mod_revision)
    assert deleted.succeeded
    assert deleted.current is None
    assert deleted.revision > refused.current.mod_revision
    assert client.get_kv(key) is None


# ---- transactions --------------------------------------------------------------


def test_txn_runs_the_success_branch_when_every_compare_holds(client: Client, key: str) -> None:
    revision = client.put(key, "old").revision
    result = client.txn(
        [Compare.mod_revision(key, "=", revision), Compare.value(key, "=", "old")],
        success=[Op.put(key, "new", prev_kv=True), Op.put(key + "/b", "b"), Op.get(key)],
        failure=[Op.get(key)],
    )
    assert result.succeeded
    assert result.revision > revision
    put, _, get = result.responses
    assert isinstance(put, PutResult)
    assert put.prev is not None
    assert put.prev.value == b"old"
    assert isinstance(get, RangeResult)
    assert [kv.value for kv in get.kvs] == [b"new"]
    assert get.kvs[0].mod_revision == result.revision
    assert client.get_kv(key + "/b") is not None, "both puts happened"


def test_txn_runs_the_failure_branch_when_a_compare_fails(client: Client, key: str) -> None:
    client.put(key, "current")
    client.put(key + "/x", "x")
    result = client.txn(
        [Compare.value(key, "=", "something else")],
        success=[Op.put(key, "never")],
        failure=[Op.get(key), Op.delete(key + "/", prefix=True, prev_kv=True)],
    )
    assert not result.succeeded
    get, delete = result.responses
    assert isinstance(get, RangeResult)
    assert [kv.value for kv in get.kvs] == [b"current"]
    assert isinstance(delete, DeleteResult)
    assert delete.deleted == 1
    assert [kv.key for kv in delete.prev] == [f"{key}/x".encode()]
    kv = client.get_kv(key)
    assert kv is not None
    assert kv.value == b"current"


def test_txn_compares_on_absent_keys_versions_and_create_revisions(
    client: Client, key: str
) -> None:
    assert client.txn([Compare.absent(key)], [Op.put(key, "v")]).succeeded
    created = client.get_kv(key)
    assert created is not None
    assert not client.txn([Compare.absent(key)]).succeeded
    assert client.txn([Compare.exists(key), Compare.version(key, "<", 2)]).succeeded
    assert client.txn([Compare.create_revision(key, "=", created.create_revision)]).succeeded
    assert not client.txn([Compare.mod_revision(key, ">", created.mod_revision)]).succeeded
    assert client.txn([Compare.value(key, "!=", b"w")]).succeeded


def test_a_put_in_a_txn_answers_the_lease_of_its_op(client: Client, key: str) -> None:
    ran, other = client.lease_grant(60), client.lease_grant(60)
    try:
        for succeeded in (True, False):
            compare = Compare.absent(key) if succeeded else Compare.exists(key + "/never")
            result = client.txn(
                [compare],
                success=[Op.get(key), Op.put(key, "s", lease=ran.id if succeeded else other.id)],
                failure=[Op.put(key, "f", lease=other.id if succeeded else ran.id), Op.get(key)],
            )
            assert result.succeeded is succeeded
            put = result.responses[1 if succeeded else 0]
            assert isinstance(put, PutResult)
            assert put.lease == ran.id
            kv = client.get_kv(key)
            assert kv is not None
            assert kv.lease == ran.id
        unleased = client.txn([], success=[Op.put(key, "none")]).responses[0]
        assert isinstance(unleased, PutResult)
        assert unleased.lease == 0
    finally:
        client.lease_revoke(ran.id)
        client.lease_revoke(other.id)


def test_compare_rejects_an_unknown_operator(key: str) -> None:
    with pytest.raises(ValueError, match="compare op"):
        Compare.value(key, "~", "v")  # type: ignore[arg-type]


# ---- batches -------------------------------------------------------------------


def test_batch_put_writes_every_key_at_one_revision(client: Client, key: str) -> None:
    revision = client.batch_put({f"{key}/a": "1", f"{key}/b": b"2"})
    pairs_revision = client.batch_put([(f"{key}/c", "3"), (f"{key}/a".encode(), "4")])
    assert pairs_revision > revision
    a, b, c = client.batch_get([f"{key}/a", f"{key}/b", f"{key}/c"])
    assert a is not None
    assert b is not None
    assert c is not None
    assert (a.value, b.value, c.value) == (b"4", b"2", b"3")
    assert b.mod_revision == revision
    assert a.mod_revision == c.mod_revision == pairs_revision


def test_batch_get_answers_in_order_with_none_for_missing_keys(client: Client, key: str) -> None:
    client.put(f"{key}/1", "one")
    client.put(f"{key}/3", "three")
    results = client.batch_get([f"{key}/3", f"{key}/2", f"{key}/1"])
    assert [kv.value if kv else None for kv in results] == [b"three", None, b"one"]
    assert client.batch_get([]) == []


def test_batches_above_the_limit_are_invalid_and_change_nothing(
    batch_server: KvServer, key: str
) -> None:
    keys = [f"{key}/{i}" for i in range(BATCH_LIMIT + 1)]
    with Client(batch_server.address) as client:
        with pytest.raises(InvalidArgument) as on_put:
            client.batch_put({k: "v" for k in keys})
        with pytest.raises(InvalidArgument) as on_get:
            client.batch_get(keys)
        for error in (on_put.value, on_get.value):
            assert "--max-batch-keys" in error.message
            assert str(BATCH_LIMIT) in error.message
        assert client.batch_get(keys[:BATCH_LIMIT]) == [None] * BATCH_LIMIT
        client.batch_put({k: "v" for k in keys[:BATCH_LIMIT]})
        assert client.count(f"{key}/", prefix=True) == BATCH_LIMIT


def test_a_txn_get_with_a_limit_counts_the_whole_range(client: Client, key: str) -> None:
    client.batch_put({f"{key}/{i}": "v" for i in range(3)})
    result = client.txn([], success=[Op.get(key + "/", prefix=True, limit=1)])
    page = result.responses[0]
    assert isinstance(page, RangeResult)
    assert [kv.key for kv in page.kvs] == [f"{key}/0".encode()]
    assert page.more
    assert page.count == 3
