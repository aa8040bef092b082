"""What both clients share besides the calls: checked arguments, deadlines, retries.

:class:`~keyvalue.Client` and :class:`~keyvalue.AsyncClient` differ only in
how they send a call; what they accept and keep is here, once.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from keyvalue._proto import api_pb2_grpc, kv_pb2_grpc
from keyvalue.calls import CLIENT_TIMEOUT, Call, Timeout
from keyvalue.channel import ChannelConfig, StrPath
from keyvalue.errors import KeyValueError
from keyvalue.retry import Retrying, RetryPolicy

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where kvserver listens unless told otherwise."""

DEFAULT_TIMEOUT = 5.0
"""Seconds each call may take, connecting included, before it fails."""


def describe_method(method: Callable[..., Any], build: Callable[..., Any], owner: str) -> None:
    """Give a client method made from the call builder ``build`` its name, doc and signature.

    ``help()`` and ``inspect.signature`` then show ``self``, the builder's
    arguments and the result the call gives, not the ``Call`` it builds.
    """
    functools.update_wrapper(method, build)
    method.__qualname__ = f"{owner}.{build.__name__}"
    signature = inspect.signature(build)
    result = signature.return_annotation
    if isinstance(result, str) and result.startswith("Call[") and result.endswith("]"):
        result = result.removeprefix("Call[").removesuffix("]")
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()], return_annotation=result
    )


STOP_POLL = 0.1
"""Seconds between looks at whether a resuming watch was cancelled meanwhile."""


def failed_check(call: Any, error: BaseException) -> KeyValueError:
    """What a stream's check after its start (``_start_stream``) raising ``error`` gives.

    The started ``call`` is cancelled either way; a :class:`KeyValueError` is
    returned, to be retried as a failed start is; anything else is raised.
    """
    call.cancel()
    if isinstance(error, KeyValueError):
        return error
    raise error


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is ``None`` or a number of seconds above zero.

    Raises:
        ValueError: It is zero, negative or not a number.
    """
    if timeout is not None and not (timeout > 0 and not math.isnan(timeout)):
        raise ValueError(f"timeout must be above zero, got {timeout}")
    return timeout


class ClientBase(ABC):
    """The arguments and state both clients keep; see :class:`~keyvalue.Client`."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: bool = False,
        ca_file: StrPath | None = None,
        cert_file: StrPath | None = None,
        key_file: StrPath | None = None,
        retry: RetryPolicy | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        self.timeout = check_timeout(timeout)
        self._config = ChannelConfig.build(
            address, token=token, tls=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
        self.address = address
        self.retry = retry
        self.wait_for_ready = wait_for_ready
        # Whether the channel is TLS (tls=True or ca_file was given).
        self.tls = self._config.credentials is not None
        self._closed = False
        self._channel = self._open_channel(self._config.address.target, self._config.credentials)
        self._stub = api_pb2_grpc.KeyValueStub(self._channel)
        self._kv = kv_pb2_grpc.KVStub(self._channel)
        self._watches: weakref.WeakSet[WatchBase] = weakref.WeakSet()
        """The resuming watches open on this client, moved when the server goes away."""
        self._watches_lock = threading.Lock()
        self._channel_state: grpc.ChannelConnectivity | None = None

    def _note_channel_state(self, state: grpc.ChannelConnectivity) -> None:
        """Move every resuming watch to a new call when the connection is going away.

        A server shutting down gracefully sends GOAWAY: the channel leaves
        ``READY`` at once, but the open streams stay on the old connection,
        and the server waits for them (up to its ``--shutdown-grace``) before
        it exits. Leaving at once lets it stop, and each watch resumes from
        its next revision on whatever the channel connects to next.
        """
        previous, self._channel_state = self._channel_state, state
        if previous is grpc.ChannelConnectivity.READY and state is not previous:
            with self._watches_lock:
                watches = list(self._watches)
            for watch in watches:
                watch.leave()

    def _add_watch(self, watch: WatchBase) -> None:
        """Move ``watch`` too when the connection goes away (it resumes)."""
        with self._watches_lock:
            self._watches.add(watch)

    @abstractmethod
    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None) -> Any:
        """The channel to ``target``: a blocking one, or a ``grpc.aio`` one."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the client is closed")

    def _deadline(self, timeout: Timeout) -> float | None:
        """The seconds a call may take: its own ``timeout``, else the client's."""
        return self.timeout if timeout is CLIENT_TIMEOUT else check_timeout(timeout)

    def _retrying(self, call: Call[Any]) -> Retrying:
        """The retry state of one call: reads always qualify, writes if marked."""
        return Retrying(self.retry, call.safe or call.idempotent)

    def _unary_method(self, call: Call[Any]) -> tuple[Any, dict[str, Any]]:
        """The stub method that sends ``call``, and the options to send it with."""
        stub = self._kv if call.service == "v1" else self._stub
        options = {
            "timeout": self._deadline(call.timeout),
            "metadata": self._config.metadata,
            "wait_for_ready": self.wait_for_ready,
        }
        return getattr(stub, call.method), options

    def _open_stream(self, method: str, request: Any) -> Any:
        """Start a server-streaming call of ``keyvalue.v1.KV`` (it has no deadline)."""
        self._check_open()
        return getattr(self._kv, method)(
            request, metadata=self._config.metadata, wait_for_ready=self.wait_for_ready
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        security = " tls" if self.tls else ""
        auth = " token" if self._config.metadata else ""
        name = type(self).__name__
        return f"<{name} {self.address} timeout={self.timeout}{security}{auth} {state}>"


if TYPE_CHECKING:
    from keyvalue.watch import WatchBase
