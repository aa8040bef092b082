"""What both clients share besides the calls: checked arguments, deadlines, retries.

:class:`~keyvalue.Client` and :class:`~keyvalue.AsyncClient` differ only in
how they send a call; what they accept and keep is here, once.
"""

from __future__ import annotations

import math
from typing import Any

from keyvalue.calls import CLIENT_TIMEOUT, Call, Timeout
from keyvalue.channel import ChannelConfig, StrPath
from keyvalue.retry import Retrying, RetryPolicy

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where kvserver listens unless told otherwise."""

DEFAULT_TIMEOUT = 5.0
"""Seconds each call may take, connecting included, before it fails."""


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is ``None`` or a number of seconds above zero.

    Raises:
        ValueError: It is zero, negative or not a number.
    """
    if timeout is not None and not (timeout > 0 and not math.isnan(timeout)):
        raise ValueError(f"timeout must be above zero, got {timeout}")
    return timeout


class ClientBase:
    """The arguments and state both clients keep; see :class:`~keyvalue.Client`."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None,
        token: str | None,
        tls: bool,
        ca_file: StrPath | None,
        cert_file: StrPath | None,
        key_file: StrPath | None,
        retry: RetryPolicy | None,
        wait_for_ready: bool,
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

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        security = " tls" if self.tls else ""
        auth = " token" if self._config.metadata else ""
        name = type(self).__name__
        return f"<{name} {self.address} timeout={self.timeout}{security}{auth} {state}>"
