"""Python client of keyvalue, the gRPC key/value service.

Use :class:`Client` (or, under asyncio, :class:`AsyncClient`, the same API
awaited) to talk to a kvserver: ``get``/``set`` speak the tutorial's
``simplekeyvalue.KeyValue``; every other method speaks the full API,
``keyvalue.v1.KV`` (revisions, ranges, compare-and-set, transactions, batches,
watches, leases, snapshots). Failures raise subclasses of :class:`KeyValueError`. The
``kv-py`` command (``python -m keyvalue``) lives in :mod:`keyvalue.cli`.
"""

from keyvalue.aio import AsyncClient, AsyncKeptLease
from keyvalue.aio_streams import AsyncSnapshot, AsyncWatch
from keyvalue.client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client
from keyvalue.errors import (
    Compacted,
    DeadlineExceeded,
    FutureRevision,
    InvalidArgument,
    KeyNotFound,
    KeyValueError,
    LeaseNotFound,
    PermissionDenied,
    RequestFailed,
    ResourceExhausted,
    ServerUnavailable,
    Unauthenticated,
)
from keyvalue.kept_lease import KeptLease
from keyvalue.key_value import KeyValue
from keyvalue.lease import Lease, LeaseInfo
from keyvalue.recipes import Lock
from keyvalue.results import CasResult, DeleteResult, PutResult, RangeResult
from keyvalue.retry import RetryPolicy
from keyvalue.snapshot import Snapshot
from keyvalue.transactions import Compare, Op, TxnResult
from keyvalue.watch import Event, Watch

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AsyncKeptLease",
    "AsyncSnapshot",
    "AsyncWatch",
    "CasResult",
    "Client",
    "Compacted",
    "Compare",
    "DeadlineExceeded",
    "DeleteResult",
    "Event",
    "FutureRevision",
    "InvalidArgument",
    "KeptLease",
    "KeyNotFound",
    "KeyValue",
    "KeyValueError",
    "Lease",
    "LeaseInfo",
    "LeaseNotFound",
    "Lock",
    "Op",
    "PermissionDenied",
    "PutResult",
    "RangeResult",
    "RequestFailed",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerUnavailable",
    "Snapshot",
    "TxnResult",
    "Unauthenticated",
    "Watch",
]
