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
saw revision N resumes from N + 1 and misses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keyvalue._proto import kv_pb2
from keyvalue.key_value import KeyValue
from keyvalue.stream import CancellableStream

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


class Watch(CancellableStream[Event]):
    """The events of one watch stream, in revision order; also a context manager.

    Iterating blocks until the next event. Iteration ends (``StopIteration``)
    at once when the watch is cancelled, from any thread (events already
    received are not yielded), or when the server ends the stream with
    ``OK``; a failure raises a :class:`~keyvalue.errors.KeyValueError`
    (:class:`~keyvalue.errors.Compacted` when ``start_revision`` is older than
    the history the server keeps; :class:`~keyvalue.errors.RequestFailed`,
    ``CANCELLED``, when the stream is cancelled other than by :meth:`cancel`:
    by the server, or by :meth:`~keyvalue.Client.close`).

    Args:
        call: The grpcio server-streaming call of ``keyvalue.v1.KV/Watch`` (a
            ``grpc.Call`` that is also an iterator of ``WatchResponse``).
        address: The server's address, for error messages.
    """

    _what = "watch"

    def _read_more(self) -> bool:
        """Receive and queue the next response's events; blocks until it comes."""
        # The server ending the stream ends the iteration too (StopIteration).
        response: kv_pb2.WatchResponse | None = self._receive()
        if response is None:
            return False
        self._pending.extend(Event.from_pb(event) for event in response.events)
        return True

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "open"
        return f"<Watch {state}>"
