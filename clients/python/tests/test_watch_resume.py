"""Watches that resume by themselves across a real kvserver restart and a kill -9.

The server runs on the disk backend and comes back on the same port and data
dir. A watch resumes from the revision after the last event it yielded: no
event is lost, none is repeated. If the server no longer has that history, the
watch raises Compacted instead of skipping the gap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kvserver_process import KvServer, serve
from watch_helpers import take

from keyvalue import Client, Compacted, Event, ServerUnavailable, Watch
from keyvalue.errors import error_for_status

WAIT = 10.0
"""How long a test waits for the events it expects, in seconds."""


@pytest.fixture
def disk_server(kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvServer]:
    """A kvserver of its own on the disk backend, with a short history, restarted by tests.

    kvserver waits for open streams (up to its shutdown grace) before it
    exits; resuming watches leave at once, but a watch with ``resume=False``
    stays: a short grace keeps such a restart short.
    """
    args = ["--watch-history", "3", "--shutdown-grace", "300ms"]
    yield from serve(kvserver_bin, tmp_path_factory, args, disk=True)


class _Collector:
    """Reads a watch in a thread of its own, as a program blocked in ``for event in watch``."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[Event] = []
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.watch:
                self.events.append(event)
        except BaseException as error:  # handed to the test
            self.failure = error

    def wait_for(self, count: int) -> list[Event]:
        deadline = time.monotonic() + WAIT
        while len(self.events) < count and self.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.failure is None, f"the watch failed: {self.failure!r}"
        return list(self.events)

    def stop(self) -> None:
        self.watch.cancel()
        self._thread.join(WAIT)


def _put_all(client: Client, keys: list[str]) -> list[int]:
    return [client.put(key, key).revision for key in keys]


@pytest.mark.parametrize("kill", [False, True], ids=["graceful restart", "kill -9"])
def test_a_watch_survives_a_restart_without_losing_or_repeating_events(
    disk_server: KvServer, kill: bool
) -> None:
    # wait_for_ready: the writes after the restart wait for the channel to reconnect.
    with Client(disk_server.address, wait_for_ready=True) as client:
        collector = _Collector(client.watch("resume/", prefix=True))
        try:
            revisions = _put_all(client, [f"resume/before/{i}" for i in range(3)])
            collector.wait_for(3)
            disk_server.restart(kill=kill)
            revisions += _put_all(client, [f"resume/after/{i}" for i in range(5)])
            events = collector.wait_for(8)
        finally:
            collector.stop()
    assert [event.revision for event in events] == revisions
    assert [event.kv.value for event in events] == [event.kv.key for event in events]
    assert len(events) == 8


def test_a_watch_resumes_with_the_writes_made_before_it_was_read_again(
    disk_server: KvServer,
) -> None:
    with (
        Client(disk_server.address, wait_for_ready=True) as client,
        client.watch("late/", prefix=True) as watch,
    ):
        first = client.put("late/0", "v").revision
        assert [event.revision for event in take(watch, 1)] == [first]
        disk_server.restart()
        # Written after the restart, before the watch noticed it had lost its stream.
        later = _put_all(client, ["late/1", "late/2"])
        assert [event.revision for event in take(watch, 2, within=WAIT)] == later
        assert watch.next_revision == later[-1] + 1


def test_a_watch_that_cannot_resume_without_a_gap_raises_compacted(
    disk_server: KvServer,
) -> None:
    with (
        Client(disk_server.address, wait_for_ready=True) as client,
        client.watch("gap/", prefix=True) as watch,
    ):
        client.put("gap/0", "v")
        assert len(take(watch, 1)) == 1
        disk_server.restart()
        # More writes than the restarted server's history keeps (--watch-history 3).
        _put_all(client, [f"gap/{i}" for i in range(1, 6)])
        with pytest.raises(Compacted):
            take(watch, 1, within=WAIT)


def test_without_resume_a_restart_fails_the_watch(disk_server: KvServer) -> None:
    with Client(disk_server.address) as client:
        watch = client.watch("noresume/", prefix=True, resume=False)
        disk_server.restart()
        with pytest.raises(ServerUnavailable):
            take(watch, 1, within=WAIT)


def test_a_watch_will_not_resume_on_a_server_that_lost_its_history(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The memory backend starts again from revision 0: resuming from the
    # revision after the last event would skip every change until then.
    for server in serve(kvserver_bin, tmp_path_factory, ["--shutdown-grace", "300ms"]):
        with (
            Client(server.address, wait_for_ready=True) as client,
            client.watch("lost/", prefix=True) as watch,
        ):
            _put_all(client, [f"lost/{i}" for i in range(3)])
            assert len(take(watch, 3)) == 3
            server.restart()
            client.put("lost/again", "v")
            with pytest.raises(Compacted, match="lost its history"):
                take(watch, 1, within=WAIT)


def test_a_watch_resumes_again_when_the_server_goes_away_as_it_resumes(
    disk_server: KvServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream can start on a server that is shutting down, which is gone
    # by the read that follows (the server's revision, checked on resume).
    # That race is forced here: the watch's first such read fails so.
    with Client(disk_server.address, wait_for_ready=True) as client:
        collector = _Collector(client.watch("again/", prefix=True))
        failed: list[object] = []
        real_run = client.run

        def run_failing_once(call: Any) -> Any:
            if not failed and threading.current_thread() is collector._thread:
                failed.append(call)
                raise error_for_status(grpc.StatusCode.UNAVAILABLE, "gone as the watch resumed")
            return real_run(call)

        try:
            first = client.put("again/0", "v").revision
            collector.wait_for(1)
            monkeypatch.setattr(client, "run", run_failing_once)
            disk_server.restart()
            later = _put_all(client, ["again/1", "again/2"])
            events = collector.wait_for(3)
        finally:
            collector.stop()
    assert failed, "the watch did not read the server's revision as it resumed"
    assert [event.revision for event in events] == [first, *later]


def test_cancelling_a_watch_while_it_resumes_ends_it_at_once(disk_server: KvServer) -> None:
    with Client(disk_server.address) as client:
        collector = _Collector(client.watch("cancel/", prefix=True))
        disk_server.stop()
        time.sleep(0.5)  # the stream is lost; the watch tries to resume
        started = time.monotonic()
        collector.stop()
        assert time.monotonic() - started < 1, "the resume did not notice the cancel"
        assert collector.failure is None
        assert collector.watch.cancelled
        disk_server.start_again()


@pytest.fixture
def patient_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A disk-backed kvserver with the default 10 s --shutdown-grace."""
    yield from serve(kvserver_bin, tmp_path_factory, disk=True)


def test_a_watch_leaves_a_server_that_stops_gracefully_at_once(patient_server: KvServer) -> None:
    # The server says GOAWAY and waits (up to its grace) for open streams: the
    # watch moves to a new call instead of holding the old server up.
    with Client(patient_server.address, wait_for_ready=True) as client:
        collector = _Collector(client.watch("goaway/", prefix=True))
        try:
            revisions = _put_all(client, ["goaway/0"])
            collector.wait_for(1)
            started = time.monotonic()
            patient_server.restart()
            assert time.monotonic() - started < 5, "the stop waited for the watch"
            revisions += _put_all(client, ["goaway/1"])
            events = collector.wait_for(2)
        finally:
            collector.stop()
    assert [event.revision for event in events] == revisions
