"""Tests of Client.snapshot against a real kvserver: revision, leases, every key once, errors.

Each test that checks the whole copy starts a kvserver of its own, so the copy
holds exactly the keys and leases the test wrote.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from credentials import READ_TOKEN, SCOPED_TOKEN
from cutting_server import CUT_DETAILS, SENT_KEY
from kvserver_process import KvServer, serve

from keyvalue import (
    Client,
    KeyValue,
    Lease,
    PermissionDenied,
    RequestFailed,
    ServerUnavailable,
    Snapshot,
    Unauthenticated,
)

# The server sends this many keys per chunk (SNAPSHOT_CHUNK in src/storage).
CHUNK = 1000


@pytest.fixture
def own_server(kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvServer]:
    """A kvserver for this test alone, empty when the test starts."""
    yield from serve(kvserver_bin, tmp_path_factory)


@pytest.fixture
def client(own_server: KvServer) -> Iterator[Client]:
    """A client of the test's own server."""
    with Client(own_server.address) as client:
        yield client


def put_keys(client: Client, keys: list[bytes], batch: int = 500) -> int:
    """Store each key with its reversed bytes as the value; the last batch's revision."""
    revision = 0
    for start in range(0, len(keys), batch):
        revision = client.batch_put({k: k[::-1] for k in keys[start : start + batch]})
    return revision


def check_keys(kvs: list[KeyValue], keys: list[bytes], lease: int = 0) -> None:
    """``kvs`` are exactly ``keys``, in order, as put_keys wrote them (once each)."""
    assert [kv.key for kv in kvs] == keys
    assert all(kv.value == kv.key[::-1] for kv in kvs)
    assert all(kv.version == 1 and kv.create_revision == kv.mod_revision for kv in kvs)
    assert all(kv.lease == lease for kv in kvs)


@pytest.mark.parametrize("count", [300, 2500])
def test_snapshot_has_the_revision_every_key_once_in_order_and_the_leases(
    client: Client, count: int
) -> None:
    keys = [f"snap/{i:05d}".encode() for i in range(count)]
    put_keys(client, keys)
    lease = client.lease_grant(60)
    leased = client.put("snap/leased", "on a lease", lease=lease.id)
    revision = client.put("snap/last", "v").revision
    assert revision == leased.revision + 1

    with client.snapshot() as snapshot:
        assert isinstance(snapshot, Snapshot)
        assert snapshot.revision == revision
        assert snapshot.leases == (Lease(id=lease.id, ttl=60.0),)
        complete_before = snapshot.complete
        kvs = list(snapshot)
        assert (complete_before, snapshot.complete) == (False, True)

    assert len(kvs) == count + 2
    check_keys(kvs[:count], keys)
    by_key = {kv.key: kv for kv in kvs[count:]}
    assert list(by_key) == [b"snap/last", b"snap/leased"]
    assert by_key[b"snap/leased"] == KeyValue(
        key=b"snap/leased",
        value=b"on a lease",
        create_revision=leased.revision,
        mod_revision=leased.revision,
        version=1,
        lease=lease.id,
    )
    assert by_key[b"snap/last"].mod_revision == revision
    # The same keys, with every counter, as a read of the whole keyspace.
    assert kvs == list(client.range())


def test_snapshot_counters_and_a_ttl_of_its_own(client: Client) -> None:
    client.put("a", "1")
    second = client.put("a", "2")
    with_ttl = client.put("b", "short", ttl=1.5)
    with client.snapshot() as snapshot:
        assert snapshot.revision == with_ttl.revision
        assert snapshot.leases == (Lease(id=with_ttl.lease, ttl=1.5),)
        a, b = snapshot
    assert (a.key, a.value, a.version, a.mod_revision) == (b"a", b"2", 2, second.revision)
    assert a.create_revision == second.revision - 1
    assert (b.key, b.lease) == (b"b", with_ttl.lease)


def test_snapshot_is_consistent_while_writes_go_on(client: Client) -> None:
    keys = [f"k/{i:04d}".encode() for i in range(2 * CHUNK + 10)]
    revision = put_keys(client, keys)
    with client.snapshot() as snapshot:
        first = list(itertools.islice(snapshot, 5))
        # Writes after the snapshot began, behind and ahead of where it has got to.
        client.delete("k/0001")
        client.put("k/1500", "changed")
        client.put("k/9999", "new")
        rest = list(snapshot)
    assert snapshot.revision == revision
    check_keys(first + rest, keys)
    assert client.get_kv("k/1500") is not None
    assert client.count() == len(keys)


def test_snapshot_of_an_empty_store(client: Client) -> None:
    with client.snapshot() as snapshot:
        assert snapshot.revision == 1  # etcd's numbering: an empty store is at 1
        assert snapshot.leases == ()
        assert list(snapshot) == []
        assert snapshot.complete


def test_cancelling_a_snapshot_ends_its_iteration(client: Client) -> None:
    put_keys(client, [f"c/{i:05d}".encode() for i in range(3 * CHUNK)])
    snapshot = client.snapshot()
    assert next(snapshot).key == b"c/00000"
    snapshot.cancel()
    assert snapshot.cancelled
    # At once: not even the rest of the chunk already received comes.
    assert list(snapshot) == []
    assert not snapshot.complete
    snapshot.cancel()  # again: nothing happens
    assert "cancelled" in repr(snapshot)


def test_closing_the_client_under_a_snapshot_raises_instead_of_ending_short(
    client: Client,
) -> None:
    put_keys(client, [f"c/{i:05d}".encode() for i in range(3 * CHUNK)])
    snapshot = client.snapshot()
    assert next(snapshot).key == b"c/00000"
    client.close()
    rest: list[KeyValue] = []
    with pytest.raises(RequestFailed) as raised:
        rest.extend(snapshot)  # the keys already received, then the error
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert "the snapshot stream" in raised.value.message
    assert "was cut" in raised.value.message
    assert len(rest) < 3 * CHUNK - 1
    assert not snapshot.complete
    assert not snapshot.cancelled


def test_a_snapshot_the_server_cuts_with_cancelled_raises(cutting_address: str) -> None:
    with Client(cutting_address) as client, client.snapshot() as snapshot:
        assert next(snapshot).key == SENT_KEY
        with pytest.raises(RequestFailed) as raised:
            next(snapshot)
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert f"the snapshot stream from kvserver at {cutting_address} was cut" in str(raised.value)
    assert CUT_DETAILS in str(raised.value)
    assert not snapshot.complete


def test_snapshot_with_tokens(token_server: KvServer) -> None:
    with Client(token_server.address, token=READ_TOKEN) as reader, reader.snapshot() as snapshot:
        assert isinstance(snapshot.revision, int)
        list(snapshot)
        assert snapshot.complete
    # A copy holds every key: a token confined to a prefix may not take one.
    with Client(token_server.address, token=SCOPED_TOKEN) as scoped:
        with pytest.raises(PermissionDenied) as raised:
            scoped.snapshot()
        assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    with Client(token_server.address) as anonymous, pytest.raises(Unauthenticated):
        anonymous.snapshot()


def test_snapshot_of_an_unreachable_server(unreachable_address: str) -> None:
    with Client(unreachable_address, timeout=2.0) as client, pytest.raises(ServerUnavailable):
        client.snapshot()


def test_snapshot_of_a_silent_server_fails_within_the_timeout(silent_address: str) -> None:
    with Client(silent_address, timeout=0.3) as client, pytest.raises(ServerUnavailable):
        client.snapshot()


def test_snapshot_of_a_closed_client_is_refused(server: KvServer) -> None:
    client = Client(server.address)
    client.close()
    with pytest.raises(ValueError, match="closed"):
        client.snapshot()
