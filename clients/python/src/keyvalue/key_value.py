"""Keys and values of the full API: :class:`KeyValue` and the bytes-or-str inputs.

Keys and values are bytes on the wire. Every method that takes a key or a value
also accepts ``str``, which is encoded as UTF-8; what comes back is always
``bytes`` (use ``.decode()`` for text).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from keyvalue._proto import kv_pb2

BytesLike = bytes | str
"""A key or value: ``bytes`` as they are, or ``str`` encoded as UTF-8."""


def to_bytes(data: BytesLike) -> bytes:
    """``data`` as bytes: ``str`` encoded as UTF-8, ``bytes`` unchanged.

    Raises:
        TypeError: ``data`` is neither ``bytes`` nor ``str``.
    """
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes or str, got {type(data).__name__}")


def optional_bytes(data: BytesLike | None) -> bytes:
    """``data`` as bytes; ``None`` (not given) is empty, as on the wire."""
    return b"" if data is None else to_bytes(data)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key and its state at some revision.

    Attributes:
        key: The key.
        value: The value (empty for a ``keys_only`` range and in delete events).
        create_revision: Revision of the write that created the key.
        mod_revision: Revision of the last write to the key (of the deletion,
            in delete and expire events).
        version: Puts since the key was created (1 after the first; 0 in delete
            and expire events).
        lease: The lease the key is attached to; 0 for none.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def from_pb(cls, message: kv_pb2.KeyValue) -> KeyValue:
        """The dataclass for a wire ``keyvalue.v1.KeyValue``."""
        return cls(
            key=message.key,
            value=message.value,
            create_revision=message.create_revision,
            mod_revision=message.mod_revision,
            version=message.version,
            lease=message.lease,
        )


def kv_field(parent: Message, field: str) -> KeyValue | None:
    """The :class:`KeyValue` in message field ``field`` of ``parent``; ``None`` if unset."""
    if not parent.HasField(field):
        return None
    message: kv_pb2.KeyValue = getattr(parent, field)
    return KeyValue.from_pb(message)
