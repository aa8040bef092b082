"""Exceptions raised by the keyvalue client, and the one gRPC status mapping.

Every failed call raises a subclass of :class:`KeyValueError`, which carries the
gRPC status code and the server's message text (the status details). Callers
catch what happened (:class:`KeyNotFound`, :class:`ServerUnavailable`, ...)
rather than inspecting status codes. Which code becomes which exception is
decided in one place only: the two tables below, used by :func:`from_rpc_error`.

The two services differ in one code only: ``NOT_FOUND`` from the tutorial's
``simplekeyvalue.KeyValue`` means the key was never set (:class:`KeyNotFound`),
while the full API, ``keyvalue.v1.KV``, answers a missing key with an empty
result and uses ``NOT_FOUND`` only for unknown leases (:class:`LeaseNotFound`).
``OUT_OF_RANGE`` has two meanings, told apart by the server's message (as
etcd's clients do): a revision below the compacted one (:class:`Compacted`),
or one the store has not reached (:class:`FutureRevision`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

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

    Raised for ``UNAVAILABLE`` (nothing listening, connection lost) and, as
    the subclass :class:`DeadlineExceeded`, for ``DEADLINE_EXCEEDED``.
    A write that failed with ``UNAVAILABLE`` before it could connect was not
    made; one whose connection was lost while it was in flight may have been.
    """


class DeadlineExceeded(ServerUnavailable):
    """No answer within the call's timeout (``DEADLINE_EXCEEDED``).

    A write that timed out **may have happened**: the server may have applied
    it and the answer arrived too late. Read the key (or compare revisions)
    before writing again, or make the write safe to repeat (a
    compare-and-set, or ``idempotent=True`` on a write that is). A subclass of
    :class:`ServerUnavailable`, which this error was raised as before.
    """


class LeaseNotFound(KeyValueError):
    """The lease does not exist: never granted, expired or revoked (``NOT_FOUND``).

    Raised by the lease calls, and by :meth:`~keyvalue.Client.put` (or a
    transaction) attaching a key to such a lease.
    """


class Compacted(KeyValueError):
    """A read, watch or compaction asked for history the server no longer keeps (``OUT_OF_RANGE``).

    Raised by a read at a ``revision=`` below the compacted revision, a watch
    from such a ``start_revision``, a listing whose revision was compacted
    between its pages, and :meth:`~keyvalue.Client.compact` at or below the
    compacted revision. Read at :attr:`compacted_revision` or later, or read
    the current state (e.g. :meth:`~keyvalue.Client.get_kv`) and watch from
    that read's revision + 1.

    Attributes:
        compacted_revision: The compacted revision, the oldest that can
            still be read, when the server's message names it (``None``
            otherwise: an etcd backend does not say).
        requested_revision: The revision asked for, when the message names it.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.compacted_revision = _revision_after("the compacted revision is", message)
        self.requested_revision = _revision_after("required revision", message)


class FutureRevision(KeyValueError):
    """A read or compaction named a revision the store has not reached (``OUT_OF_RANGE``).

    Raised by a read at a ``revision=`` above the store's current revision,
    and by :meth:`~keyvalue.Client.compact` above it. Not a subclass of
    :class:`Compacted`: the revision may exist later, never again after a
    compaction.

    Attributes:
        current_revision: The store's revision when it answered, when the
            server's message names it (``None`` otherwise).
        requested_revision: The revision asked for, when the message names it.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.current_revision = _revision_after("the store is at revision", message)
        self.requested_revision = _revision_after("required revision", message)


def _revision_after(words: str, message: str) -> int | None:
    """The number following ``words`` in the server's message, if it has one."""
    match = re.search(re.escape(words) + r" (\d+)", message)
    return int(match.group(1)) if match else None


class Unauthenticated(KeyValueError):
    """The server wants a token and got none, or one it does not know (``UNAUTHENTICATED``).

    Pass ``token=`` to :class:`~keyvalue.Client` (``--token`` / ``$KV_TOKEN``
    for ``kv-py``).
    """


class PermissionDenied(KeyValueError):
    """The token may not do this (``PERMISSION_DENIED``).

    A ``read`` token calling a method that writes, or a token confined to a
    key prefix reaching a key outside it. The message says which.
    """


class RequestFailed(KeyValueError):
    """Any other failure status (``INTERNAL``, ``UNKNOWN``, ...)."""


class ResourceExhausted(RequestFailed):
    """The server is out of a resource (``RESOURCE_EXHAUSTED``).

    Too many watches open (``--max-watchers``), or the disk is full. Retrying
    later may succeed. A subclass of :class:`RequestFailed`, which this code
    raised before it had a class of its own.
    """


Service = Literal["tutorial", "v1"]
"""Which service answered: ``simplekeyvalue.KeyValue`` or ``keyvalue.v1.KV``."""

_ERROR_FOR_CODE: Mapping[grpc.StatusCode, type[KeyValueError]] = {
    grpc.StatusCode.NOT_FOUND: KeyNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.OUT_OF_RANGE: Compacted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}
"""The mapping for the tutorial service, and the default."""

_V1_ERROR_FOR_CODE: Mapping[grpc.StatusCode, type[KeyValueError]] = {
    **_ERROR_FOR_CODE,
    # keyvalue.v1 reports a missing key as an empty answer: NOT_FOUND is a lease.
    grpc.StatusCode.NOT_FOUND: LeaseNotFound,
}
"""The mapping for the full API, ``keyvalue.v1.KV``."""


def error_for_status(
    code: grpc.StatusCode, message: str, *, service: Service = "tutorial"
) -> KeyValueError:
    """The exception for a gRPC status; codes without their own class get RequestFailed.

    Args:
        code: The status code of the failed call.
        message: The status details.
        service: Which service answered; only ``NOT_FOUND`` depends on it.
    """
    table = _V1_ERROR_FOR_CODE if service == "v1" else _ERROR_FOR_CODE
    if code == grpc.StatusCode.OUT_OF_RANGE and "future revision" in message:
        # The one code has two meanings; the server's (and etcd's) message says which.
        return FutureRevision(code, message)
    return table.get(code, RequestFailed)(code, message)


def from_rpc_error(error: grpc.RpcError, *, service: Service = "tutorial") -> KeyValueError:
    """Translate the exception grpcio raised for a failed call into ours.

    Args:
        error: What grpcio raised.
        service: Which service the call went to (see :func:`error_for_status`).
    """
    # What a failed call raises is also a grpc.Call, which carries the status.
    # A bare RpcError, which no finished call raises, has no code() at all.
    try:
        code, details = error.code(), error.details()
    except AttributeError:
        return error_for_status(grpc.StatusCode.UNKNOWN, str(error), service=service)
    return error_for_status(code, details or "", service=service)
