"""The keyvalue client: a typed, blocking wrapper around both gRPC services.

One :class:`Client` holds one gRPC channel to one server, over which it speaks
the tutorial's ``simplekeyvalue.KeyValue`` (:meth:`Client.get`,
:meth:`Client.set`: text keys and values) and the full API ``keyvalue.v1.KV``
(every other method: bytes or str keys and values, revisions, ranges,
transactions, watches, leases, snapshots). Both serve the same data. Each call
has a deadline (the client's ``timeout``, or the call's own ``timeout=``;
watches and snapshots have none once started) and raises a
:class:`~keyvalue.errors.KeyValueError` subclass on failure, never a raw
``grpc.RpcError``::

    with Client("127.0.0.1:50051", timeout=5.0) as client:
        client.set("weather", "sunny")
        client.get("weather")  # "sunny"
        client.get_kv("weather", timeout=0.5).value  # b"sunny"

With ``ca_file`` the channel is TLS (and mutual TLS with ``cert_file`` and
``key_file``), with ``tls=True`` TLS trusting the system's root certificates;
with ``token`` every call of both services carries
``authorization: Bearer <token>``::

    Client("kv://localhost:50051", ca_file="ca.pem", token="s3cret")

What is built on these calls (leases kept alive, locks, the update loop) lives
in :mod:`keyvalue.recipes`; what each call sends and how its reply is read, in
:mod:`keyvalue.calls`, shared with :class:`~keyvalue.AsyncClient`.

A client is thread-safe: one client (one channel, one connection) may serve
every thread of a program at once, and should; a :class:`~keyvalue.Watch` or a
:class:`~keyvalue.Snapshot` is read by one thread at a time, but any thread
may cancel it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

import grpc

from keyvalue import calls
from keyvalue._base import (
    DEFAULT_ADDRESS,
    DEFAULT_TIMEOUT,
    STOP_POLL,
    ClientBase,
    describe_method,
    failed_check,
)
from keyvalue._proto import kv_pb2
from keyvalue.calls import CLIENT_TIMEOUT, BatchItems, Call, Timeout
from keyvalue.channel import CHANNEL_OPTIONS, StrPath
from keyvalue.errors import Compacted, KeyValueError, error_for_status, from_rpc_error
from keyvalue.kept_lease import KeptLease
from keyvalue.key_value import BytesLike, KeyValue
from keyvalue.lease import LeaseInfo
from keyvalue.recipes import (
    Lock,
    Steps,
    Updater,
    WaitForDelete,
    lock_steps,
    unlock,
    update_steps,
)
from keyvalue.results import CasResult
from keyvalue.retry import Retrying, RetryPolicy
from keyvalue.snapshot import Snapshot
from keyvalue.watch import Watch, WatchCursor

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "Client", "StrPath"]

_R = TypeVar("_R")
_P = ParamSpec("_P")
# A key type: Mapping is invariant in its keys, so dict[str, ...] needs a TypeVar.
_Key = TypeVar("_Key", bound=BytesLike)


def unary(build: Callable[_P, Call[_R]]) -> Callable[Concatenate[Client, _P], _R]:
    """A method of :class:`Client` that sends the call ``build`` makes of its arguments.

    The method has ``build``'s signature and documentation: each unary call is
    defined once, in :mod:`keyvalue.calls`, for both clients.
    """

    def method(self: Client, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return self.run(build(*args, **kwargs))

    describe_method(method, build, "Client")
    return method


class Client(ClientBase):
    """A connection to one kvserver.

    The channel connects lazily on the first call, and reconnects by itself
    if the server restarts. Close the client when done, or use it as a context
    manager; a closed client raises ``ValueError`` on every call.

    Every unary method takes ``timeout=``: seconds for this call, or ``None``
    for no deadline; by default the client's. Writes also take
    ``idempotent=True``, which lets the retry policy repeat them (see
    :mod:`keyvalue.retry`).

    Args:
        address: The server, as ``host:port`` or ``kv://host:port``. With TLS,
            the host must be a name (or IP address) the server's certificate covers.
        timeout: Seconds each call may take before it fails with
            :class:`~keyvalue.errors.DeadlineExceeded` (or
            :class:`~keyvalue.errors.ServerUnavailable` if it could not
            connect); ``None`` waits forever.
        token: Send ``authorization: Bearer <token>`` with every call, for a
            server started with ``--auth-token-file``. Without TLS the token
            crosses the network in the clear.
        tls: Connect over TLS, trusting the system's root certificates (for a
            server whose certificate a public CA signed).
        ca_file: Connect over TLS, trusting the server certificates this PEM
            file's CA certificates signed. Without it (and ``tls``) the channel
            is plaintext.
        cert_file: With ``key_file``: present this PEM certificate chain to the
            server (mutual TLS, for a server started with ``--tls-client-ca``).
            Needs ``ca_file`` or ``tls``.
        key_file: The PEM private key of ``cert_file``.
        retry: Retry safe calls that failed for want of a connection or of an
            answer in time, as this policy says (see :mod:`keyvalue.retry`);
            ``None``: never retry. Watches resume after a lost connection
            whatever this says (with this policy, or a default one).
        wait_for_ready: Calls made while the server cannot be reached wait
            for it (up to their timeout) instead of failing at once with
            :class:`~keyvalue.errors.ServerUnavailable`: gRPC's wait-for-ready.

    Raises:
        ValueError: A bad argument: an empty address, one without a port or
            host, an empty token, a timeout not above zero, ``cert_file``
            without ``key_file`` (or the other way round) or without TLS, or a
            file that cannot be read or does not hold what it should (a
            private key as ``ca_file``; the message names the file).
    """

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None) -> Any:
        self._following = False
        self._follow_lock = threading.Lock()
        if credentials is None:
            return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)

    # ---- simplekeyvalue.KeyValue -------------------------------------------

    set = unary(calls.set)

    get = unary(calls.get)

    # ---- keyvalue.v1.KV: single keys -------------------------------------

    get_kv = unary(calls.get_kv)

    put = unary(calls.put)

    delete = unary(calls.delete)

    # ---- conditional writes ----------------------------------------------

    compare_and_set = unary(calls.compare_and_set)

    delete_if = unary(calls.delete_if)

    txn = unary(calls.txn)

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
        revision: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
    ) -> Iterator[KeyValue]:
        """The keys of a range, in key order, fetched page by page as iteration goes.

        Without ``prefix`` or ``range_end``, the range runs from ``key`` to the
        end of the keyspace (so ``range()`` is every key). Each page is one
        request, and every page is read at the first page's revision (the
        server's page token carries it): however long the listing, and
        whatever is written meanwhile, it is one snapshot. A page asks for at
        most the keys still wanted (``limit``), so ``limit=1`` fetches one.

        Args:
            key: The first key (inclusive), or the prefix.
            prefix: Every key that starts with ``key``.
            range_end: Stop before this key.
            keys_only: Leave the values out (they come back empty).
            limit: Yield at most this many keys.
            page_size: Keys per request; default (and at most): the server's
                ``--max-range-page``.
            revision: Read the range as it was at this revision (0: now).
            timeout: Seconds each page's request may take; default: the client's.

        Yields:
            Each key in the range, once.

        Raises:
            ValueError: ``limit`` or ``revision`` is negative, or ``page_size``
                not above zero.
            InvalidArgument: Bad range.
            Compacted: ``revision`` is older than the server keeps, or the
                history of the listing's revision was compacted between pages.
            FutureRevision: ``revision`` is after the store's current one.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        pager = calls.RangePager(
            key,
            prefix=prefix,
            range_end=range_end,
            keys_only=keys_only,
            limit=limit,
            page_size=page_size,
            revision=revision,
        )
        while (call := pager.next_call(timeout)) is not None:
            yield from self.run(call)

    count = unary(calls.count)

    # ---- batches ------------------------------------------------------------

    batch_get = unary(calls.batch_get)

    # By hand, for its overloads: mypy infers a dict literal against each alone.
    @overload
    def batch_put(
        self,
        items: Mapping[_Key, BytesLike],
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int: ...

    @overload
    def batch_put(
        self,
        items: Iterable[tuple[BytesLike, BytesLike]],
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int: ...

    def batch_put(
        self,
        items: BatchItems,
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int:
        """Store many keys atomically, at one revision (replaced by the builder's doc)."""
        call = calls.batch_put(items, lease=lease, timeout=timeout, idempotent=idempotent)
        return self.run(call)

    batch_put.__doc__ = calls.batch_put.__doc__

    # ---- watches ------------------------------------------------------------

    def watch(
        self,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        start_revision: int = 0,
        resume: bool = True,
        timeout: Timeout = CLIENT_TIMEOUT,
    ) -> Watch:
        """Watch a key, a prefix or a range for changes.

        Returns once the server has registered the watch, so every later change
        is seen. The stream has no deadline; cancel it (or leave its ``with``
        block) when done.

        With ``resume`` (the default) the watch outlives a lost connection or
        a server restart: it watches again from the revision after the last
        event it yielded, so no event is lost or repeated, trying as the
        client's retry policy says (or :data:`~keyvalue.watch.RESUME_POLICY`).
        Should the server no longer keep that history, iterating raises
        :class:`~keyvalue.errors.Compacted` rather than skip the gap.

        Args:
            key: The key, the prefix, or the first key of the range.
            prefix: Every key that starts with ``key``.
            range_end: The keys from ``key`` (inclusive) to this (exclusive).
            start_revision: Replay the changes from this revision on first
                (0: only changes from now).
            resume: Watch again after a lost connection (see above).
            timeout: Seconds the server may take to register the watch.

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
        if resume and start_revision == 0:
            # Pin "from now" to a revision, so that a resumed watch knows where now was.
            start_revision = (
                self.run(
                    calls.current_revision(key, prefix=prefix, range_end=range_end, timeout=timeout)
                )
                + 1
            )
        cursor = WatchCursor(
            key, prefix=prefix, range_end=range_end, start_revision=start_revision, resume=resume
        )
        deadline = self._deadline(timeout)
        policy = cursor.policy(self.retry)

        def start() -> Any:
            return self._start_stream("Watch", cursor.request(), deadline, policy)

        def check() -> None:
            # A server behind what the watch has seen lost its history.
            current = self.run(
                calls.current_revision(key, prefix=prefix, range_end=range_end, timeout=timeout)
            )
            cursor.check_server_revision(current, self.address)

        def restart(stop: threading.Event) -> Any:
            return self._start_stream("Watch", cursor.request(), deadline, policy, stop, check)

        watch = Watch(start(), self._config.address.target, cursor, restart)
        if resume:
            self._follow_channel()
            self._add_watch(watch)
        return watch

    # ---- snapshots ----------------------------------------------------------

    def snapshot(self, *, timeout: Timeout = CLIENT_TIMEOUT) -> Snapshot:
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

        Args:
            timeout: Seconds the server may take to start answering.

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
        call = self._start_stream(
            "Snapshot", kv_pb2.SnapshotRequest(), self._deadline(timeout), self.retry
        )
        return Snapshot(call, self._config.address.target)

    # ---- history ------------------------------------------------------------

    compact = unary(calls.compact)

    # ---- leases -------------------------------------------------------------

    lease_grant = unary(calls.lease_grant)

    lease_keep_alive = unary(calls.lease_keep_alive)

    lease_revoke = unary(calls.lease_revoke)

    lease_info = unary(calls.lease_info)

    def leases(
        self,
        *,
        keys: int = 0,
        page_size: int | None = None,
        timeout: Timeout = CLIENT_TIMEOUT,
    ) -> Iterator[LeaseInfo]:
        """Every live lease, in id order, fetched page by page as iteration goes.

        Args:
            keys: With each lease, its first keys, at most this many (the
                server caps the keys of a page; ``more_keys`` says where it
                cut, and :meth:`lease_info` with ``keys`` reads one lease's).
            page_size: Leases per request; default (and at most): the
                server's ``--max-range-page``.
            timeout: Seconds each page's request may take; default: the client's.

        Yields:
            Each lease granted and not yet expired or revoked, once.

        Raises:
            ValueError: ``keys`` is negative or ``page_size`` not above zero.
            ServerUnavailable: The server cannot be reached or did not answer in time.
            KeyValueError: Any other failure.
        """
        pager = calls.LeasePager(keys=keys, page_size=page_size)
        while (call := pager.next_call(timeout)) is not None:
            yield from self.run(call)

    # ---- recipes: kept leases, locks, the update loop -------------------------

    def lease(self, ttl: float) -> KeptLease:
        """A lease kept alive in the background while a ``with`` block runs.

            with client.lease(10) as lease:
                client.put("service/me", "up", lease=lease.id)
                ...  # the key lives as long as the block does
            # revoked: the key is gone

        The lease is granted when the block starts, kept alive by a thread
        three times per ``ttl``, and revoked when the block ends, however it
        ends. See :class:`~keyvalue.kept_lease.KeptLease`.

        Raises:
            ValueError: ``ttl`` is not above zero (when the block starts).
            KeyValueError: The grant failed (when the block starts).
        """
        self._check_open()
        return KeptLease(self, ttl)

    @contextmanager
    def lock(self, name: BytesLike, ttl: float = 10.0) -> Iterator[Lock]:
        """Hold the lock ``name`` while a ``with`` block runs; wait for it first.

            with client.lock("locks/report", ttl=10):
                ...  # no other holder of locks/report anywhere meanwhile

        The lock is the key ``name``, created in a transaction only if it does
        not exist (as python-etcd3's lock, and the Ruby client's: they exclude
        each other), attached to a lease that is kept alive while the block
        runs. At its end the key is deleted (if it is still this holder's)
        and the lease revoked. A holder that dies without releasing the lock
        loses it after ``ttl`` seconds. Waiting holders watch the key and try
        again when it goes.

        Yields:
            The :class:`~keyvalue.recipes.Lock`, whose ``revision`` grows with
            each new holder (a fencing token).

        Raises:
            KeyValueError: A call failed while acquiring or releasing.
        """
        with self.lease(ttl) as lease:
            held = self._drive(lock_steps(name, lease.id))
            try:
                yield held
            finally:
                self.run(unlock(held))

    def update(self, key: BytesLike, fn: Updater) -> CasResult:
        """Set ``key`` to ``fn(current value)``, atomically, however many write it at once.

        Reads the key, computes ``fn(value)`` (``value`` is ``None`` if the key
        does not exist) and writes it with a compare-and-set; if another
        writer changed the key meanwhile, starts over from the value that
        writer left. ``fn`` may be called several times, so it should only
        compute::

            client.update("counter", lambda value: str(int(value or b"0") + 1))

        Returns:
            The successful write: its revision and the key's new state.

        Raises:
            KeyValueError: A call failed.
        """
        return self._drive(update_steps(key, fn))

    def _drive(self, steps: Steps[_R]) -> _R:
        """Run a recipe of :mod:`keyvalue.recipes`: do each step it yields, send back the result."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, WaitForDelete):
                    self._wait_for_delete(step)
                    step = steps.send(None)
                else:
                    step = steps.send(self.run(step))
        except StopIteration as done:
            return cast(_R, done.value)

    def _wait_for_delete(self, step: WaitForDelete) -> None:
        """Block until ``step.key`` is deleted or expires after ``step.revision``.

        If the server no longer has the history from there, return at once:
        the recipe looks again.
        """
        with (
            contextlib.suppress(Compacted),
            self.watch(step.key, start_revision=step.revision + 1) as watch,
        ):
            for event in watch:
                if event.kind != "put":
                    return

    # ---- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the channel. Calling it again does nothing."""
        if not self._closed:
            self._closed = True
            if self._following:
                self._channel.unsubscribe(self._note_channel_state)
            self._channel.close()

    def _follow_channel(self) -> None:
        """Have the channel's state changes reach :meth:`_note_channel_state` (once)."""
        with self._follow_lock:
            if not self._following:
                self._following = True
                self._channel.subscribe(self._note_channel_state, try_to_connect=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- sending ------------------------------------------------------------

    def run(self, call: Call[_R]) -> _R:
        """Send one :class:`~keyvalue.calls.Call` and return its result, retrying as allowed.

        Every method above is one call of this; the recipes of
        :mod:`keyvalue.recipes` are sequences of them.

        Raises:
            KeyValueError: The call failed (after the retries it was allowed).
        """
        self._check_open()
        method, options = self._unary_method(call)
        retrying = self._retrying(call)
        while True:
            try:
                return call.parse(method(call.request, **options))
            except grpc.RpcError as error:
                failure = from_rpc_error(error, service=call.service)
                delay = retrying.delay_or_raise(failure, error)
            time.sleep(delay)

    def _start_stream(
        self,
        method: str,
        request: Any,
        deadline: float | None,
        policy: RetryPolicy | None,
        stop: threading.Event | None = None,
        check: Callable[[], None] | None = None,
    ) -> Any:
        """Start a server-streaming call of ``keyvalue.v1.KV`` and wait for its answer.

        Returns the call once the server has answered with headers (for a
        watch: once it is registered) and ``check`` (a read that must follow
        the start, such as a resumed watch's look at the server's revision)
        passed, retrying a failed start or check as allowed: a stream can
        start on a server as it shuts down, which is gone by the check.
        ``None`` as soon as ``stop`` is set (a watch cancelled while it resumes).

        Raises:
            KeyValueError: The call or its check failed at once, or did not
                start in time.
        """
        retrying = Retrying(policy, True)  # starting a stream reads
        while stop is None or not stop.is_set():
            call = self._open_stream(method, request)
            failure = self._await_answer(call, deadline, stop)
            if failure is None and check is not None:
                try:
                    check()
                except BaseException as error:
                    failure = failed_check(call, error)
            if failure is None:
                return call
            if stop is not None and stop.is_set():
                break
            delay = retrying.delay_or_raise(failure)
            if stop is None:
                time.sleep(delay)
            else:
                stop.wait(delay)
        return None

    def _await_answer(
        self, call: Any, deadline: float | None, stop: threading.Event | None = None
    ) -> KeyValueError | None:
        """Block until a streaming call has its response headers or its status.

        Waits at most ``deadline`` seconds, and no longer than ``stop`` stays
        unset; ``initial_metadata()`` itself has no deadline, so a helper
        thread waits for it.

        Returns:
            ``None`` once answered, or the failure: the call's status, or
            ``DEADLINE_EXCEEDED`` without an answer in time, or ``CANCELLED``
            once ``stop`` is set (the call is cancelled then).
        """
        answered = threading.Event()

        def wait() -> None:
            try:
                call.initial_metadata()
            except grpc.RpcError:
                pass  # the failure is the call's status, read below
            finally:
                answered.set()

        threading.Thread(target=wait, name="keyvalue-stream-start", daemon=True).start()
        end = None if deadline is None else time.monotonic() + deadline
        while not answered.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                call.cancel()
                return error_for_status(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"kvserver at {self.address} did not answer within {deadline} s",
                )
            if stop is not None and stop.is_set():
                call.cancel()
                return error_for_status(grpc.StatusCode.CANCELLED, "the watch was cancelled")
            # Look at stop ten times a second; else sleep until answered or late.
            answered.wait(left if stop is None else min(left or STOP_POLL, STOP_POLL))
        if call.done() and call.code() is not grpc.StatusCode.OK:
            # The finished call is itself the RpcError its iteration would raise.
            return from_rpc_error(call, service="v1")
        return None
