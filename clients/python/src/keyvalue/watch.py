"""Watches: a stream of :class:`Event` for a key, a prefix or a range.

:meth:`keyvalue.Client.watch` returns a :class:`Watch`, an iterator that is also
a context manager; leaving the ``with`` block (or calling :meth:`Watch.cancel`)
ends the stream::

    with client.watch("jobs/", prefix=True) as events:
        for event in events:
            print(event.kind, event.kv.key, event.kv.value)

When :meth:`~keyvalue.Client.watch` returns, the server has registered the
watch: every later change is seen. With ``start_revision`` the watch first
replays the changes from that revision on, then goes on live; a client that
saw revision N resumes from N + 1 and misses nothing. A watch does that by
itself when its connection is lost or the server restarts (``resume=True``,
the default): no event is lost or yielded twice, and if the server no longer
keeps the history it would need, iterating raises
:class:`~keyvalue.errors.Compacted` instead of skipping the gap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from keyvalue._proto import kv_pb2
from keyvalue.errors import KeyValueError, error_for_status
from keyvalue.key_value import BytesLike, KeyValue, optional_bytes, to_bytes
from keyvalue.retry import RetryPolicy
from keyvalue.stream import CancellableStream, StreamBase

EventKind = Literal["put", "delete", "expire"]
"""What happened to the key: written, deleted, or deleted because its lease expired.

A kind this client does not know (sent by a newer server) stays the ``int`` on
the wire: see :attr:`Event.kind`.
"""

_KIND_OF: dict[int, EventKind] = {
    kv_pb2.Event.PUT: "put",
    kv_pb2.Event.DELETE: "delete",
    kv_pb2.Event.EXPIRE: "expire",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One change to one key.

    Attributes:
        kind: ``"put"``, ``"delete"`` or ``"expire"``; for a kind this client
            does not know (a newer server's), the number on the wire, an ``int``,
            so that such an event passes through instead of failing the watch.
        kv: For a put, the new state. For a delete or an expiry, the key, with
            ``mod_revision`` the revision of the deletion (and an empty value).
    """

    kind: EventKind | int
    kv: KeyValue

    @property
    def revision(self) -> int:
        """The revision of the change."""
        return self.kv.mod_revision

    @classmethod
    def from_pb(cls, message: kv_pb2.Event) -> Event:
        """The event of a wire ``keyvalue.v1.Event``; an unknown kind stays its number."""
        kind = _KIND_OF.get(message.kind, int(message.kind))
        return cls(kind=kind, kv=KeyValue.from_pb(message.kv))


RESUME_POLICY = RetryPolicy(attempts=12, initial_backoff=0.1, max_backoff=2.0)
"""How a watch tries to resume when its client has no retry policy: about 15 s in all."""

_RESUMED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Failures of a watch stream that mean the connection was lost, not the watch refused."""


class WatchCursor:
    """Where a watch is: what it watches, and the revision it needs next.

    Shared by :class:`Watch` and the asyncio client's watch: both resume a
    lost stream with :meth:`request`, from the revision after the last event
    they yielded, and pass what they receive through :meth:`accept`, which
    drops what was already yielded.

    Args:
        key: The key, the prefix, or the first key of the range.
        prefix: Every key that starts with ``key``.
        range_end: The keys from ``key`` (inclusive) to this (exclusive).
        start_revision: The first revision wanted (0: from now, without resume).
        resume: Whether a lost stream is resumed.
    """

    def __init__(
        self,
        key: BytesLike,
        *,
        prefix: bool,
        range_end: BytesLike | None,
        start_revision: int,
        resume: bool,
    ) -> None:
        self._request = kv_pb2.WatchRequest(
            key=to_bytes(key), range_end=optional_bytes(range_end), prefix=prefix
        )
        self.next_revision = start_revision
        """The revision of the first change not yet yielded (0: unknown, from now)."""
        self.resume = resume

    def request(self) -> kv_pb2.WatchRequest:
        """The request that watches from :attr:`next_revision` on."""
        request = kv_pb2.WatchRequest()
        request.CopyFrom(self._request)
        request.start_revision = self.next_revision
        return request

    def accept(self, response: kv_pb2.WatchResponse) -> list[Event]:
        """The events of ``response`` not yielded yet; they advance :attr:`next_revision`."""
        events = [Event.from_pb(event) for event in response.events]
        fresh = [event for event in events if event.revision >= self.next_revision]
        if fresh:
            self.next_revision = fresh[-1].revision + 1
        return fresh

    def resumes_after(self, failure: KeyValueError | None) -> bool:
        """Whether to watch again after the stream ended (``None``: with ``OK``).

        A watch never ends by itself, so a stream the server closed (a server
        shutting down) is resumed like a lost connection.
        """
        return self.resume and (failure is None or failure.code in _RESUMED_CODES)

    def check_server_revision(self, current: int, address: str) -> None:
        """Refuse to resume on a server whose revision is below what the watch has seen.

        A server that lost its data (a memory backend restarted, a data dir
        replaced) counts revisions again from where it is: watching on from
        :attr:`next_revision` would skip every change until it got there.

        Raises:
            Compacted: ``current`` is below the last revision yielded.
        """
        if current < self.next_revision - 1:
            raise error_for_status(
                grpc.StatusCode.OUT_OF_RANGE,
                f"kvserver at {address} is at revision {current}, behind revision "
                f"{self.next_revision - 1} this watch has seen: it lost its history "
                f"(restarted without its data?); read the keys again and watch from there",
                service="v1",
            )

    def policy(self, client_policy: RetryPolicy | None) -> RetryPolicy | None:
        """How to retry (re)starting the stream: without resume, the client's policy."""
        if not self.resume:
            return client_policy
        return client_policy or RESUME_POLICY


class WatchBase(StreamBase[Event]):
    """What :class:`Watch` and the asyncio client's watch keep: where to resume, and how.

    Args:
        call: The started grpcio server-streaming call of ``keyvalue.v1.KV/Watch``.
        address: The server's address, for error messages.
        cursor: What is watched, and from where to resume.
        restart: Given the event :meth:`cancel` sets, starts the call again
            from ``cursor``, retrying as allowed, and checks the server has not
            gone back in revisions (:meth:`WatchCursor.check_server_revision`);
            ``None`` if cancelled meanwhile. For the asyncio client, a
            coroutine function.
    """

    _what = "watch"

    def __init__(
        self,
        call: Any,
        address: str,
        cursor: WatchCursor,
        restart: Callable[[threading.Event], Any],
    ) -> None:
        super().__init__(call, address)
        self._cursor = cursor
        self._restart = restart
        self._leaving = False
        """Set by :meth:`leave`: the call's end is a move, not a failure."""

    def leave(self) -> None:
        """End the current call and resume on a new one (the connection is going away).

        Does nothing for a watch that does not resume, or is cancelled.
        """
        if self._cursor.resume and not self._cancelled:
            self._leaving = True
            self._call.cancel()

    def _resumes_after(self, failure: KeyValueError | None) -> bool:
        """Whether to watch again after the stream ended so (``None``: with ``OK``)."""
        return self._leaving or self._cursor.resumes_after(failure)

    def _resumed_on(self, call: Any) -> None:
        """Carry on with ``call``, a new stream from :attr:`next_revision`."""
        self._call = call
        self._leaving = False

    @property
    def next_revision(self) -> int:
        """The revision of the first change not yet yielded (0: unknown)."""
        return self._cursor.next_revision

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "open"
        return f"<{type(self).__name__} {state} next_revision={self._cursor.next_revision}>"


class Watch(WatchBase, CancellableStream[Event]):
    """The events of one watch stream, in revision order; also a context manager.

    Iterating blocks until the next event. Iteration ends (``StopIteration``)
    at once when the watch is cancelled, from any thread (events already
    received are not yielded). A resuming watch (the default) watches again
    when the connection is lost or the server closes the stream, from the
    revision after the last event yielded; without ``resume``, the server
    ending the stream with ``OK`` ends the iteration. A failure raises a
    :class:`~keyvalue.errors.KeyValueError`
    (:class:`~keyvalue.errors.Compacted` when the history the watch needs is
    gone; :class:`~keyvalue.errors.ServerUnavailable` when it could not
    resume; :class:`~keyvalue.errors.RequestFailed`, ``CANCELLED``, when the
    stream is cancelled other than by :meth:`cancel`: by the server, or by
    :meth:`~keyvalue.Client.close`).

    Args: see :class:`WatchBase`.
    """

    def _read_more(self) -> bool:
        """Receive and queue the next response's events; blocks until it comes."""
        while True:
            try:
                response: kv_pb2.WatchResponse | None = self._receive()
            except StopIteration:
                if not self._resumes_after(None):
                    raise
            except KeyValueError as failure:
                if not self._resumes_after(failure):
                    raise
            else:
                if response is None:
                    return False
                self._pending.extend(self._cursor.accept(response))
                return True
            call = self._restart(self._stopped)
            if call is None or self._cancelled:  # cancelled while this one restarted
                if call is not None:
                    call.cancel()
                return False
            self._resumed_on(call)
