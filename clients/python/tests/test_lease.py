"""Tests of TTLs and leases against a real kvserver.

These are the only tests that sleep: a TTL needs time to run out. TTLs are
short and every sleep leaves a margin of several hundred milliseconds.
"""

from __future__ import annotations

import time

import grpc
import pytest

from keyvalue import Client, Lease, LeaseNotFound


def test_lease_grant_and_info(client: Client) -> None:
    lease = client.lease_grant(10)
    assert lease.id > 0
    assert lease.ttl == 10.0
    info = client.lease_info(lease.id)
    assert (info.id, info.ttl) == (lease.id, 10.0)
    assert 9.0 < info.remaining <= 10.0
    assert client.lease_grant(10).id != lease.id


def test_put_with_a_ttl_expires_for_get_kv_and_range(client: Client, key: str) -> None:
    result = client.put(f"{key}/short", "v", ttl=0.3)
    client.put(f"{key}/long", "v", ttl=30)
    short = client.get_kv(f"{key}/short")
    assert short is not None
    assert short.lease == result.lease != 0
    assert client.lease_info(result.lease).ttl == pytest.approx(0.3)
    assert client.count(f"{key}/", prefix=True) == 2
    time.sleep(0.3 + 0.5)
    assert client.get_kv(f"{key}/short") is None
    assert [kv.key for kv in client.range(f"{key}/", prefix=True)] == [f"{key}/long".encode()]
    with pytest.raises(LeaseNotFound):
        client.lease_info(result.lease)


def test_ttls_are_sent_in_milliseconds_rounded_up(client: Client) -> None:
    assert client.lease_grant(0.0001).ttl == 0.001, "never rounded down to 0 (no TTL)"
    assert client.lease_grant(1.2345).ttl == pytest.approx(1.235)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            client.lease_grant(bad)


def test_keep_alive_restarts_the_ttl(client: Client, key: str) -> None:
    lease = client.lease_grant(1.0)
    client.put(key, "kept", lease=lease.id)
    time.sleep(0.6)
    kept = client.lease_keep_alive(lease.id)
    assert kept == Lease(id=lease.id, ttl=1.0)
    assert client.lease_info(lease.id).remaining > 0.9
    time.sleep(0.6)  # 1.2 s after the grant: alive only thanks to the keep-alive
    kv = client.get_kv(key)
    assert kv is not None
    assert kv.lease == lease.id


def test_an_expired_lease_takes_its_keys_and_cannot_be_kept_alive(client: Client, key: str) -> None:
    lease = client.lease_grant(0.3)
    client.batch_put({f"{key}/a": "1", f"{key}/b": "2"}, lease=lease.id)
    assert client.count(f"{key}/", prefix=True) == 2
    time.sleep(0.3 + 0.5)
    assert client.count(f"{key}/", prefix=True) == 0
    with pytest.raises(LeaseNotFound) as raised:
        client.lease_keep_alive(lease.id)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert "expired or revoked" in raised.value.message


def test_revoke_deletes_the_keys_of_the_lease(client: Client, key: str) -> None:
    lease = client.lease_grant(30)
    client.put(f"{key}/a", "1", lease=lease.id)
    client.put(f"{key}/b", "2", lease=lease.id)
    client.put(f"{key}/c", "3")
    assert client.lease_revoke(lease.id) == 2
    assert [kv.key for kv in client.range(f"{key}/", prefix=True)] == [f"{key}/c".encode()]
    for call in (client.lease_revoke, client.lease_keep_alive, client.lease_info):
        with pytest.raises(LeaseNotFound):
            call(lease.id)


def test_a_put_without_a_lease_detaches_the_key(client: Client, key: str) -> None:
    lease = client.lease_grant(30)
    client.put(key, "leased", lease=lease.id)
    client.put(key, "free")
    assert client.lease_revoke(lease.id) == 0
    kv = client.get_kv(key)
    assert kv is not None
    assert (kv.value, kv.lease) == (b"free", 0)


def test_unknown_leases_raise_lease_not_found(client: Client) -> None:
    for call in (client.lease_info, client.lease_keep_alive, client.lease_revoke):
        with pytest.raises(LeaseNotFound) as raised:
            call(424_242)
        assert "424242" in raised.value.message


def test_leases_are_listed_in_pages_with_their_keys(client: Client, key: str) -> None:
    mine = [client.lease_grant(30) for _ in range(5)]
    for n, lease in enumerate(mine):
        for k in range(n):
            client.put(f"{key}/{n}/{k}", "v", lease=lease.id)
    listed = {info.id: info for info in client.leases(keys=2, page_size=2)}
    for n, lease in enumerate(mine):
        info = listed[lease.id]
        assert info.ttl == 30.0
        assert info.keys == tuple(f"{key}/{n}/{k}".encode() for k in range(min(n, 2)))
        assert info.more_keys == (n > 2)
    ids = [info.id for info in client.leases()]
    assert ids == sorted(ids), "in id order"
    assert set(ids) >= {lease.id for lease in mine}
    assert all(info.keys == () for info in client.leases())
    one = client.lease_info(mine[4].id, keys=10)
    assert one.keys == tuple(f"{key}/4/{k}".encode() for k in range(4))
    assert not one.more_keys
    client.lease_revoke(mine[0].id)
    assert mine[0].id not in {info.id for info in client.leases()}
    with pytest.raises(ValueError, match="page_size must be above zero"):
        list(client.leases(page_size=0))
    with pytest.raises(ValueError, match="keys must not be negative"):
        client.lease_info(mine[1].id, keys=-1)
