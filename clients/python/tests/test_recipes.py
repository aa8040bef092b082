"""Kept leases, locks and the update loop of Client, against a real kvserver.

Lock and update run contended by many threads sharing one client, as the
client's thread-safety allows. TTLs are short (under 2 s).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyvalue import Client, LeaseNotFound
from keyvalue.recipes import lock_steps

THREADS = 8
ROUNDS = 3
WRITERS = 16
UPDATES = 10


def test_a_kept_lease_outlives_three_ttls_and_is_revoked_at_exit(client: Client, key: str) -> None:
    ttl = 1.0
    with client.lease(ttl) as lease:
        client.put(key, "alive", lease=lease.id)
        time.sleep(3 * ttl + 0.2)
        kv = client.get_kv(key)
        assert kv is not None
        assert kv.lease == lease.id
        assert lease.keep_alives >= 3
        assert lease.lost is None
    assert client.get_kv(key) is None
    with pytest.raises(LeaseNotFound):
        client.lease_info(lease.id)


def test_a_kept_lease_is_revoked_when_the_block_raises(client: Client, key: str) -> None:
    def hold_and_fail() -> None:
        with client.lease(5) as lease:
            client.put(key, "v", lease=lease.id)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        hold_and_fail()
    assert client.get_kv(key) is None


def test_a_lease_revoked_by_someone_else_is_reported_lost(client: Client) -> None:
    with client.lease(0.3) as lease:
        client.lease_revoke(lease.id)
        deadline = time.monotonic() + 3
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert isinstance(lease.lost, LeaseNotFound)


def test_a_lock_contended_by_eight_threads_has_one_holder_at_a_time(
    client: Client, key: str
) -> None:
    guard = threading.Lock()
    inside = 0
    most_inside = 0
    fencing: list[int] = []

    def contend() -> None:
        nonlocal inside, most_inside
        for _ in range(ROUNDS):
            with client.lock(key, ttl=2) as held:
                with guard:
                    inside += 1
                    most_inside = max(most_inside, inside)
                    fencing.append(held.revision)
                time.sleep(0.005)
                with guard:
                    inside -= 1

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(contend) for _ in range(THREADS)]:
            future.result(timeout=30)
    assert most_inside == 1
    assert len(fencing) == THREADS * ROUNDS
    assert fencing == sorted(fencing), "each new holder has a larger revision"
    assert len(set(fencing)) == len(fencing)
    assert client.get_kv(key) is None, "released: the lock key is gone"


def test_a_lock_whose_holder_died_is_free_after_its_ttl(client: Client, key: str) -> None:
    # A holder that never keeps its lease alive nor releases: as if it crashed.
    dead = client._drive(lock_steps(key, client.lease_grant(0.4).id))
    started = time.monotonic()
    with client.lock(key, ttl=2) as held:
        waited = time.monotonic() - started
        assert held.revision > dead.revision
    assert 0.2 < waited < 5


def test_update_under_sixteen_concurrent_writers_loses_no_update(client: Client, key: str) -> None:
    def increment() -> list[int]:
        revisions = []
        for _ in range(UPDATES):
            result = client.update(key, lambda value: str(int(value or b"0") + 1))
            revisions.append(result.revision)
        return revisions

    with ThreadPoolExecutor(WRITERS) as pool:
        results = [pool.submit(increment) for _ in range(WRITERS)]
        revisions = [revision for future in results for revision in future.result(timeout=60)]
    kv = client.get_kv(key)
    assert kv is not None
    assert kv.value == str(WRITERS * UPDATES).encode()
    assert kv.version == WRITERS * UPDATES
    assert len(set(revisions)) == WRITERS * UPDATES


def test_update_creates_a_missing_key(client: Client, key: str) -> None:
    seen: list[bytes | None] = []

    def first(value: bytes | None) -> str:
        seen.append(value)
        return "created"

    result = client.update(key, first)
    assert seen == [None]
    assert result.succeeded
    assert result.current is not None
    assert result.current.version == 1
