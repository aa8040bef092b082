"""Every unary call of both clients, as data: the request, and how to read the reply.

A :class:`Call` names the gRPC method, carries the request, says whether it is
safe to repeat (see :mod:`keyvalue.retry`), and turns the reply into the typed
result. :class:`~keyvalue.Client` and :class:`~keyvalue.AsyncClient` only
differ in how they send it (blocking, or awaited), so each call's meaning is
written once, here, and both clients answer alike.

:class:`RangePager` does the same for :meth:`~keyvalue.Client.range`, whose
pages are a sequence of calls.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf.message import Message

from keyvalue._proto import api_pb2, kv_pb2
from keyvalue.errors import Service
from keyvalue.key_value import BytesLike, KeyValue, kv_field, optional_bytes, to_bytes
from keyvalue.lease import Lease, LeaseInfo, to_millis
from keyvalue.results import CasResult, PutResult
from keyvalue.transactions import Compare, Op, TxnResult, txn_request

_MAX_UINT32 = 2**32 - 1


class _Default(enum.Enum):
    CLIENT = enum.auto()


CLIENT_TIMEOUT: Literal[_Default.CLIENT] = _Default.CLIENT
"""A call's ``timeout`` when not given: the client's."""

Timeout = float | None | Literal[_Default.CLIENT]
"""A call's ``timeout=``: seconds, ``None`` (no deadline), or the client's."""

R = TypeVar("R")
"""What a call's reply becomes."""

BatchItems = Mapping[Any, BytesLike] | Iterable[tuple[BytesLike, BytesLike]]
"""What :func:`batch_put` stores: a mapping of keys to values, or ``(key, value)`` pairs."""


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One unary call: which method, with what, and what its reply means.

    Attributes:
        method: The method's name in its service (``Put``).
        request: The request message.
        parse: Turns the reply message into the result.
        safe: Whether repeating the call changes nothing (a read), so that
            it may be retried without the caller saying so.
        service: ``"v1"`` (``keyvalue.v1.KV``) or ``"tutorial"``
            (``simplekeyvalue.KeyValue``).
        timeout: Seconds the call may take, ``None`` (no deadline), or
            :data:`CLIENT_TIMEOUT` (the client's).
        idempotent: The caller marked the call safe to repeat.
    """

    method: str
    request: Message
    parse: Callable[[Any], R]
    safe: bool = False
    service: Service = "v1"
    timeout: Timeout = CLIENT_TIMEOUT
    idempotent: bool = False


def set(
    key: str, value: str, *, timeout: Timeout = CLIENT_TIMEOUT, idempotent: bool = False
) -> Call[None]:
    """Store ``value`` under ``key``, replacing any previous value.

    Raises:
        InvalidArgument: The key is empty or too long, or the value too long.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = api_pb2.SetRequest(key=key, value=value)
    return Call(
        "Set",
        request,
        lambda _reply: None,
        service="tutorial",
        timeout=timeout,
        idempotent=idempotent,
    )


def get(key: str, *, timeout: Timeout = CLIENT_TIMEOUT) -> Call[str]:
    """Return the value last stored under ``key``.

    Raises:
        KeyNotFound: The key was never set.
        InvalidArgument: The key is empty or too long.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    return Call(
        "Get",
        api_pb2.GetRequest(key=key),
        lambda reply: str(reply.value),
        safe=True,
        service="tutorial",
        timeout=timeout,
    )


def get_kv(
    key: BytesLike, *, revision: int = 0, timeout: Timeout = CLIENT_TIMEOUT
) -> Call[KeyValue | None]:
    """The key with its revisions, or ``None`` if it does not exist.

    Args:
        key: The key.
        revision: Read the key as it was at this revision (0: now).
        timeout: Seconds this call may take; default: the client's.

    Raises:
        ValueError: ``revision`` is negative.
        InvalidArgument: The key is empty or too long.
        Compacted: ``revision`` is older than the server keeps.
        FutureRevision: ``revision`` is after the store's current one.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.GetRequest(key=to_bytes(key), revision=_revision(revision))
    return Call("Get", request, lambda reply: kv_field(reply, "kv"), safe=True, timeout=timeout)


def current_revision(
    key: BytesLike,
    *,
    prefix: bool = False,
    range_end: BytesLike | None = None,
    timeout: Timeout = CLIENT_TIMEOUT,
) -> Call[int]:
    """The store's current revision, read through the key (or range) a watch watches.

    Reading the watched keys, not the whole keyspace, needs no more rights
    than watching them (a token confined to a prefix may do it); at most one
    key, without its value, comes back.
    """
    if not prefix and range_end is None:
        return Call(
            "Get",
            kv_pb2.GetRequest(key=to_bytes(key)),
            lambda reply: int(reply.header.revision),
            safe=True,
            timeout=timeout,
        )
    request = kv_pb2.RangeRequest(
        key=to_bytes(key),
        range_end=optional_bytes(range_end),
        prefix=prefix,
        keys_only=True,
        limit=1,
    )
    return Call(
        "Range", request, lambda reply: int(reply.header.revision), safe=True, timeout=timeout
    )


def put(
    key: BytesLike,
    value: BytesLike,
    *,
    ttl: float | None = None,
    lease: int = 0,
    prev_kv: bool = False,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[PutResult]:
    """Store ``value`` under ``key``, replacing any previous value.

    Args:
        key: The key.
        value: The value.
        ttl: Seconds the key lives unless its lease is kept alive: the put
            grants the key a lease of its own, named by the result.
        lease: Attach the key to this lease instead (not with ``ttl``).
        prev_kv: Return the key's previous state in the result.
        timeout: Seconds this call may take; default: the client's.
        idempotent: Let the retry policy repeat the put (see :mod:`keyvalue.retry`).

    Returns:
        The revision of the put, the previous state (with ``prev_kv``) and the lease.

    Raises:
        ValueError: ``ttl`` is not above zero.
        InvalidArgument: Bad key or value, or both ``ttl`` and ``lease``.
        LeaseNotFound: ``lease`` does not exist.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.PutRequest(
        key=to_bytes(key),
        value=to_bytes(value),
        lease=lease,
        ttl_ms=to_millis(ttl) if ttl is not None else 0,
        prev_kv=prev_kv,
    )
    return Call(
        "Put",
        request,
        lambda reply: PutResult.from_pb(reply, lease),
        timeout=timeout,
        idempotent=idempotent,
    )


def delete(
    key: BytesLike,
    *,
    prefix: bool = False,
    range_end: BytesLike | None = None,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[int]:
    """Delete one key, every key starting with ``key`` (``prefix``), or a range.

    Args:
        key: The key, the prefix, or the first key of the range.
        prefix: Delete every key that starts with ``key``.
        range_end: Delete the keys from ``key`` (inclusive) to this (exclusive).
        timeout: Seconds this call may take; default: the client's.
        idempotent: Let the retry policy repeat the delete.

    Returns:
        How many keys were deleted (0 if none existed).

    Raises:
        InvalidArgument: Bad key or range, or both ``prefix`` and ``range_end``.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.DeleteRequest(
        key=to_bytes(key), range_end=optional_bytes(range_end), prefix=prefix
    )
    return Call(
        "Delete",
        request,
        lambda reply: int(reply.deleted),
        timeout=timeout,
        idempotent=idempotent,
    )


def compare_and_set(
    key: BytesLike,
    value: BytesLike,
    *,
    expect_revision: int,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[CasResult]:
    """Store ``value`` only if the key's ``mod_revision`` is ``expect_revision``.

    Args:
        key: The key.
        value: The value.
        expect_revision: The ``mod_revision`` the key must have (as last
            read); 0 means "only if the key does not exist".
        timeout: Seconds this call may take; default: the client's.
        idempotent: Let the retry policy repeat it (a repeat of a write
            that was applied reports a failed condition).

    Returns:
        Whether it was written, the revision, and the key's state: the new
        one on success, the one that made the condition fail otherwise.
        A failed condition is not an error.

    Raises:
        InvalidArgument: Bad key or value.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    key_bytes, value_bytes = to_bytes(key), to_bytes(value)
    request = kv_pb2.PutRequest(
        key=key_bytes,
        value=value_bytes,
        prev_kv=True,
        condition=kv_pb2.Condition(mod_revision=expect_revision),
    )

    def parse(reply: kv_pb2.PutResponse) -> CasResult:
        revision = reply.header.revision
        previous = kv_field(reply, "prev_kv")
        if not reply.succeeded:
            return CasResult(succeeded=False, revision=revision, current=previous)
        # The state the put wrote, as the server computes it from the previous one.
        current = KeyValue(
            key=key_bytes,
            value=value_bytes,
            create_revision=previous.create_revision if previous else revision,
            mod_revision=revision,
            version=previous.version + 1 if previous else 1,
            lease=0,
        )
        return CasResult(succeeded=True, revision=revision, current=current)

    return Call("Put", request, parse, timeout=timeout, idempotent=idempotent)


def delete_if(
    key: BytesLike,
    *,
    expect_revision: int,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[CasResult]:
    """Delete the key only if its ``mod_revision`` is ``expect_revision``.

    Returns:
        Whether it was deleted, the revision, and, if not, the key's current
        state (``None`` if it does not exist). A failed condition is not an error.

    Raises:
        InvalidArgument: Bad key.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.DeleteRequest(
        key=to_bytes(key), condition=kv_pb2.Condition(mod_revision=expect_revision)
    )

    def parse(reply: kv_pb2.DeleteResponse) -> CasResult:
        current = None
        if not reply.succeeded and reply.prev_kvs:
            current = KeyValue.from_pb(reply.prev_kvs[0])
        return CasResult(succeeded=reply.succeeded, revision=reply.header.revision, current=current)

    return Call("Delete", request, parse, timeout=timeout, idempotent=idempotent)


def txn(
    compares: Sequence[Compare],
    success: Sequence[Op] = (),
    failure: Sequence[Op] = (),
    *,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[TxnResult]:
    """Check ``compares``; run ``success`` if all hold, else ``failure``, atomically.

    A transaction of reads only is retried like any read; one that writes
    only with ``idempotent=True``.

    Returns:
        Which branch ran, the revision, and one typed answer per operation.

    Raises:
        InvalidArgument: Bad keys or values, or more compares or operations
            than the server allows (``--max-txn-ops``).
        LeaseNotFound: A put names a lease that does not exist.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = txn_request(compares, success, failure)
    reads_only = all(op.kind == "get" for op in (*success, *failure))
    return Call(
        "Txn",
        request,
        lambda reply: TxnResult.from_pb(reply, success, failure),
        safe=reads_only,
        timeout=timeout,
        idempotent=idempotent,
    )


def count(
    key: BytesLike = b"",
    *,
    prefix: bool = False,
    range_end: BytesLike | None = None,
    revision: int = 0,
    timeout: Timeout = CLIENT_TIMEOUT,
) -> Call[int]:
    """How many keys the range holds (the same range as :meth:`range` takes).

    With ``revision``, how many it held at that revision (0: now).

    Raises:
        ValueError: ``revision`` is negative.
        InvalidArgument: Bad range.
        Compacted: ``revision`` is older than the server keeps.
        FutureRevision: ``revision`` is after the store's current one.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.RangeRequest(
        key=to_bytes(key),
        range_end=optional_bytes(range_end),
        prefix=prefix,
        count_only=True,
        revision=_revision(revision),
    )
    return Call("Range", request, lambda reply: int(reply.count), safe=True, timeout=timeout)


def batch_get(
    keys: Iterable[BytesLike], *, revision: int = 0, timeout: Timeout = CLIENT_TIMEOUT
) -> Call[list[KeyValue | None]]:
    """Many keys in one call, from one consistent snapshot.

    Args:
        keys: The keys.
        revision: Read them as they were at this revision (0: now).
        timeout: Seconds this call may take; default: the client's.

    Returns:
        One entry per key, in order: its state, or ``None`` if it does not exist.

    Raises:
        ValueError: ``revision`` is negative.
        Compacted: ``revision`` is older than the server keeps.
        FutureRevision: ``revision`` is after the store's current one.
        InvalidArgument: A bad key, or more keys than the server allows
            (``--max-batch-keys``).
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.BatchGetRequest(
        keys=[to_bytes(key) for key in keys], revision=_revision(revision)
    )
    return Call(
        "BatchGet",
        request,
        lambda reply: [kv_field(result, "kv") for result in reply.results],
        safe=True,
        timeout=timeout,
    )


def batch_put(
    items: BatchItems,
    *,
    lease: int = 0,
    timeout: Timeout = CLIENT_TIMEOUT,
    idempotent: bool = False,
) -> Call[int]:
    """Store many keys atomically, at one revision.

    Args:
        items: A mapping of keys to values, or ``(key, value)`` pairs.
        lease: Attach every key to this lease (0: none).
        timeout: Seconds this call may take; default: the client's.
        idempotent: Let the retry policy repeat the batch.

    Returns:
        The revision of the batch.

    Raises:
        InvalidArgument: A bad key or value, or more keys than the server
            allows (``--max-batch-keys``).
        LeaseNotFound: ``lease`` does not exist.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    pairs = items.items() if isinstance(items, Mapping) else items
    request = kv_pb2.BatchPutRequest(
        puts=[
            kv_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease)
            for key, value in pairs
        ]
    )
    return Call(
        "BatchPut",
        request,
        lambda reply: int(reply.header.revision),
        timeout=timeout,
        idempotent=idempotent,
    )


def compact(
    revision: int, *, timeout: Timeout = CLIENT_TIMEOUT, idempotent: bool = False
) -> Call[int]:
    """Forget the history before ``revision``: reads and watches may start at it or later.

    Every key's versions older than its state at ``revision`` are dropped;
    the current state of every key is kept. Needs a token for the whole keyspace.

    Args:
        revision: The oldest revision to keep (above zero).
        timeout: Seconds this call may take; default: the client's.
        idempotent: Let the retry policy repeat it (a repeat of a compaction
            that was applied raises :class:`~keyvalue.Compacted`).

    Returns:
        The store's revision when the compaction was made.

    Raises:
        ValueError: ``revision`` is not above zero.
        Compacted: ``revision`` is at or below the compacted revision.
        FutureRevision: ``revision`` is after the store's current one.
        PermissionDenied: The token may not write the whole keyspace.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    if revision <= 0:
        raise ValueError(f"revision must be above zero, got {revision}")
    request = kv_pb2.CompactRequest(revision=revision)
    return Call(
        "Compact",
        request,
        lambda reply: int(reply.header.revision),
        timeout=timeout,
        idempotent=idempotent,
    )


def _revision(revision: int) -> int:
    """``revision`` as the wire takes it (0: now), refusing a negative one."""
    if revision < 0:
        raise ValueError(f"revision must not be negative (0: now), got {revision}")
    return revision


def lease_grant(
    ttl: float, *, timeout: Timeout = CLIENT_TIMEOUT, idempotent: bool = False
) -> Call[Lease]:
    """Grant a lease that expires ``ttl`` seconds from now unless kept alive.

    Raises:
        ValueError: ``ttl`` is not above zero.
        InvalidArgument: ``ttl`` is above the server's limit.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.LeaseGrantRequest(ttl_ms=to_millis(ttl))
    return Call("LeaseGrant", request, Lease.from_pb, timeout=timeout, idempotent=idempotent)


def lease_keep_alive(lease_id: int, *, timeout: Timeout = CLIENT_TIMEOUT) -> Call[Lease]:
    """Restart the lease's TTL.

    Raises:
        LeaseNotFound: The lease expired, was revoked, or never existed.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.LeaseKeepAliveRequest(id=lease_id)
    return Call("LeaseKeepAlive", request, Lease.from_pb, safe=True, timeout=timeout)


def lease_revoke(
    lease_id: int, *, timeout: Timeout = CLIENT_TIMEOUT, idempotent: bool = False
) -> Call[int]:
    """End the lease now, deleting its keys.

    Returns:
        How many keys were deleted.

    Raises:
        LeaseNotFound: The lease expired, was revoked, or never existed.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    request = kv_pb2.LeaseRevokeRequest(id=lease_id)
    return Call(
        "LeaseRevoke",
        request,
        lambda reply: int(reply.deleted),
        timeout=timeout,
        idempotent=idempotent,
    )


def lease_info(
    lease_id: int, *, keys: int = 0, timeout: Timeout = CLIENT_TIMEOUT
) -> Call[LeaseInfo]:
    """The lease's TTL and the time it has left; with ``keys``, its first keys.

    Args:
        lease_id: The lease.
        keys: Also answer its first keys in key order, at most this many
            (the server caps them to a page); ``more_keys`` says whether
            there are more.
        timeout: Seconds the call may take; default: the client's.

    Raises:
        ValueError: ``keys`` is negative.
        LeaseNotFound: The lease expired, was revoked, or never existed.
        ServerUnavailable: The server cannot be reached or did not answer in time.
        KeyValueError: Any other failure.
    """
    if keys < 0:
        raise ValueError(f"keys must not be negative, got {keys}")
    request = kv_pb2.LeaseInfoRequest(id=lease_id, keys_limit=min(keys, _MAX_UINT32))
    return Call("LeaseInfo", request, LeaseInfo.from_pb, safe=True, timeout=timeout)


class LeasePager:
    """The pages of one :meth:`~keyvalue.Client.leases`, one :class:`Call` each.

    Raises:
        ValueError: ``keys`` is negative or ``page_size`` not above zero.
    """

    def __init__(self, *, keys: int = 0, page_size: int | None = None) -> None:
        if keys < 0:
            raise ValueError(f"keys must not be negative, got {keys}")
        if page_size is not None and page_size <= 0:
            raise ValueError(f"page_size must be above zero, got {page_size}")
        self._keys = min(keys, _MAX_UINT32)
        self._limit = min(page_size or 0, _MAX_UINT32)
        self._after: int | None = None
        self._done = False

    def next_call(self, timeout: Timeout = CLIENT_TIMEOUT) -> Call[list[LeaseInfo]] | None:
        """The call for the next page, or ``None`` once every lease is listed."""
        if self._done:
            return None
        request = kv_pb2.LeaseListRequest(limit=self._limit, keys_limit=self._keys)
        if self._after is not None:
            request.after = self._after
        return Call("LeaseList", request, self._take, safe=True, timeout=timeout)

    def _take(self, reply: kv_pb2.LeaseListResponse) -> list[LeaseInfo]:
        leases = [LeaseInfo.from_pb(message) for message in reply.leases]
        if leases:
            self._after = leases[-1].id
        if not reply.more or not leases:
            self._done = True
        return leases


class RangePager:
    """The pages of one :meth:`~keyvalue.Client.range`, one :class:`Call` each.

    Each page asks for at most what is still wanted: ``min(limit left,
    page_size)``, or the limit left alone without a page size (the server caps
    it to its ``--max-range-page``), so a small ``limit`` never fetches a
    whole page.

    Raises:
        ValueError: ``limit`` is negative, ``page_size`` not above zero or
            ``revision`` negative.

    Every page is read at the first page's revision (``revision``, or the
    store's when the first page was read): the server's page token carries
    it, so a listing of any length is one snapshot.
    """

    def __init__(
        self,
        key: BytesLike,
        *,
        prefix: bool,
        range_end: BytesLike | None,
        keys_only: bool,
        limit: int | None,
        page_size: int | None,
        revision: int = 0,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        if page_size is not None and page_size <= 0:
            raise ValueError(f"page_size must be above zero, got {page_size}")
        self._request = kv_pb2.RangeRequest(
            key=to_bytes(key),
            range_end=optional_bytes(range_end),
            prefix=prefix,
            keys_only=keys_only,
            revision=_revision(revision),
        )
        self._remaining = limit
        self._page_size = page_size
        self._done = limit == 0

    def next_call(self, timeout: Timeout = CLIENT_TIMEOUT) -> Call[list[KeyValue]] | None:
        """The call for the next page, or ``None`` once the range is read."""
        if self._done:
            return None
        request = kv_pb2.RangeRequest()
        request.CopyFrom(self._request)
        sizes = [size for size in (self._page_size, self._remaining) if size is not None]
        # The wire field is a uint32; the server caps any limit to its page size.
        request.limit = min(*sizes, _MAX_UINT32) if sizes else 0
        return Call("Range", request, self._take, safe=True, timeout=timeout)

    def _take(self, reply: kv_pb2.RangeResponse) -> list[KeyValue]:
        kvs = [KeyValue.from_pb(message) for message in reply.kvs]
        if self._remaining is not None:
            kvs = kvs[: self._remaining]
            self._remaining -= len(kvs)
        if self._remaining == 0 or not reply.more or not reply.next_page_token:
            self._done = True
        self._request.page_token = reply.next_page_token
        return kvs
