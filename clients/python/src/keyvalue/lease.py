"""Leases: a time to live that keys share, restarted by keep-alives.

A key attached to a lease is deleted when the lease expires (nobody kept it
alive for a whole TTL) or is revoked; watchers see an ``expire`` or ``delete``
event. Times are in seconds, as floats; the wire carries milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keyvalue._proto import kv_pb2


def to_millis(seconds: float) -> int:
    """``seconds`` as whole milliseconds, rounded up so a positive TTL never becomes 0.

    Raises:
        ValueError: ``seconds`` is not above zero (or not finite).
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a number of seconds above zero, got {seconds}")
    return math.ceil(seconds * 1000)


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted (or kept-alive) lease.

    Attributes:
        id: The lease id, to attach keys (``put(..., lease=id)``), keep alive or revoke.
        ttl: Its time to live, in seconds.
    """

    id: int
    ttl: float

    @classmethod
    def from_pb(
        cls,
        message: kv_pb2.LeaseGrantResponse | kv_pb2.LeaseKeepAliveResponse | kv_pb2.SnapshotLease,
    ) -> Lease:
        """The lease a wire grant or keep-alive answer, or a snapshot, names."""
        return cls(id=message.id, ttl=message.ttl_ms / 1000)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The state of a live lease.

    Attributes:
        id: The lease id.
        ttl: Its time to live, in seconds.
        remaining: Seconds left before it expires, unless kept alive.
        keys: Its first keys, in key order, when asked for (``keys=N``).
        more_keys: Whether it has keys beyond ``keys``.
    """

    id: int
    ttl: float
    remaining: float
    keys: tuple[bytes, ...] = ()
    more_keys: bool = False

    @classmethod
    def from_pb(cls, message: kv_pb2.LeaseInfoResponse) -> LeaseInfo:
        """The lease a wire ``LeaseInfo`` answer (or an entry of ``LeaseList``) describes."""
        return cls(
            id=message.id,
            ttl=message.ttl_ms / 1000,
            remaining=message.remaining_ms / 1000,
            keys=tuple(message.keys),
            more_keys=message.more_keys,
        )
