"""Recipes built on the calls: the update loop, the lock, keeping a lease alive.

Each is written once, without I/O, for both clients: a recipe is a generator
that yields what it needs done (a :class:`~keyvalue.calls.Call` to send, or a
:class:`WaitForDelete`) and is sent back the result. :class:`~keyvalue.Client`
runs it blocking, :class:`~keyvalue.AsyncClient` awaiting, so the two behave
alike by construction.

- :func:`update_steps`: read a key, apply a function, compare-and-set it,
  and start over from the state that made the write fail, as redis-py's
  ``transaction(func)``: no update is lost to a concurrent writer.
- :func:`lock_steps`: python-etcd3's lock: create the lock key, attached to
  the holder's lease, only if it does not exist (its ``create_revision`` is
  0), in one transaction; else wait for it to be deleted, and try again. The
  holder's lease is kept alive while the lock is held; releasing deletes the
  key (:func:`unlock`) and revokes the lease; if the holder dies, the lease
  expires and so does the lock.
- :class:`KeepAlive`: when to restart a lease's TTL (three times per TTL, so
  that one late keep-alive does not lose the lease) and what ends the keeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from keyvalue import calls
from keyvalue.calls import Call
from keyvalue.errors import KeyValueError, LeaseNotFound
from keyvalue.key_value import BytesLike, KeyValue, to_bytes
from keyvalue.results import CasResult
from keyvalue.transactions import Compare, Op, TxnResult

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class WaitForDelete:
    """A step of a recipe: wait until ``key`` is deleted (or expires) after ``revision``.

    The client watches the key from ``revision + 1``, so a deletion that
    happened between the read that saw the key and the watch is not missed.
    """

    key: bytes
    revision: int


Step = Call[Any] | WaitForDelete
"""What a recipe asks its client to do."""

Steps = Generator[Step, Any, R]
"""A recipe: yields steps, is sent their results, returns its own."""

Updater = Callable[[bytes | None], BytesLike]
"""The function of an update: the current value (``None``: no such key) to the new one."""


def update_steps(key: BytesLike, fn: Updater) -> Steps[CasResult]:
    """Read ``key``, write ``fn(value)`` if nobody wrote it meanwhile; repeat until done.

    Returns:
        The successful compare-and-set: its revision and the key's new state.
    """
    current: KeyValue | None = yield calls.get_kv(key)
    while True:
        value = fn(current.value if current is not None else None)
        expect = current.mod_revision if current is not None else 0
        result: CasResult = yield calls.compare_and_set(key, value, expect_revision=expect)
        if result.succeeded:
            return result
        # The state that made the condition fail is the one to start over from.
        current = result.current


@dataclass(frozen=True, slots=True)
class Lock:
    """A held lock.

    Attributes:
        name: The lock's key.
        lease: The lease the key is attached to, kept alive while held.
        revision: The revision that created the key: larger for each new
            holder, so it may serve as a fencing token.
    """

    name: bytes
    lease: int
    revision: int


def lock_steps(name: BytesLike, lease: int) -> Steps[Lock]:
    """Create the key ``name`` attached to ``lease`` once no one else holds it.

    Returns:
        The lock, once held.
    """
    key = to_bytes(name)
    holder = uuid.uuid4().hex.encode()
    while True:
        result: TxnResult = yield calls.txn(
            [Compare.create_revision(key, "=", 0)],
            success=[Op.put(key, holder, lease=lease)],
            failure=[Op.get(key)],
        )
        if result.succeeded:
            return Lock(name=key, lease=lease, revision=result.revision)
        yield WaitForDelete(key, result.revision)


def unlock(lock: Lock) -> Call[TxnResult]:
    """Release ``lock``: delete its key if it is still the one this holder created.

    A holder whose lease expired may have lost the key to another: the
    ``create_revision`` compare leaves that one's key alone. Safe to repeat.
    """
    return calls.txn(
        [Compare.create_revision(lock.name, "=", lock.revision)],
        success=[Op.delete(lock.name)],
        idempotent=True,
    )


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """When to keep a lease of ``ttl`` seconds alive, and when to give up.

    Attributes:
        ttl: The lease's time to live, in seconds.
    """

    ttl: float

    @property
    def interval(self) -> float:
        """Seconds between keep-alives: a third of the TTL."""
        return self.ttl / 3

    @property
    def retry_interval(self) -> float:
        """Seconds before trying again after a failed keep-alive."""
        return self.ttl / 10

    @staticmethod
    def gives_up_after(failure: KeyValueError) -> bool:
        """Whether keeping the lease alive is over: it no longer exists."""
        return isinstance(failure, LeaseNotFound)
