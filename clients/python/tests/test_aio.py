"""AsyncClient against a real kvserver: the API of Client, awaited, under asyncio.

Each test runs its coroutine with plain ``asyncio.run`` (no plugin), bounded
by a timeout so a hang fails instead of blocking the suite. The lease, lock
and update tests are the asyncio versions of test_recipes.py's; the watch
restart test that of test_watch_resume.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import sys
import textwrap
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from credentials import WRITE_TOKEN, Pki
from kvserver_process import KvServer, serve

from keyvalue import (
    AsyncClient,
    AsyncWatch,
    Client,
    Compacted,
    Compare,
    DeadlineExceeded,
    Event,
    KeyNotFound,
    LeaseNotFound,
    Op,
    RetryPolicy,
    ServerUnavailable,
    Unauthenticated,
)
from keyvalue.errors import error_for_status

T = TypeVar("T")
LIMIT = 30.0
"""The most any test's coroutine may take, in seconds."""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, LIMIT))


async def take(watch: AsyncWatch, count: int, within: float = 10.0) -> list[Event]:
    """The next ``count`` events, or fewer if they do not all come ``within`` seconds."""
    events: list[Event] = []

    async def collect() -> None:
        async for event in watch:
            events.append(event)
            if len(events) == count:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), within)
    return events


@pytest.fixture
def disk_server(kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvServer]:
    """A kvserver of its own on the disk backend, which the test restarts."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--shutdown-grace", "300ms"], disk=True)


def test_the_unary_calls_answer_as_the_blocking_client_s(server: KvServer, key: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            await client.set(key, "tutorial")
            assert await client.get(key) == "tutorial"
            with pytest.raises(KeyNotFound):
                await client.get(f"{key}/never")
            put = await client.put(f"{key}/a", "1", prev_kv=True)
            kv = await client.get_kv(f"{key}/a", timeout=2)
            assert kv is not None
            assert (kv.value, kv.mod_revision) == (b"1", put.revision)
            await client.batch_put({f"{key}/b": "2", f"{key}/c": b"3"})
            assert await client.count(f"{key}/", prefix=True) == 3
            got = await client.batch_get([f"{key}/a", f"{key}/zz"])
            assert got[0] == kv
            assert got[1] is None
            cas = await client.compare_and_set(f"{key}/a", "2", expect_revision=put.revision)
            assert cas.succeeded
            stale = await client.compare_and_set(f"{key}/a", "3", expect_revision=put.revision)
            assert not stale.succeeded
            result = await client.txn([Compare.exists(f"{key}/a")], success=[Op.get(f"{key}/a")])
            assert result.succeeded
            assert await client.delete(f"{key}/", prefix=True) == 3

    run(main())


def test_range_is_an_async_iterator_that_honours_limit_and_pages(
    server: KvServer, key: str
) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            keys = [f"{key}/{i:02d}".encode() for i in range(25)]
            await client.batch_put({k: k for k in keys})
            every = [kv.key async for kv in client.range(f"{key}/", prefix=True, page_size=7)]
            assert every == keys
            limited = [kv.key async for kv in client.range(f"{key}/", prefix=True, limit=3)]
            assert limited == keys[:3]

    run(main())


def test_a_watch_sees_a_put_made_right_after_it_returns(server: KvServer, key: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            async with await client.watch(key) as watch:
                revision = (await client.put(key, "seen")).revision
                events = await take(watch, 1)
                assert [(e.kind, e.kv.value, e.revision) for e in events] == [
                    ("put", b"seen", revision)
                ]
            assert watch.cancelled
            assert await take(watch, 1, within=0.2) == []

    run(main())


def test_an_async_watch_leaves_a_server_that_stops_gracefully_at_once(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async def main(server: KvServer) -> None:
        async with (
            AsyncClient(server.address, wait_for_ready=True) as client,
            await client.watch("agoaway/", prefix=True) as watch,
        ):
            revisions = [(await client.put("agoaway/0", "v")).revision]
            seen = await take(watch, 1)
            started = time.monotonic()
            await asyncio.to_thread(server.restart)
            assert time.monotonic() - started < 5, "the stop waited for the watch"
            revisions.append((await client.put("agoaway/1", "v")).revision)
            seen += await take(watch, 1)
            assert [event.revision for event in seen] == revisions

    for server in serve(kvserver_bin, tmp_path_factory, disk=True):  # the default 10 s grace
        run(main(server))


@pytest.mark.parametrize("kill", [False, True], ids=["graceful restart", "kill -9"])
def test_an_async_watch_survives_a_restart_without_losing_or_repeating_events(
    disk_server: KvServer, kill: bool
) -> None:
    async def main() -> None:
        async with (
            AsyncClient(disk_server.address, wait_for_ready=True) as client,
            await client.watch("aresume/", prefix=True) as watch,
        ):
            revisions = [(await client.put(f"aresume/{i}", "v")).revision for i in range(2)]
            seen = await take(watch, 2)
            await asyncio.to_thread(disk_server.restart, kill=kill)
            for i in range(2, 5):
                revisions.append((await client.put(f"aresume/{i}", "v")).revision)
            seen += await take(watch, 3)
            assert [event.revision for event in seen] == revisions

    run(main())


def test_an_async_watch_resumes_again_when_the_server_goes_away_as_it_resumes(
    disk_server: KvServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test_watch_resume.py's race, forced the same way: the read of the
    # server's revision that follows a resumed stream's start fails once.
    async def main() -> None:
        async with (
            AsyncClient(disk_server.address, wait_for_ready=True) as client,
            await client.watch("aagain/", prefix=True) as watch,
        ):
            failed: list[object] = []
            real_run = client.run

            async def run_failing_once(call: Any) -> Any:
                if not failed and call.method == "Range" and call.request.key == b"aagain/":
                    failed.append(call)
                    raise error_for_status(grpc.StatusCode.UNAVAILABLE, "gone as it resumed")
                return await real_run(call)

            revisions = [(await client.put("aagain/0", "v")).revision]
            seen = await take(watch, 1)
            monkeypatch.setattr(client, "run", run_failing_once)
            await asyncio.to_thread(disk_server.restart)
            for i in range(1, 3):
                revisions.append((await client.put(f"aagain/{i}", "v")).revision)
            seen += await take(watch, 2)
            assert failed, "the watch did not read the server's revision as it resumed"
            assert [event.revision for event in seen] == revisions

    run(main())


def test_cancelling_an_async_watch_while_it_resumes_ends_it_at_once(disk_server: KvServer) -> None:
    async def main() -> None:
        # Resumes wait 5 s between tries: a cancel must not wait them out.
        slow = RetryPolicy(attempts=3, initial_backoff=5.0, max_backoff=5.0)
        async with AsyncClient(disk_server.address, retry=slow) as client:
            watch = await client.watch("acancel/", prefix=True)

            async def read() -> list[Event]:
                return [event async for event in watch]

            reader = asyncio.create_task(read())
            await asyncio.to_thread(disk_server.stop)
            await asyncio.sleep(0.5)  # the stream is lost; the resume waits to try again
            started = time.monotonic()
            watch.cancel()
            assert await asyncio.wait_for(reader, 10) == []
            took = time.monotonic() - started
            assert took < 1, f"the resume's backoff noticed the cancel after {took:.1f} s"
            assert watch.cancelled

    run(main())
    disk_server.start_again()


def test_an_abandoned_watch_in_a_task_does_not_keep_asyncio_run_from_returning(
    server: KvServer,
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from keyvalue import AsyncClient

        async def forever(client):
            async for _event in await client.watch("abandoned"):
                pass

        async def main():
            client = AsyncClient({server.address!r})
            asyncio.create_task(forever(client))
            await asyncio.sleep(0.3)  # the watch is registered and waiting

        asyncio.run(main())
        print("returned")
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "returned"
    assert "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 10


def test_a_snapshot_is_an_async_iterator_of_every_key(server: KvServer, key: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            revision = await client.batch_put({f"{key}/1": "a", f"{key}/2": "b"})
            async with await client.snapshot() as snapshot:
                assert snapshot.revision >= revision
                mine = [kv.key async for kv in snapshot if kv.key.startswith(key.encode())]
            assert mine == [f"{key}/1".encode(), f"{key}/2".encode()]
            assert snapshot.complete

    run(main())


def test_a_call_timeout_raises_deadline_exceeded(silent_address: str) -> None:
    async def main() -> None:
        async with AsyncClient(silent_address, timeout=None) as client:
            with pytest.raises(DeadlineExceeded):
                await client.get_kv("k", timeout=0.3)
            with pytest.raises(DeadlineExceeded):
                await client.watch("k", resume=False, timeout=0.3)

    run(main())


def test_a_read_is_retried_across_a_restart(disk_server: KvServer) -> None:
    policy = RetryPolicy(attempts=20, initial_backoff=0.1, max_backoff=1.0)

    async def main() -> None:
        async with AsyncClient(disk_server.address, retry=policy) as client:
            await client.put("aretry", "kept")
            disk_server.stop()

            async def start_later() -> None:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(disk_server.start_again)

            starting = asyncio.create_task(start_later())
            kv = await client.get_kv("aretry")
            await starting
            assert kv is not None
            assert kv.value == b"kept"
            disk_server.stop()
            with pytest.raises(ServerUnavailable):
                await client.put("aretry", "not retried")
            disk_server.start_again()

    run(main())


def test_a_kept_lease_outlives_three_ttls_and_is_revoked_at_exit(
    server: KvServer, key: str
) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            async with client.lease(1.0) as lease:
                await client.put(key, "alive", lease=lease.id)
                await asyncio.sleep(3.2)
                assert await client.get_kv(key) is not None
                assert lease.keep_alives >= 3
            assert await client.get_kv(key) is None
            with pytest.raises(LeaseNotFound):
                await client.lease_info(lease.id)

    run(main())


def test_a_lock_contended_by_eight_tasks_has_one_holder_at_a_time(
    server: KvServer, key: str
) -> None:
    async def main() -> None:
        inside = 0
        most_inside = 0
        fencing: list[int] = []
        async with AsyncClient(server.address) as client:

            async def contend() -> None:
                nonlocal inside, most_inside
                for _ in range(3):
                    async with client.lock(key, ttl=2) as held:
                        inside += 1
                        most_inside = max(most_inside, inside)
                        fencing.append(held.revision)
                        await asyncio.sleep(0.005)
                        inside -= 1

            await asyncio.gather(*(contend() for _ in range(8)))
            assert await client.get_kv(key) is None
        assert most_inside == 1
        assert len(fencing) == 24
        assert fencing == sorted(set(fencing))

    run(main())


def test_update_under_sixteen_concurrent_tasks_loses_no_update(server: KvServer, key: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:

            async def increment() -> None:
                for _ in range(10):
                    await client.update(key, lambda value: str(int(value or b"0") + 1))

            await asyncio.gather(*(increment() for _ in range(16)))
            kv = await client.get_kv(key)
            assert kv is not None
            assert (kv.value, kv.version) == (b"160", 160)

    run(main())


def test_bad_arguments_are_refused_as_by_the_blocking_client() -> None:
    with pytest.raises(ValueError, match="has no port"):
        AsyncClient("127.0.0.1:")
    with pytest.raises(ValueError, match="timeout"):
        AsyncClient("127.0.0.1:1", timeout=0)


def test_an_async_watch_from_a_revision_the_server_no_longer_keeps_raises_compacted(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async def main(address: str) -> None:
        async with AsyncClient(address) as client:
            first = (await client.put("old", "1")).revision
            for value in "234":
                await client.put("old", value)
            with pytest.raises(Compacted):
                await client.watch("old", start_revision=first)

    for server in serve(kvserver_bin, tmp_path_factory, ["--watch-history", "1"]):
        run(main(server.address))


def test_async_client_has_every_method_of_client_with_the_same_parameters() -> None:
    public = [name for name in vars(Client) if not name.startswith("_")]
    assert len(public) > 20
    for name in public:
        blocking = getattr(Client, name)
        if not callable(blocking):
            continue
        awaited = getattr(AsyncClient, name, None)
        assert awaited is not None, f"AsyncClient has no {name}"
        assert inspect.signature(awaited).parameters == inspect.signature(blocking).parameters, name


def test_tls_and_a_token_reach_the_server_as_with_the_blocking_client(
    tls_token_server: KvServer, pki: Pki, key: str
) -> None:
    async def main() -> None:
        address = tls_token_server.localhost_address
        async with AsyncClient(address, ca_file=pki.ca, token=WRITE_TOKEN) as client:
            await client.put(key, "secure")
            async with await client.watch(key) as watch:
                revision = (await client.put(key, "watched")).revision
                assert [event.revision for event in await take(watch, 1)] == [revision]
        async with AsyncClient(address, ca_file=pki.ca) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.get_kv(key)

    run(main())


def test_leases_are_listed_page_by_page(server: KvServer, key: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            mine = [await client.lease_grant(30) for _ in range(3)]
            await client.put(f"{key}/a", "v", lease=mine[1].id)
            listed = [info async for info in client.leases(keys=5, page_size=1)]
            by_id = {info.id: info for info in listed}
            assert [info.id for info in listed] == sorted(by_id)
            assert by_id[mine[1].id].keys == (f"{key}/a".encode(),)
            assert by_id[mine[0].id].keys == ()
            assert (await client.lease_info(mine[1].id, keys=1)).keys == (f"{key}/a".encode(),)

    run(main())
