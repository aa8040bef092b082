"""The streamed answers of the asyncio client: :class:`AsyncWatch`, :class:`AsyncSnapshot`.

They behave as :class:`~keyvalue.Watch` and :class:`~keyvalue.Snapshot` do,
as async iterators and async context managers over ``grpc.aio`` calls: a
watch resumes by itself from the revision after its last event
(:class:`~keyvalue.watch.WatchCursor`, shared with the blocking client), a
snapshot checks its chunks alike (:func:`~keyvalue.snapshot.chunk_keys`).

A stream abandoned in a task does not keep ``asyncio.run`` from returning:
the task blocks in an ``await`` that the loop's shutdown cancels, and the
call itself is cancelled when the stream is collected.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from keyvalue._proto import kv_pb2
from keyvalue.errors import KeyValueError, error_for_status
from keyvalue.key_value import KeyValue
from keyvalue.snapshot import SnapshotBase, incomplete
from keyvalue.stream import StreamBase, stream_failure
from keyvalue.watch import Event, WatchBase

T = TypeVar("T")


class _End(Exception):
    """The server ended the stream with ``OK``."""


class _Left(Exception):
    """The call was cancelled by :meth:`~keyvalue.watch.WatchBase.leave`."""


class AsyncStream(StreamBase[T], ABC):
    """A ``grpc.aio`` server-streaming call that ends on :meth:`cancel`, ``async with`` or drop.

    Args:
        call: The ``grpc.aio.UnaryStreamCall``.
        address: The server's address, for error messages.
    """

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while not self._cancelled:
            if self._pending:
                return self._pending.popleft()
            if not await self._read_more():
                break
        raise StopAsyncIteration

    @abstractmethod
    async def _read_more(self) -> bool:
        """Receive the next message and queue its items; ``False`` once over."""

    async def _receive(self) -> Any:
        """The call's next message; ``None`` once :meth:`cancel` has been called.

        Raises:
            _End: The server ended the stream with ``OK``.
            KeyValueError: The call failed (see :func:`~keyvalue.stream.stream_failure`).
        """
        try:
            message = await self._call.read()
        except asyncio.CancelledError:
            if self._cancelled:
                return None
            if getattr(self, "_leaving", False):
                raise _Left from None
            raise  # the task itself was cancelled
        except grpc.RpcError as error:
            if self._cancelled:
                return None
            raise stream_failure(error, self._what, self._address) from error
        if message is grpc.aio.EOF:
            raise _End
        return message

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class AsyncWatch(WatchBase, AsyncStream[Event]):
    """The events of one watch, in revision order; see :class:`~keyvalue.Watch`.

    Args: see :class:`~keyvalue.watch.WatchBase` (``restart`` is a coroutine function).
    """

    async def _read_more(self) -> bool:
        while True:
            try:
                response: kv_pb2.WatchResponse | None = await self._receive()
            except _End:
                if not self._resumes_after(None):
                    return False
            except _Left:
                pass  # the call was ended by leave(): resume
            except KeyValueError as failure:
                if not self._resumes_after(failure):
                    raise
            else:
                if response is None:
                    return False
                self._pending.extend(self._cursor.accept(response))
                return True
            call = await self._restart(self._stopped)
            if call is None or self._cancelled:
                if call is not None:
                    call.cancel()
                return False
            self._resumed_on(call)


class AsyncSnapshot(SnapshotBase, AsyncStream[KeyValue]):
    """A consistent copy of the store, streamed; see :class:`~keyvalue.Snapshot`.

    Made by :meth:`~keyvalue.AsyncClient.snapshot` once the first chunk is in.
    """

    def __init__(self, call: Any, address: str, first: kv_pb2.SnapshotChunk) -> None:
        super().__init__(call, address)
        self._begin(first)

    @classmethod
    async def start(cls, call: Any, address: str) -> AsyncSnapshot:
        """Read the first chunk of a started call and make the snapshot of it.

        Raises:
            KeyValueError: The first chunk could not be read; the call is cancelled.
        """
        reader = _FirstChunk(call, address)
        try:
            first = await reader.first()
        except BaseException:
            call.cancel()
            raise
        return cls(call, address, first)

    async def _read_more(self) -> bool:
        if self._complete:
            return False
        try:
            chunk: kv_pb2.SnapshotChunk | None = await self._receive()
        except _End:
            raise incomplete(self._address) from None
        if chunk is None:
            return False
        self._accept(chunk)
        return True


class _FirstChunk(AsyncStream[None]):
    """Reads a snapshot's first chunk with the failures a stream reports."""

    _what = "snapshot"

    async def first(self) -> kv_pb2.SnapshotChunk:
        try:
            chunk: kv_pb2.SnapshotChunk | None = await self._receive()
        except _End:
            raise incomplete(self._address) from None
        if chunk is None:
            raise error_for_status(grpc.StatusCode.CANCELLED, "the snapshot was cancelled")
        return chunk

    async def _read_more(self) -> bool:
        return False

    def __del__(self) -> None:
        pass  # the call is the snapshot's now
