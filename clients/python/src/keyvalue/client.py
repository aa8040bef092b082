"""The keyvalue client: a typed, blocking wrapper around both gRPC services.

One :class:`Client` holds one gRPC channel to one server, over which it speaks
the tutorial's ``simplekeyvalue.KeyValue`` (:meth:`Client.get`,
:meth:`Client.set`: text keys and values) and the full API ``keyvalue.v1.KV``
(every other method: bytes or str keys and values, revisions, ranges,
transactions, watches, leases, snapshots). Both serve the same data. Each call
has a deadline (``timeout``; watches and snapshots have none) and raises a
:class:`~keyvalue.errors.KeyValueError` subclass on failure, never a raw
``grpc.RpcError``::

    with Client("127.0.0.1:50051", timeout=5.0) as client:
        client.set("weather", "sunny")
        client.get("weather")  # "sunny"
        client.get_kv("weather").value  # b"sunny"

With ``ca_file`` the channel is TLS (and mutual TLS with ``cert_file`` and
``key_file``); with ``token`` every call of both services carries
``authorization: Bearer <token>``::

    Client("localhost:50051", ca_file="ca.pem", token="s3cret")
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import grpc

from keyvalue._proto import api_pb2, api_pb2_grpc, kv_pb2, kv_pb2_grpc
from keyvalue.errors import error_for_status, from_rpc_error
from keyvalue.key_value import BytesLike, KeyValue, kv_field, optional_bytes, to_bytes
from keyvalue.lease import Lease, LeaseInfo, to_millis
from keyvalue.results import CasResult, PutResult
from keyvalue.snapshot import Snapshot
from keyvalue.transactions import Compare, Op, TxnResult, txn_request
from keyvalue.watch import Watch

_Reply = TypeVar("_Reply")
# A key type: Mapping is invariant in its keys, so dict[str, ...] needs a TypeVar.
_Key = TypeVar("_Key", bound=BytesLike)

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where kvserver listens unless told otherwise."""

DEFAULT_TIMEOUT = 5.0
"""Seconds each call may take, connecting included, before it fails."""

_CHANNEL_OPTIONS = [
    # grpcio refuses replies above 4 MiB by default. The server already bounds
    # values (--max-value-bytes, which may be raised above 4 MiB), so accept
    # whatever it sends back.
    ("grpc.max_receive_message_length", -1),
]


StrPath = str | os.PathLike[str]
"""A file name: ``str`` or ``pathlib.Path``."""


class Client:
    """A connection to one kvserver.

    The channel connects lazily on the first call, and reconnects by itself
    if the server restarts. Close the client when done, or use it as a context
    manager; a closed client raises ``ValueError`` on every call.

    Args:
        address: The server, as ``host:port``. With TLS, the host must be a
            name (or IP address) the server's certificate covers.
        timeout: Seconds each call may take before it fails with
            :class:`~keyvalue.errors.ServerUnavailable`; ``None`` waits forever.
        token: Send ``authorization: Bearer <token>`` with every call, for a
            server started with ``--auth-token-file``. Without TLS the token
            crosses the network in the clear.
        ca_file: Connect over TLS, trusting the server certificates this PEM
            file's CA certificates signed. Without it the channel is plaintext.
        cert_file: With ``key_file``: present this PEM certificate chain to the
            server (mutual TLS, for a server started with ``--tls-client-ca``).
            Needs ``ca_file``.
        key_file: The PEM private key of ``cert_file``.

    Raises:
        ValueError: A bad argument: an empty address or token, a timeout not
            above zero, ``cert_file`` without ``key_file`` (or the other way
            round) or without ``ca_file``, or a file that cannot be read or
            is not PEM (the message names the file).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
        ca_file: StrPath | None = None,
        cert_file: StrPath | None = None,
        key_file: StrPath | None = None,
    ):
        if not address.strip():
            raise ValueError("address must not be empty")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be above zero, got {timeout}")
        if token is not None:
            _check_token(token)
        credentials = _channel_credentials(ca_file, cert_file, key_file)
        self.address = address
        self.timeout = timeout
        # Whether the channel is TLS (ca_file was given).
        self.tls = credentials is not None
        self._has_token = token is not None
        if credentials is None:
            channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        if token is not None:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self._channel = channel
        self._stub = api_pb2_grpc.KeyValueStub(self._channel)
        self._kv = kv_pb2_grpc.KVStub(self._channel)
        self._closed = False

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any previous value.

        Raises:
            InvalidArgument: The key is empty or too long, or the value too long.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        self._check_open()
        request = api_pb2.SetRequest(key=key, value=value)
        try:
            self._stub.Set(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def get(self, key: str) -> str:
        """Return the value last stored under ``key``.

        Raises:
            KeyNotFound: The key was never set.
            InvalidArgument: The key is empty or too long.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        self._check_open()
        request = api_pb2.GetRequest(key=key)
        try:
            reply: api_pb2.GetReply = self._stub.Get(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return reply.value

    # ---- keyvalue.v1.KV: single keys -------------------------------------

    def get_kv(self, key: BytesLike) -> KeyValue | None:
        """The key with its revisions, or ``None`` if it does not exist.

        Raises:
            InvalidArgument: The key is empty or too long.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.GetRequest(key=to_bytes(key))
        reply = self._unary(self._kv.Get, request, kv_pb2.GetResponse)
        return kv_field(reply, "kv")

    def put(
        self,
        key: BytesLike,
        value: BytesLike,
        *,
        ttl: float | None = None,
        lease: int = 0,
        prev_kv: bool = False,
    ) -> PutResult:
        """Store ``value`` under ``key``, replacing any previous value.

        Args:
            key: The key.
            value: The value.
            ttl: Seconds the key lives unless its lease is kept alive: the put
                grants the key a lease of its own, named by the result.
            lease: Attach the key to this lease instead (not with ``ttl``).
            prev_kv: Return the key's previous state in the result.

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
        reply = self._unary(self._kv.Put, request, kv_pb2.PutResponse)
        return PutResult.from_pb(reply, lease)

    def delete(
        self,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
    ) -> int:
        """Delete one key, every key starting with ``key`` (``prefix``), or a range.

        Args:
            key: The key, the prefix, or the first key of the range.
            prefix: Delete every key that starts with ``key``.
            range_end: Delete the keys from ``key`` (inclusive) to this (exclusive).

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
        reply = self._unary(self._kv.Delete, request, kv_pb2.DeleteResponse)
        return reply.deleted

    # ---- conditional writes ----------------------------------------------

    def compare_and_set(
        self, key: BytesLike, value: BytesLike, *, expect_revision: int
    ) -> CasResult:
        """Store ``value`` only if the key's ``mod_revision`` is ``expect_revision``.

        Args:
            key: The key.
            value: The value.
            expect_revision: The ``mod_revision`` the key must have (as last
                read); 0 means "only if the key does not exist".

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
        reply = self._unary(self._kv.Put, request, kv_pb2.PutResponse)
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

    def delete_if(self, key: BytesLike, *, expect_revision: int) -> CasResult:
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
        reply = self._unary(self._kv.Delete, request, kv_pb2.DeleteResponse)
        current = None
        if not reply.succeeded and reply.prev_kvs:
            current = KeyValue.from_pb(reply.prev_kvs[0])
        return CasResult(succeeded=reply.succeeded, revision=reply.header.revision, current=current)

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Check ``compares``; run ``success`` if all hold, else ``failure``, atomically.

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
        reply = self._unary(self._kv.Txn, request, kv_pb2.TxnResponse)
        return TxnResult.from_pb(reply, success, failure)

    # ---- ranges -------------------------------------------------------------

    def range(
        self,
        key: BytesLike = b"",
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        keys_only: bool = False,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[KeyValue]:
        """The keys of a range, in key order, fetched page by page as iteration goes.

        Without ``prefix`` or ``range_end``, the range runs from ``key`` to the
        end of the keyspace (so ``range()`` is every key). Each page is one
        request and reflects the store at that request's revision.

        Args:
            key: The first key (inclusive), or the prefix.
            prefix: Every key that starts with ``key``.
            range_end: Stop before this key.
            keys_only: Leave the values out (they come back empty).
            limit: Yield at most this many keys.
            page_size: Keys per request; default: the server's ``--max-range-page``.

        Yields:
            Each key in the range, once.

        Raises:
            InvalidArgument: Bad range, or ``page_size`` above the server's limit.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        if page_size is not None and page_size <= 0:
            raise ValueError(f"page_size must be above zero, got {page_size}")
        request = kv_pb2.RangeRequest(
            key=to_bytes(key),
            range_end=optional_bytes(range_end),
            prefix=prefix,
            keys_only=keys_only,
        )
        remaining = limit
        while remaining is None or remaining > 0:
            page = page_size or 0
            if remaining is not None and page_size is not None:
                page = min(page_size, remaining)
            request.limit = page
            reply = self._unary(self._kv.Range, request, kv_pb2.RangeResponse)
            for message in reply.kvs:
                if remaining is not None:
                    if remaining == 0:
                        return
                    remaining -= 1
                yield KeyValue.from_pb(message)
            if not reply.more or not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def count(
        self,
        key: BytesLike = b"",
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
    ) -> int:
        """How many keys the range holds (the same range as :meth:`range` takes).

        Raises:
            InvalidArgument: Bad range.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.RangeRequest(
            key=to_bytes(key),
            range_end=optional_bytes(range_end),
            prefix=prefix,
            count_only=True,
        )
        return self._unary(self._kv.Range, request, kv_pb2.RangeResponse).count

    # ---- batches ------------------------------------------------------------

    def batch_get(self, keys: Iterable[BytesLike]) -> list[KeyValue | None]:
        """Many keys in one call, from one consistent snapshot.

        Returns:
            One entry per key, in order: its state, or ``None`` if it does not exist.

        Raises:
            InvalidArgument: A bad key, or more keys than the server allows
                (``--max-batch-keys``).
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.BatchGetRequest(keys=[to_bytes(key) for key in keys])
        reply = self._unary(self._kv.BatchGet, request, kv_pb2.BatchGetResponse)
        return [kv_field(result, "kv") for result in reply.results]

    @overload
    def batch_put(self, items: Mapping[_Key, BytesLike], *, lease: int = 0) -> int: ...

    @overload
    def batch_put(self, items: Iterable[tuple[BytesLike, BytesLike]], *, lease: int = 0) -> int: ...

    def batch_put(
        self,
        items: Mapping[_Key, BytesLike] | Iterable[tuple[BytesLike, BytesLike]],
        *,
        lease: int = 0,
    ) -> int:
        """Store many keys atomically, at one revision.

        Args:
            items: A mapping of keys to values, or ``(key, value)`` pairs.
            lease: Attach every key to this lease (0: none).

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
        return self._unary(self._kv.BatchPut, request, kv_pb2.BatchPutResponse).header.revision

    # ---- watches ------------------------------------------------------------

    def watch(
        self,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        start_revision: int = 0,
    ) -> Watch:
        """Watch a key, a prefix or a range for changes.

        Returns once the server has registered the watch, so every later change
        is seen. The stream has no deadline; cancel it (or leave its ``with``
        block) when done.

        Args:
            key: The key, the prefix, or the first key of the range.
            prefix: Every key that starts with ``key``.
            range_end: The keys from ``key`` (inclusive) to this (exclusive).
            start_revision: Replay the changes from this revision on first
                (0: only changes from now).

        Returns:
            An iterator of :class:`~keyvalue.watch.Event`, also a context manager.

        Raises:
            Compacted: ``start_revision`` is older than the history the server keeps.
            ResourceExhausted: Too many watches are open (``--max-watchers``).
            InvalidArgument: Bad key or range.
            ServerUnavailable: The server cannot be reached within the timeout.
            KeyValueError: Any other failure.
        """
        self._check_open()
        request = kv_pb2.WatchRequest(
            key=to_bytes(key),
            range_end=optional_bytes(range_end),
            prefix=prefix,
            start_revision=start_revision,
        )
        call = self._kv.Watch(request)
        # The server answers with headers once the watch is registered, or
        # with the error status at once.
        self._await_answer(call)
        if call.done() and call.code() is not grpc.StatusCode.OK:
            # The finished call is itself the RpcError its iteration would raise.
            raise from_rpc_error(cast(grpc.RpcError, call), service="v1")
        return Watch(call, self.address)

    # ---- snapshots ----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A consistent copy of every key and lease, at one revision, streamed.

        Returns once the first chunk has arrived, with the copy's revision and
        leases; iterating the result yields every key, in key order, as the
        server streams them (1000 per chunk). Writes made meanwhile are not in
        the copy. The stream has no deadline (a large store takes as long as it
        takes); cancel it (or leave its ``with`` block) to stop early::

            with client.snapshot() as snapshot:
                snapshot.revision  # int
                snapshot.leases  # tuple of Lease(id, ttl)
                keys = list(snapshot)  # KeyValue, each key once, in order

        Returns:
            A :class:`~keyvalue.snapshot.Snapshot`: an iterator of
            :class:`~keyvalue.KeyValue`, also a context manager.

        Raises:
            PermissionDenied: The token may not read every key (a token confined
                to a prefix).
            Unauthenticated: The server wants a token and got none or an unknown one.
            ServerUnavailable: The server cannot be reached within the timeout.
                Iterating raises it too if the stream ends before the copy is complete.
            KeyValueError: Any other failure (also while iterating).
        """
        self._check_open()
        call = self._kv.Snapshot(kv_pb2.SnapshotRequest())
        # Bounds the wait for the server's answer by the client's timeout; the
        # first chunk follows the headers at once.
        self._await_answer(call)
        return Snapshot(call, self.address)

    # ---- leases -------------------------------------------------------------

    def lease_grant(self, ttl: float) -> Lease:
        """Grant a lease that expires ``ttl`` seconds from now unless kept alive.

        Raises:
            ValueError: ``ttl`` is not above zero.
            InvalidArgument: ``ttl`` is above the server's limit.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.LeaseGrantRequest(ttl_ms=to_millis(ttl))
        reply = self._unary(self._kv.LeaseGrant, request, kv_pb2.LeaseGrantResponse)
        return Lease.from_pb(reply)

    def lease_keep_alive(self, lease_id: int) -> Lease:
        """Restart the lease's TTL.

        Raises:
            LeaseNotFound: The lease expired, was revoked, or never existed.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.LeaseKeepAliveRequest(id=lease_id)
        reply = self._unary(self._kv.LeaseKeepAlive, request, kv_pb2.LeaseKeepAliveResponse)
        return Lease.from_pb(reply)

    def lease_revoke(self, lease_id: int) -> int:
        """End the lease now, deleting its keys.

        Returns:
            How many keys were deleted.

        Raises:
            LeaseNotFound: The lease expired, was revoked, or never existed.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.LeaseRevokeRequest(id=lease_id)
        return self._unary(self._kv.LeaseRevoke, request, kv_pb2.LeaseRevokeResponse).deleted

    def lease_info(self, lease_id: int) -> LeaseInfo:
        """The lease's TTL and the time it has left.

        Raises:
            LeaseNotFound: The lease expired, was revoked, or never existed.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        request = kv_pb2.LeaseInfoRequest(id=lease_id)
        reply = self._unary(self._kv.LeaseInfo, request, kv_pb2.LeaseInfoResponse)
        return LeaseInfo(id=reply.id, ttl=reply.ttl_ms / 1000, remaining=reply.remaining_ms / 1000)

    # ---- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the channel. Calling it again does nothing."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        security = " tls" if self.tls else ""
        auth = " token" if self._has_token else ""
        return f"<Client {self.address} timeout={self.timeout}{security}{auth} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the client is closed")

    def _unary(self, rpc: Any, request: Any, reply_type: type[_Reply]) -> _Reply:
        """Call a unary method of ``keyvalue.v1.KV`` with the client's deadline."""
        self._check_open()
        try:
            reply = rpc(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, service="v1") from error
        return cast(_Reply, reply)

    def _await_answer(self, call: Any) -> None:
        """Block until a streaming call has its response headers or its status.

        Waits at most the client's timeout; ``initial_metadata()`` itself has
        no deadline, so a helper thread waits for it.

        Raises:
            ServerUnavailable: No answer within the timeout (the call is cancelled).
        """
        answered = threading.Event()

        def wait() -> None:
            try:
                call.initial_metadata()
            except grpc.RpcError:
                pass  # the failure is the call's status, read by the caller
            finally:
                answered.set()

        threading.Thread(target=wait, name="keyvalue-stream-start", daemon=True).start()
        if not answered.wait(self.timeout):
            call.cancel()
            raise error_for_status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"kvserver at {self.address} did not answer within {self.timeout} s",
            )


@dataclass(frozen=True, slots=True)
class _CallDetails(grpc.ClientCallDetails):
    """A call's details with other metadata (``grpc.ClientCallDetails`` is abstract)."""

    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call on the channel.

    An interceptor rather than ``grpc.metadata_call_credentials``, which
    grpcio only applies over TLS: tokens work over plaintext channels too.
    Both kinds of call the services have (unary, and server streaming for
    Watch and Snapshot) are covered.
    """

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = (*(details.metadata or ()), self._header)
        return _CallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)


def _check_token(token: str) -> None:
    """Refuse a token that cannot be sent as a header value.

    Raises:
        ValueError: The token is empty, or has spaces or other characters
            outside printable ASCII.
    """
    if not token:
        raise ValueError("token must not be empty")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("token must be printable ASCII without spaces")


def _read_pem(path: StrPath, argument: str) -> bytes:
    """The contents of a PEM file.

    Raises:
        ValueError: It cannot be read, or holds no PEM block; the message
            names ``argument`` and the file.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot read {argument} {os.fsdecode(path)!r}: {reason}") from error
    if b"-----BEGIN " not in data:
        raise ValueError(f"{argument} {os.fsdecode(path)!r} is not a PEM file")
    return data


def _channel_credentials(
    ca_file: StrPath | None, cert_file: StrPath | None, key_file: StrPath | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials from the files, or ``None`` for a plaintext channel.

    Raises:
        ValueError: See :class:`Client`.
    """
    if (cert_file is None) != (key_file is None):
        given, missing = ("cert_file", "key_file")
        if cert_file is None:
            given, missing = missing, given
        raise ValueError(f"{given} needs {missing} too (mutual TLS takes both)")
    if ca_file is None:
        if cert_file is not None:
            raise ValueError("cert_file and key_file need ca_file (they are for TLS)")
        return None
    root = _read_pem(ca_file, "ca_file")
    chain = _read_pem(cert_file, "cert_file") if cert_file is not None else None
    key = _read_pem(key_file, "key_file") if key_file is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )
