"""A lease kept alive in the background while a ``with`` block runs: :class:`KeptLease`.

``with client.lease(ttl) as lease:`` grants a lease, restarts its TTL from a
background thread three times per TTL, and revokes it when the block ends
(which deletes the keys attached to it), however the block ends. A token
confined to a key prefix may revoke only a lease whose keys all start with
its prefix: any other lease is left to expire within its TTL. If the lease
is lost meanwhile (it expired because the server was unreachable for a whole
TTL, or someone revoked it), :attr:`KeptLease.lost` says so; the keys attached
to it are gone. The asyncio client has the same, kept by a task.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from keyvalue.errors import KeyValueError, LeaseNotFound, PermissionDenied
from keyvalue.recipes import KeepAlive

if TYPE_CHECKING:
    from keyvalue.client import Client


UNREVOKABLE = (LeaseNotFound, PermissionDenied)
"""Why a kept lease may not be revoked at the end of its block, and need not be.

``LeaseNotFound``: it expired meanwhile, gone all the same. ``PermissionDenied``:
the token is confined to a prefix and the lease holds a key outside it
(revoking would delete it); the lease, no longer kept alive, expires within
its TTL.
"""


class KeptLeaseBase:
    """What a kept lease is, blocking or asyncio: its id, TTL, and what befell it.

    Attributes:
        ttl: The lease's time to live, in seconds.
        keep_alives: How many keep-alives succeeded so far.
        lost: Why the lease was lost (:class:`~keyvalue.errors.LeaseNotFound`),
            or ``None`` while it lives.
    """

    def __init__(self, ttl: float) -> None:
        self._plan = KeepAlive(ttl)
        self.ttl = ttl
        self.keep_alives = 0
        self.lost: KeyValueError | None = None
        self._id: int | None = None

    @property
    def id(self) -> int:
        """The lease id, to attach keys to (``put(..., lease=lease.id)``)."""
        if self._id is None:
            raise ValueError("the lease is granted when its with block starts")
        return self._id

    @property
    def _revoke_at_exit(self) -> bool:
        """Whether leaving the block has a lease to revoke."""
        return self.lost is None and self._id is not None

    def _next_wait(self, failure: Exception | None) -> float | None:
        """Seconds until the next keep-alive after one that ended so; ``None``: stop.

        A lease that no longer exists is lost; a closed client (``ValueError``)
        ends the keeping; any other failure (the server unreachable) is tried
        again soon.
        """
        if failure is None:
            self.keep_alives += 1
            return self._plan.interval
        if isinstance(failure, KeyValueError):
            if self._plan.gives_up_after(failure):
                self.lost = failure
                return None
            return self._plan.retry_interval
        return None

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("kept" if self._id is not None else "not granted")
        return f"<{type(self).__name__} {self._id} ttl={self.ttl} {state}>"


class KeptLease(KeptLeaseBase):
    """A lease granted on entry, kept alive by a thread, revoked on exit.

    Args:
        client: The client that grants, keeps and revokes it.
        ttl: Seconds the lease lives without a keep-alive.
    """

    def __init__(self, client: Client, ttl: float) -> None:
        super().__init__(ttl)
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> KeptLease:
        self._id = self._client.lease_grant(self.ttl).id
        self._thread = threading.Thread(
            target=self._keep, name=f"keyvalue-lease-{self._id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._revoke_at_exit:
            with contextlib.suppress(*UNREVOKABLE):
                self._client.lease_revoke(self.id)

    def _keep(self) -> None:
        wait: float | None = self._plan.interval
        while wait is not None and not self._stop.wait(wait):
            try:
                self._client.lease_keep_alive(self.id, timeout=self.ttl)
            except (KeyValueError, ValueError) as failure:
                wait = self._next_wait(failure)
            else:
                wait = self._next_wait(None)
