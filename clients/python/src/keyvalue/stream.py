"""What the streamed answers (:class:`~keyvalue.Watch`, :class:`~keyvalue.Snapshot`) share.

Each wraps one grpcio server-streaming call that any thread may cancel, that a
``with`` block cancels when it ends, and that is cancelled when the object is
dropped, so an abandoned stream never keeps the server working for nobody.
Only such a cancellation ends the stream quietly: a call cancelled by anything
else (the server, or the channel closing under it) was cut short, and raises.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import grpc

from keyvalue.errors import error_for_status, from_rpc_error


class CancellableStream:
    """A server-streaming call that ends on :meth:`cancel`, ``with`` or drop.

    Only a cancellation this side asked for ends the stream quietly: a call
    cancelled otherwise (the server aborting it with ``CANCELLED``, or
    :meth:`~keyvalue.Client.close` closing the channel under it) was cut short,
    and raises.

    Args:
        call: The grpcio call (a ``grpc.Call`` that is also an iterator).
        address: The server's address, for error messages.
    """

    _what = "stream"
    """What the stream is, for error messages (``snapshot``, ``watch``)."""

    def __init__(self, call: Any, address: str) -> None:
        self._call = call
        self._address = address
        self._cancelled = False

    def cancel(self) -> None:
        """End the stream; a blocked iteration ends too. Calling it again does nothing."""
        self._cancelled = True
        self._call.cancel()

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
            failure = from_rpc_error(error, service="v1")
            if failure.code is grpc.StatusCode.CANCELLED:
                failure = error_for_status(
                    failure.code,
                    f"the {self._what} stream from kvserver at {self._address} was cut: "
                    f"cancelled by the server or by closing the client, not by cancel() "
                    f"({failure.message})",
                    service="v1",
                )
            raise failure from error

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called (a ``with`` block's end calls it)."""
        return self._cancelled

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None:
            call.cancel()
