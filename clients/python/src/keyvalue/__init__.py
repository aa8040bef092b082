"""Python client of keyvalue, the gRPC key/value service (``simplekeyvalue.KeyValue``).

Use :class:`Client` to set and get keys; failures raise subclasses of
:class:`KeyValueError`. The ``kv-py`` command (``python -m keyvalue``) lives in
:mod:`keyvalue.cli`.
"""

from keyvalue.client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client
from keyvalue.errors import (
    InvalidArgument,
    KeyNotFound,
    KeyValueError,
    RequestFailed,
    ServerUnavailable,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "Client",
    "InvalidArgument",
    "KeyNotFound",
    "KeyValueError",
    "RequestFailed",
    "ServerUnavailable",
]
