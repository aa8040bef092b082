"""What the streamed answers (:class:`~keyvalue.Watch`, :class:`~keyvalue.Snapshot`) share.

Each wraps one grpcio server-streaming call that any thread may cancel, that a
``with`` block cancels when it ends, and that is cancelled when the object is
dropped, so an abandoned stream never keeps the server working for nobody.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import grpc

from keyvalue.errors import from_rpc_error


class CancellableStream:
    """A server-streaming call that ends on :meth:`cancel`, ``with`` or drop.

    Args:
        call: The grpcio call (a ``grpc.Call`` that is also an iterator).
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def cancel(self) -> None:
        """End the stream; a blocked iteration ends too. Calling it again does nothing."""
        self._cancelled = True
        self._call.cancel()

    def _receive(self) -> Any:
        """The call's next message; ``None`` once the stream is cancelled.

        A call cancelled from this side fails with an ``RpcError``
        (``CANCELLED``): that is the end of the stream, not an error. What the
        server ending the stream means is the caller's to decide.

        Raises:
            StopIteration: The server ended the stream.
            KeyValueError: The call failed.
        """
        try:
            return next(self._call)
        except grpc.RpcError as error:
            if self._cancelled or error.code() is grpc.StatusCode.CANCELLED:
                self._cancelled = True
                return None
            raise from_rpc_error(error, service="v1") from error

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called (or the stream was cancelled)."""
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
