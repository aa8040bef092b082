"""The asyncio client: :class:`AsyncClient`, :class:`~keyvalue.Client`'s API on ``grpc.aio``.

Every method of :class:`~keyvalue.Client` is here, as a coroutine with the
same arguments and results; ranges, watches and snapshots are async
iterators; ``lease`` and ``lock`` are async context managers::

    async with AsyncClient("127.0.0.1:50051") as client:
        await client.put("jobs/1", "todo")
        async for kv in client.range("jobs/", prefix=True):
            print(kv.key, kv.value)
        async with await client.watch("jobs/", prefix=True) as events:
            async for event in events:
                ...

What each call sends and how its reply is read is shared with the blocking
client (:mod:`keyvalue.calls`), and so are the lock and update loops
(:mod:`keyvalue.recipes`), the resume point of watches
(:class:`~keyvalue.watch.WatchCursor`) and the retry rules
(:mod:`keyvalue.retry`): the two clients answer alike by construction.

Make the client inside the event loop that uses it (``grpc.aio`` binds a
channel to the running loop). One client may serve every task of that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

import grpc

from keyvalue import calls
from keyvalue._base import STOP_POLL, ClientBase, describe_method, failed_check
from keyvalue._proto import kv_pb2
from keyvalue.aio_streams import AsyncSnapshot, AsyncWatch
from keyvalue.calls import CLIENT_TIMEOUT, BatchItems, Call, Timeout
from keyvalue.channel import CHANNEL_OPTIONS
from keyvalue.errors import (
    Compacted,
    KeyValueError,
    error_for_status,
    from_rpc_error,
)
from keyvalue.kept_lease import UNREVOKABLE, KeptLeaseBase
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
from keyvalue.watch import WatchCursor

__all__ = ["AsyncClient", "AsyncKeptLease"]

_R = TypeVar("_R")
_P = ParamSpec("_P")
# A key type: Mapping is invariant in its keys, so dict[str, ...] needs a TypeVar.
_Key = TypeVar("_Key", bound=BytesLike)


async def _pause(delay: float, stop: threading.Event | None) -> None:
    """Sleep ``delay`` seconds, or until ``stop`` is set (a watch cancelled as it resumes)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    while stop is None or not stop.is_set():
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(left if stop is None else min(left, STOP_POLL))


def unary(
    build: Callable[_P, Call[_R]],
) -> Callable[Concatenate[AsyncClient, _P], Coroutine[Any, Any, _R]]:
    """A coroutine method of :class:`AsyncClient` sending the call ``build`` makes."""

    async def method(self: AsyncClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await self.run(build(*args, **kwargs))

    describe_method(method, build, "AsyncClient")
    return method


class AsyncClient(ClientBase):
    """A ``grpc.aio`` connection to one kvserver: :class:`~keyvalue.Client`'s API, awaited.

    Takes the arguments of :class:`~keyvalue.Client`, checked alike. Close it
    with ``await client.close()`` or ``async with``.
    """

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None) -> Any:
        self._following: asyncio.Task[None] | None = None
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)

    set = unary(calls.set)
    get = unary(calls.get)
    get_kv = unary(calls.get_kv)
    put = unary(calls.put)
    delete = unary(calls.delete)
    compare_and_set = unary(calls.compare_and_set)
    delete_if = unary(calls.delete_if)
    txn = unary(calls.txn)
    count = unary(calls.count)
    batch_get = unary(calls.batch_get)
    compact = unary(calls.compact)
    lease_grant = unary(calls.lease_grant)
    lease_keep_alive = unary(calls.lease_keep_alive)
    lease_revoke = unary(calls.lease_revoke)
    lease_info = unary(calls.lease_info)

    async def leases(
        self,
        *,
        keys: int = 0,
        page_size: int | None = None,
        timeout: Timeout = CLIENT_TIMEOUT,
    ) -> AsyncIterator[LeaseInfo]:
        """Every live lease, in id order, page by page; see :meth:`keyvalue.Client.leases`.

        Yields:
            Each lease granted and not yet expired or revoked, once.
        """
        pager = calls.LeasePager(keys=keys, page_size=page_size)
        while (call := pager.next_call(timeout)) is not None:
            for lease in await self.run(call):
                yield lease

    @overload
    async def batch_put(
        self,
        items: Mapping[_Key, BytesLike],
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int: ...

    @overload
    async def batch_put(
        self,
        items: Iterable[tuple[BytesLike, BytesLike]],
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int: ...

    async def batch_put(
        self,
        items: BatchItems,
        *,
        lease: int = 0,
        timeout: Timeout = CLIENT_TIMEOUT,
        idempotent: bool = False,
    ) -> int:
        """Store many keys atomically, at one revision; see :func:`keyvalue.calls.batch_put`."""
        call = calls.batch_put(items, lease=lease, timeout=timeout, idempotent=idempotent)
        return await self.run(call)

    async def range(
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
    ) -> AsyncIterator[KeyValue]:
        """The keys of a range, page by page as iteration goes; see :meth:`keyvalue.Client.range`.

        Yields:
            Each key in the range, once, in key order.
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
            for kv in await self.run(call):
                yield kv

    async def watch(
        self,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        start_revision: int = 0,
        resume: bool = True,
        timeout: Timeout = CLIENT_TIMEOUT,
    ) -> AsyncWatch:
        """Watch a key, a prefix or a range; see :meth:`keyvalue.Client.watch`.

        Returns once the server has registered the watch.
        """
        self._check_open()
        if resume and start_revision == 0:
            start_revision = (
                await self.run(
                    calls.current_revision(key, prefix=prefix, range_end=range_end, timeout=timeout)
                )
                + 1
            )
        cursor = WatchCursor(
            key, prefix=prefix, range_end=range_end, start_revision=start_revision, resume=resume
        )
        deadline = self._deadline(timeout)
        policy = cursor.policy(self.retry)

        async def start() -> Any:
            return await self._start_stream("Watch", cursor.request(), deadline, policy)

        async def check() -> None:
            # A server behind what the watch has seen lost its history.
            current = await self.run(
                calls.current_revision(key, prefix=prefix, range_end=range_end, timeout=timeout)
            )
            cursor.check_server_revision(current, self.address)

        async def restart(stop: threading.Event) -> Any:
            return await self._start_stream(
                "Watch", cursor.request(), deadline, policy, stop, check
            )

        watch = AsyncWatch(await start(), self._config.address.target, cursor, restart)
        if resume:
            self._follow_channel()
            self._add_watch(watch)
        return watch

    async def snapshot(self, *, timeout: Timeout = CLIENT_TIMEOUT) -> AsyncSnapshot:
        """A consistent copy of every key and lease; see :meth:`keyvalue.Client.snapshot`."""
        self._check_open()
        call = await self._start_stream(
            "Snapshot", kv_pb2.SnapshotRequest(), self._deadline(timeout), self.retry
        )
        return await AsyncSnapshot.start(call, self._config.address.target)

    # ---- recipes ------------------------------------------------------------

    def lease(self, ttl: float) -> AsyncKeptLease:
        """A lease kept alive by a task while an ``async with`` block runs, revoked at its end."""
        self._check_open()
        return AsyncKeptLease(self, ttl)

    @asynccontextmanager
    async def lock(self, name: BytesLike, ttl: float = 10.0) -> AsyncIterator[Lock]:
        """Hold the lock ``name`` while an ``async with`` block runs (see ``Client.lock``).

        Yields:
            The held :class:`~keyvalue.recipes.Lock`.
        """
        async with self.lease(ttl) as lease:
            held = await self._drive(lock_steps(name, lease.id))
            try:
                yield held
            finally:
                await self.run(unlock(held))

    async def update(self, key: BytesLike, fn: Updater) -> CasResult:
        """Set ``key`` to ``fn(current value)`` atomically; see :meth:`keyvalue.Client.update`."""
        return await self._drive(update_steps(key, fn))

    async def _drive(self, steps: Steps[_R]) -> _R:
        """Run a recipe of :mod:`keyvalue.recipes`, awaiting each step."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, WaitForDelete):
                    await self._wait_for_delete(step)
                    step = steps.send(None)
                else:
                    step = steps.send(await self.run(step))
        except StopIteration as done:
            return cast(_R, done.value)

    async def _wait_for_delete(self, step: WaitForDelete) -> None:
        """Wait until ``step.key`` is deleted (see ``Client._wait_for_delete``)."""
        with contextlib.suppress(Compacted):
            async with await self.watch(step.key, start_revision=step.revision + 1) as watch:
                async for event in watch:
                    if event.kind != "put":
                        return

    # ---- lifecycle ----------------------------------------------------------

    async def close(self) -> None:
        """Close the channel, cancelling what is under way. Calling it again does nothing."""
        if not self._closed:
            self._closed = True
            if self._following is not None:
                self._following.cancel()
            await self._channel.close()

    def _follow_channel(self) -> None:
        """Start the task that hands the channel's state changes to ``_note_channel_state``."""
        if self._following is None:
            self._following = asyncio.create_task(self._follow(), name="keyvalue-channel-state")

    async def _follow(self) -> None:
        state = self._channel.get_state(try_to_connect=False)
        self._note_channel_state(state)
        while True:
            await self._channel.wait_for_state_change(state)
            state = self._channel.get_state(try_to_connect=False)
            self._note_channel_state(state)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- sending ------------------------------------------------------------

    async def run(self, call: Call[_R]) -> _R:
        """Send one :class:`~keyvalue.calls.Call`, retrying as allowed (see ``Client.run``)."""
        self._check_open()
        method, options = self._unary_method(call)
        retrying = self._retrying(call)
        while True:
            try:
                return call.parse(await method(call.request, **options))
            except grpc.RpcError as error:
                failure = from_rpc_error(error, service=call.service)
                delay = retrying.delay_or_raise(failure, error)
            await asyncio.sleep(delay)

    async def _start_stream(
        self,
        method: str,
        request: Any,
        deadline: float | None,
        policy: RetryPolicy | None,
        stop: threading.Event | None = None,
        check: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> Any:
        """Start a server-streaming call and wait for its headers, retrying a failed start.

        ``check`` as in :meth:`keyvalue.Client._start_stream`. Returns ``None``
        once ``stop`` is set (a watch cancelled while it resumes).

        Raises:
            KeyValueError: The call or its check failed at once, or did not
                start in time.
        """
        retrying = Retrying(policy, True)  # starting a stream reads
        while stop is None or not stop.is_set():
            call = self._open_stream(method, request)
            failure = await self._await_answer(call, deadline)
            if failure is None and check is not None:
                try:
                    await check()
                except BaseException as error:
                    failure = failed_check(call, error)
            if failure is None:
                return call
            await _pause(retrying.delay_or_raise(failure), stop)
        return None

    async def _await_answer(self, call: Any, deadline: float | None) -> KeyValueError | None:
        """Wait for a streaming call's headers or status; ``None`` once answered."""
        try:
            await asyncio.wait_for(call.initial_metadata(), deadline)
        except TimeoutError:
            call.cancel()
            return error_for_status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"kvserver at {self.address} did not answer within {deadline} s",
            )
        except grpc.RpcError as error:
            return from_rpc_error(error, service="v1")
        if call.done():
            code = await call.code()
            if code is not grpc.StatusCode.OK:
                details = await call.details()
                return error_for_status(code, details or "", service="v1")
        return None


class AsyncKeptLease(KeptLeaseBase):
    """A lease granted on entry, kept alive by a task, revoked on exit.

    The asyncio form of :class:`~keyvalue.kept_lease.KeptLease`.
    """

    def __init__(self, client: AsyncClient, ttl: float) -> None:
        super().__init__(ttl)
        self._client = client
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncKeptLease:
        self._id = (await self._client.lease_grant(self.ttl)).id
        self._task = asyncio.create_task(self._keep(), name=f"keyvalue-lease-{self._id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._revoke_at_exit:
            with contextlib.suppress(*UNREVOKABLE):
                await self._client.lease_revoke(self.id)

    async def _keep(self) -> None:
        wait: float | None = self._plan.interval
        while wait is not None:
            await asyncio.sleep(wait)
            try:
                await self._client.lease_keep_alive(self.id, timeout=self.ttl)
            except (KeyValueError, ValueError) as failure:
                wait = self._next_wait(failure)
            else:
                wait = self._next_wait(None)
