"""What the streamed answers (:class:`~keyvalue.Watch`, :class:`~keyvalue.Snapshot`) share.

Each wraps one grpcio server-streaming call that any thread may cancel, that a
``with`` block cancels when it ends, and that is cancelled when the object is
dropped, so an abandoned stream never keeps the server working for nobody.
Only such a cancellation ends the stream quietly: a call cancelled by anything
else (the server, or the channel closing under it) was cut short, and raises.
Iterating yields the items of each message received; once cancelled, nothing
more, not even items already received.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections import deque
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc

from keyvalue.errors import KeyValueError, error_for_status, from_rpc_error

T = TypeVar("T")
"""What iterating the stream yields."""


class StreamBase(Generic[T]):
    """What every stream keeps, blocking or asyncio: the call, the items not yet yielded.

    Args:
        call: The grpcio call (``grpc.Call`` or ``grpc.aio.UnaryStreamCall``).
        address: The server's address, for error messages.
    """

    _what = "stream"
    """What the stream is, for error messages (``snapshot``, ``watch``)."""

    def __init__(self, call: Any, address: str) -> None:
        self._call = call
        self._address = address
        self._cancelled = False
        self._stopped = threading.Event()
        """Set by :meth:`cancel`: a watch resuming meanwhile gives up at once."""
        self._pending: deque[T] = deque()
        """Items received and not yet yielded."""

    def cancel(self) -> None:
        """End the stream and its iteration at once; a blocked iteration ends too.

        Items already received and not yet yielded are dropped. Calling it
        again does nothing.
        """
        self._cancelled = True
        self._stopped.set()
        self._call.cancel()
        self._pending.clear()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called (a ``with`` block's end calls it)."""
        return self._cancelled

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None:
            # An asyncio call whose loop is gone is gone with it.
            with contextlib.suppress(Exception):
                call.cancel()


class CancellableStream(StreamBase[T], ABC):
    """A server-streaming call that ends on :meth:`cancel`, ``with`` or drop.

    An iterator of the items of the messages received; subclasses say how a
    message becomes items (:meth:`_read_more`). Only a cancellation this side
    asked for ends the stream quietly: a call cancelled otherwise (the server
    aborting it with ``CANCELLED``, or :meth:`~keyvalue.Client.close` closing
    the channel under it) was cut short, and raises.

    Args:
        call: The grpcio call (a ``grpc.Call`` that is also an iterator).
        address: The server's address, for error messages.
    """

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        while not self._cancelled:
            if self._pending:
                return self._pending.popleft()
            if not self._read_more():
                break
        raise StopIteration

    @abstractmethod
    def _read_more(self) -> bool:
        """Receive the next message and queue its items in ``_pending``.

        Returns:
            Whether more may come: ``False`` once the stream is over or cancelled.

        Raises:
            StopIteration: The stream is over (ends the iteration).
            KeyValueError: The call failed.
        """

    def _receive(self) -> Any:
        """The call's next message; ``None`` once :meth:`cancel` has been called.

        A call cancelled through :meth:`cancel` (or the end of a ``with``
        block) fails with an ``RpcError`` (``CANCELLED``): that is the end of
        the stream, not an error. Any other ``CANCELLED`` cut the stream short.
        What the server ending the stream means is the caller's to decide.

        Raises:
            StopIteration: The server ended the stream.
            RequestFailed: The stream was cancelled, but not through
                :meth:`cancel` (``CANCELLED``; the message says it was cut).
            KeyValueError: The call failed.
        """
        try:
            return next(self._call)
        except grpc.RpcError as error:
            if self._cancelled:
                return None
            raise stream_failure(error, self._what, self._address) from error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


def stream_failure(error: grpc.RpcError, what: str, address: str) -> KeyValueError:
    """The exception for a stream that failed other than by its own cancel().

    A ``CANCELLED`` this side did not ask for means the stream was cut (by
    the server, or by closing the client): the message says so.
    """
    failure = from_rpc_error(error, service="v1")
    if failure.code is grpc.StatusCode.CANCELLED:
        failure = error_for_status(
            failure.code,
            f"the {what} stream from kvserver at {address} was cut: "
            f"cancelled by the server or by closing the client, not by cancel() "
            f"({failure.message})",
            service="v1",
        )
    return failure
