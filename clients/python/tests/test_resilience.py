"""Retries and wait-for-ready across a real kvserver restart (same port, same data dir).

Each test runs its own disk-backed kvserver, stops it, and starts it again on
the port of its first run while a client call is under way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvserver_process import KvServer, serve

from keyvalue import Client, RetryPolicy, ServerUnavailable

# Tries spread over ~8 s on average (full jitter): far more than a restart takes.
PATIENT = RetryPolicy(attempts=20, initial_backoff=0.1, max_backoff=1.0)


@pytest.fixture
def disk_server(kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvServer]:
    """A kvserver of its own on the disk backend, which the test restarts."""
    yield from serve(kvserver_bin, tmp_path_factory, disk=True)


def _start_later(server: KvServer, delay: float = 0.5) -> threading.Thread:
    """Start the stopped server again after ``delay`` seconds, from another thread."""

    def start() -> None:
        time.sleep(delay)
        server.start_again()

    thread = threading.Thread(target=start)
    thread.start()
    return thread


def test_a_read_is_retried_until_the_restarted_server_answers(disk_server: KvServer) -> None:
    with Client(disk_server.address, retry=PATIENT) as client, Client(disk_server.address) as bare:
        revision = client.put("resilience/read", "kept").revision
        disk_server.stop()
        # Without retries, the read fails at once...
        with pytest.raises(ServerUnavailable):
            bare.get_kv("resilience/read")
        # ...with them, it waits out the restart.
        restarting = _start_later(disk_server)
        kv = client.get_kv("resilience/read")
        restarting.join()
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"kept", revision)


def test_a_write_is_retried_only_when_marked_idempotent(disk_server: KvServer) -> None:
    with Client(disk_server.address, retry=PATIENT) as client:
        client.put("resilience/write", "first")
        disk_server.stop()
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            client.put("resilience/write", "not retried")
        assert time.monotonic() - started < 1, "an unmarked write must not be retried"
        restarting = _start_later(disk_server)
        result = client.put("resilience/write", "retried", idempotent=True)
        restarting.join()
        kv = client.get_kv("resilience/write")
    assert kv is not None
    assert (kv.value, kv.mod_revision, kv.version) == (b"retried", result.revision, 2)


def test_wait_for_ready_carries_a_call_across_a_restart(disk_server: KvServer) -> None:
    with Client(disk_server.address, timeout=10, wait_for_ready=True) as client:
        client.put("resilience/ready", "v")
        disk_server.stop()
        restarting = _start_later(disk_server)
        kv = client.get_kv("resilience/ready")
        restarting.join()
    assert kv is not None
    assert kv.value == b"v"


def test_retries_give_up_after_the_policy_s_attempts(unreachable_address: str) -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.05)
    with Client(unreachable_address, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            client.get_kv("never")
        assert time.monotonic() - started < 2


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(initial_backoff=2, max_backoff=1)
