"""What the writes and reads of the full API answer: typed, frozen results.

Every result carries ``revision``: the store's revision the answer reflects
(after a write, the revision of that write).
"""

from __future__ import annotations

from dataclasses import dataclass

from keyvalue._proto import kv_pb2
from keyvalue.key_value import KeyValue, kv_field


@dataclass(frozen=True, slots=True)
class PutResult:
    """The answer to :meth:`~keyvalue.Client.put` (and to a put in a transaction).

    Attributes:
        revision: The revision of the put.
        prev: The key's state before the put, if asked for (``prev_kv=True``)
            and the key existed; else ``None``.
        lease: The lease the key is now attached to (the one ``ttl`` granted, or
            the one given); 0 for none.
    """

    revision: int
    prev: KeyValue | None
    lease: int = 0

    @classmethod
    def from_pb(cls, message: kv_pb2.PutResponse, lease: int = 0) -> PutResult:
        """The result of a wire ``PutResponse``; ``lease`` if the reply names none."""
        return cls(
            revision=message.header.revision,
            prev=kv_field(message, "prev_kv"),
            lease=message.lease or lease,
        )


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The answer to a delete in a transaction.

    Attributes:
        revision: The revision of the delete (unchanged if nothing was deleted).
        deleted: How many keys were deleted.
        prev: The deleted keys, if asked for (``prev_kv=True``).
    """

    revision: int
    deleted: int
    prev: tuple[KeyValue, ...] = ()

    @classmethod
    def from_pb(cls, message: kv_pb2.DeleteResponse) -> DeleteResult:
        """The result of a wire ``DeleteResponse``."""
        return cls(
            revision=message.header.revision,
            deleted=message.deleted,
            prev=tuple(KeyValue.from_pb(kv) for kv in message.prev_kvs),
        )


@dataclass(frozen=True, slots=True)
class RangeResult:
    """One page of keys, as a get in a transaction answers.

    Attributes:
        revision: The revision the page was read at.
        kvs: The keys of the page, sorted.
        count: How many keys the whole range holds.
        more: Whether more keys follow this page.
    """

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool

    @classmethod
    def from_pb(cls, message: kv_pb2.RangeResponse) -> RangeResult:
        """The result of a wire ``RangeResponse``."""
        return cls(
            revision=message.header.revision,
            kvs=tuple(KeyValue.from_pb(kv) for kv in message.kvs),
            count=message.count,
            more=message.more,
        )


@dataclass(frozen=True, slots=True)
class CasResult:
    """The answer to a conditional write (:meth:`~keyvalue.Client.compare_and_set`, ...).

    A condition that does not hold is a normal answer, not an error.

    Attributes:
        succeeded: Whether the condition held and the write happened.
        revision: The revision of the write if it happened; else the store's
            revision when the condition was checked.
        current: The key's state after the answer: the written state when a
            put succeeded, ``None`` when a delete succeeded, and the state that
            made the condition fail otherwise (``None`` if the key is absent).
    """

    succeeded: bool
    revision: int
    current: KeyValue | None
