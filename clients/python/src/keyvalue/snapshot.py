"""Snapshots: a consistent copy of every key and lease, at one revision.

:meth:`keyvalue.Client.snapshot` returns a :class:`Snapshot`: its
:attr:`~Snapshot.revision` and :attr:`~Snapshot.leases` are known at once, and
iterating it yields every key, in key order, as the server streams them (1000
keys per chunk, so memory stays flat however large the store). It is also a
context manager; leaving the ``with`` block (or :meth:`Snapshot.cancel`) ends
the stream::

    with client.snapshot() as snapshot:
        print(snapshot.revision, snapshot.leases)
        for kv in snapshot:
            print(kv.key, kv.value, kv.mod_revision, kv.lease)

Writes made while the copy streams are not in it: every key is as it was at
:attr:`~Snapshot.revision`. This is what ``kv backup`` reads.
"""

from __future__ import annotations

from typing import Any

import grpc

from keyvalue._proto import kv_pb2
from keyvalue.errors import KeyValueError, error_for_status
from keyvalue.key_value import KeyValue
from keyvalue.lease import Lease
from keyvalue.stream import CancellableStream, StreamBase


class SnapshotBase(StreamBase[KeyValue]):
    """What :class:`Snapshot` and the asyncio client's snapshot keep: revision, leases, state.

    Attributes:
        revision: The store's revision the copy is at.
        leases: Every lease of the copy.
    """

    _what = "snapshot"
    _complete = False
    revision: int
    leases: tuple[Lease, ...]

    def _begin(self, first: kv_pb2.SnapshotChunk) -> None:
        """Take the revision and leases of the first chunk, and its keys."""
        self.revision = first.header.revision
        self.leases = tuple(Lease.from_pb(lease) for lease in first.leases)
        self._accept(first)

    @property
    def complete(self) -> bool:
        """Whether the server's last chunk has arrived (every key was received)."""
        return self._complete

    def _accept(self, chunk: kv_pb2.SnapshotChunk) -> None:
        """Queue the chunk's keys; note the last chunk.

        Raises:
            RequestFailed: The chunk is at another revision than the first.
        """
        try:
            self._pending.extend(chunk_keys(self.revision, chunk))
        except KeyValueError:
            self.cancel()
            raise
        self._complete = chunk.done

    def __repr__(self) -> str:
        state = "complete" if self._complete else "cancelled" if self._cancelled else "open"
        revision = getattr(self, "revision", "?")
        return f"<{type(self).__name__} revision={revision} {state}>"


class Snapshot(SnapshotBase, CancellableStream[KeyValue]):
    """A consistent copy of the store, streamed; an iterator of :class:`~keyvalue.KeyValue`.

    Iterating yields every key of the copy exactly once, in key order, with
    all its counters (``create_revision``, ``mod_revision``, ``version``,
    ``lease``). The keys can be iterated only once. Iteration ends
    (``StopIteration``) after the last key, or at once when the snapshot is
    cancelled, from any thread: keys already received are not yielded. A
    failure raises a :class:`~keyvalue.errors.KeyValueError`; a stream that
    ends before the server's last chunk raises
    :class:`~keyvalue.errors.ServerUnavailable`, and one cancelled other than by
    :meth:`cancel` (by the server, or by :meth:`~keyvalue.Client.close`) raises
    :class:`~keyvalue.errors.RequestFailed` (``CANCELLED``), so a copy that
    iterated to its end without an error is complete.

    Attributes:
        revision: The store's revision the copy is at.
        leases: Every lease of the copy, as :class:`~keyvalue.Lease` (the TTL it
            was granted with, in seconds; the time it had left is not recorded).

    Args:
        call: The grpcio server-streaming call of ``keyvalue.v1.KV/Snapshot``.
        address: The server's address, for error messages.

    Raises:
        KeyValueError: The first chunk could not be read (see
            :meth:`~keyvalue.Client.snapshot`); the call is cancelled.
    """

    def __init__(self, call: Any, address: str) -> None:
        # A grpc.Call that is also an iterator of SnapshotChunk (untyped in grpcio).
        super().__init__(call, address)
        try:
            first = self._read()
        except BaseException:
            self.cancel()
            raise
        if first is None:  # cancelled meanwhile, from another thread
            raise error_for_status(grpc.StatusCode.CANCELLED, "the snapshot was cancelled")
        self._begin(first)

    def _read_more(self) -> bool:
        """Receive and queue the next chunk, unless the last one has arrived.

        Raises:
            ServerUnavailable: The stream ended before the last chunk.
            KeyValueError: The call failed.
        """
        if self._complete:
            return False
        chunk = self._read()
        if chunk is None:
            return False
        self._accept(chunk)
        return True

    def _read(self) -> kv_pb2.SnapshotChunk | None:
        """The next chunk; ``None`` if the stream was cancelled.

        Raises:
            ServerUnavailable: The stream ended before the last chunk.
            KeyValueError: The call failed.
        """
        try:
            chunk: kv_pb2.SnapshotChunk | None = self._receive()
        except StopIteration:
            raise incomplete(self._address) from None
        return chunk


def chunk_keys(revision: int, chunk: kv_pb2.SnapshotChunk) -> list[KeyValue]:
    """The keys of a chunk of the snapshot at ``revision`` (both clients read chunks so).

    Raises:
        RequestFailed: The chunk is at another revision (``DATA_LOSS``).
    """
    if chunk.header.revision != revision:
        raise error_for_status(
            grpc.StatusCode.DATA_LOSS,
            f"the snapshot's chunks are at different revisions "
            f"({revision}, then {chunk.header.revision})",
        )
    return [KeyValue.from_pb(kv) for kv in chunk.kvs]


def incomplete(address: str) -> KeyValueError:
    """The error of a snapshot stream that ended before its last chunk."""
    return error_for_status(
        grpc.StatusCode.UNAVAILABLE,
        f"kvserver at {address} ended the snapshot before it was complete",
    )
