"""Retries: which failed calls are tried again, and how long to wait between tries.

Retrying is opt-in (``Client(retry=RetryPolicy())``) and only ever applies to
calls that are safe to repeat:

- **reads** (``get``, ``get_kv``, ``range``, ``count``, ``batch_get``,
  ``lease_info``, a ``txn`` whose operations are all reads, and the start of
  ``watch`` and ``snapshot``): repeating one changes nothing;
- ``lease_keep_alive``: restarting a TTL twice is the same as once;
- **writes the caller marks safe** with ``idempotent=True`` (``put``,
  ``set``, ``delete``, ``batch_put``, ``txn``, ``compare_and_set``,
  ``delete_if``, ``lease_grant``, ``lease_revoke``). Writes are not retried
  otherwise: a write whose answer was lost may have been applied, and a
  second put makes a second revision (and a second watch event), a second
  delete reports 0 keys deleted, a second compare-and-set reports a failed
  condition, a second grant makes a second lease.

Only failures that say nothing about the request itself are retried:
``UNAVAILABLE`` (no connection, or it was lost) and ``DEADLINE_EXCEEDED``
(no answer in time). Anything else (a bad argument, a refused token, a full
disk) would fail again, and is raised at once.

The waits grow exponentially with full jitter (each wait is random between 0
and the current backoff), so that many clients of a restarting server do not
come back in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from keyvalue.errors import KeyValueError

RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The status codes a call is retried on."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and after how long, to try a safe call again.

    Attributes:
        attempts: Tries in all, the first included (1: never retry).
        initial_backoff: The most, in seconds, to wait before the second try.
        max_backoff: The most to wait between any two tries.
        multiplier: How much the backoff grows after each try.
    """

    attempts: int = 6
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def delays(self) -> Iterator[float]:
        """The waits before the second, third, ... try; ``attempts - 1`` of them."""
        backoff = self.initial_backoff
        for _ in range(self.attempts - 1):
            yield random.uniform(0, backoff)
            backoff = min(backoff * self.multiplier, self.max_backoff)


class Retrying:
    """The retry state of one call: whether to try again after a failure, and when.

    Args:
        policy: The client's policy, or ``None`` (never retry).
        safe: Whether the call may be repeated (a read, or a write marked
            ``idempotent``).
    """

    def __init__(self, policy: RetryPolicy | None, safe: bool) -> None:
        self._delays = policy.delays() if policy is not None and safe else iter(())

    def delay_after(self, failure: KeyValueError) -> float | None:
        """Seconds to wait before trying again after ``failure``; ``None``: raise it."""
        if failure.code not in RETRIED_CODES:
            return None
        return next(self._delays, None)

    def delay_or_raise(self, failure: KeyValueError, cause: BaseException | None = None) -> float:
        """Seconds to wait before trying again after ``failure``.

        Raises:
            KeyValueError: ``failure`` itself (from ``cause``), when not to try again.
        """
        delay = self.delay_after(failure)
        if delay is None:
            raise failure from cause
        return delay
