"""The keyvalue client: a typed, blocking wrapper around the KeyValue gRPC stub.

One :class:`Client` holds one gRPC channel to one server. Each call has a
deadline (``timeout``) and raises a :class:`~keyvalue.errors.KeyValueError`
subclass on failure, never a raw ``grpc.RpcError``::

    with Client("127.0.0.1:50051", timeout=5.0) as client:
        client.set("weather", "sunny")
        client.get("weather")  # "sunny"
"""

from __future__ import annotations

from types import TracebackType

import grpc

from keyvalue._proto import api_pb2, api_pb2_grpc
from keyvalue.errors import from_rpc_error

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


class Client:
    """A connection to one kvserver.

    The channel connects lazily on the first call, and reconnects by itself
    if the server restarts. Close the client when done, or use it as a context
    manager; a closed client raises ``ValueError`` on every call.

    Args:
        address: The server, as ``host:port``.
        timeout: Seconds each call may take before it fails with
            :class:`~keyvalue.errors.ServerUnavailable`; ``None`` waits forever.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float | None = DEFAULT_TIMEOUT):
        if not address.strip():
            raise ValueError("address must not be empty")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be above zero, got {timeout}")
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.KeyValueStub(self._channel)
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
        return f"<Client {self.address} timeout={self.timeout} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the client is closed")
