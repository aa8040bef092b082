"""Exceptions raised by the keyvalue client, and the one gRPC status mapping.

Every failed call raises a subclass of :class:`KeyValueError`, which carries the
gRPC status code and the server's message text (the status details). Callers
catch what happened (:class:`KeyNotFound`, :class:`ServerUnavailable`, ...)
rather than inspecting status codes. Which code becomes which exception is
decided in one place only: :data:`_ERROR_FOR_CODE`, used by
:func:`from_rpc_error`.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc


class KeyValueError(Exception):
    """Base class of every error raised by the keyvalue client.

    Attributes:
        code: The gRPC status code of the failed call.
        message: The status details: the server's own text (``key not found``),
            or gRPC's description when the server never answered.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r})"


class KeyNotFound(KeyValueError):
    """The key was never set (``NOT_FOUND``)."""


class InvalidArgument(KeyValueError):
    """The server refused the request: empty or oversized key, oversized value.

    The message names the limit that was exceeded (``INVALID_ARGUMENT``).
    """


class ServerUnavailable(KeyValueError):
    """The server could not be reached or did not answer in time.

    Raised for ``UNAVAILABLE`` (nothing listening, connection lost) and
    ``DEADLINE_EXCEEDED`` (no answer within the client's timeout).
    """


class RequestFailed(KeyValueError):
    """Any other failure status (``INTERNAL``, ``RESOURCE_EXHAUSTED``, ...)."""


_ERROR_FOR_CODE: Mapping[grpc.StatusCode, type[KeyValueError]] = {
    grpc.StatusCode.NOT_FOUND: KeyNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServerUnavailable,
}


def error_for_status(code: grpc.StatusCode, message: str) -> KeyValueError:
    """The exception for a gRPC status; codes without their own class get RequestFailed."""
    return _ERROR_FOR_CODE.get(code, RequestFailed)(code, message)


def from_rpc_error(error: grpc.RpcError) -> KeyValueError:
    """Translate the exception grpcio raised for a failed call into ours."""
    # What a failed call raises is also a grpc.Call, which carries the status.
    # A bare RpcError, which no finished call raises, has no code() at all.
    try:
        code, details = error.code(), error.details()
    except AttributeError:
        return error_for_status(grpc.StatusCode.UNKNOWN, str(error))
    return error_for_status(code, details or "")
