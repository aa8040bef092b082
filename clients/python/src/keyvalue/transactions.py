"""Transactions: :class:`Compare` conditions, :class:`Op` operations, :class:`TxnResult`.

A transaction checks every compare on the current state; if all hold it runs
the ``success`` operations, otherwise the ``failure`` ones, atomically at one
revision::

    result = client.txn(
        [Compare.mod_revision("config", "=", 5)],
        success=[Op.put("config", "new"), Op.get("config")],
        failure=[Op.get("config")],
    )
    if not result.succeeded:
        current = result.responses[0]  # a RangeResult

Build compares and operations with the class methods; they are plain frozen
values and may be reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from keyvalue._proto import kv_pb2
from keyvalue.key_value import BytesLike, optional_bytes, to_bytes
from keyvalue.results import DeleteResult, PutResult, RangeResult

CompareOp = Literal["=", "==", "!=", "<", ">"]
"""How a compare relates the key's field to the operand (``=`` and ``==`` are the same)."""

CompareTarget = Literal["value", "mod_revision", "create_revision", "version"]
"""Which field of the key a compare looks at."""

_WIRE_OP = {
    "=": kv_pb2.Compare.EQUAL,
    "==": kv_pb2.Compare.EQUAL,
    "!=": kv_pb2.Compare.NOT_EQUAL,
    "<": kv_pb2.Compare.LESS,
    ">": kv_pb2.Compare.GREATER,
}


@dataclass(frozen=True, slots=True)
class Compare:
    """A condition of a transaction on one key.

    A missing key has version, mod_revision and create_revision 0, and fails
    every value compare.

    Attributes:
        key: The key looked at.
        target: Which of its fields.
        op: How the field relates to ``operand``.
        operand: Bytes for ``value``, an integer for the others.
    """

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    def __post_init__(self) -> None:
        if self.op not in _WIRE_OP:
            raise ValueError(f"unknown compare op {self.op!r}: use one of =, !=, <, >")

    @classmethod
    def value(cls, key: BytesLike, op: CompareOp, value: BytesLike) -> Compare:
        """The key exists and its value relates to ``value`` (bytewise)."""
        return cls(to_bytes(key), "value", op, to_bytes(value))

    @classmethod
    def mod_revision(cls, key: BytesLike, op: CompareOp, revision: int) -> Compare:
        """The revision of the key's last write relates to ``revision`` (0: absent)."""
        return cls(to_bytes(key), "mod_revision", op, revision)

    @classmethod
    def create_revision(cls, key: BytesLike, op: CompareOp, revision: int) -> Compare:
        """The revision that created the key relates to ``revision`` (0: absent)."""
        return cls(to_bytes(key), "create_revision", op, revision)

    @classmethod
    def version(cls, key: BytesLike, op: CompareOp, version: int) -> Compare:
        """The key's version (puts since creation) relates to ``version`` (0: absent)."""
        return cls(to_bytes(key), "version", op, version)

    @classmethod
    def exists(cls, key: BytesLike) -> Compare:
        """The key exists."""
        return cls.version(key, ">", 0)

    @classmethod
    def absent(cls, key: BytesLike) -> Compare:
        """The key does not exist."""
        return cls.version(key, "=", 0)

    def to_pb(self) -> kv_pb2.Compare:
        """The wire form."""
        message = kv_pb2.Compare(key=self.key, op=_WIRE_OP[self.op])
        if self.target == "value":
            if not isinstance(self.operand, bytes):
                raise TypeError("a value compare takes bytes or str")
            message.value = self.operand
        else:
            if not isinstance(self.operand, int):
                raise TypeError(f"a {self.target} compare takes an int")
            setattr(message, self.target, self.operand)
        return message


@dataclass(frozen=True, slots=True)
class Op:
    """An operation of a transaction: a get (range), a put or a delete.

    Build one with :meth:`get`, :meth:`put` or :meth:`delete`.

    Attributes:
        kind: Which operation.
        key: The key (the first key, or the prefix).
        value: The value to put.
        range_end: End of the range, exclusive (get, delete).
        prefix: Every key starting with ``key`` (get, delete).
        lease: The lease to attach the key to (put).
        prev_kv: Answer with the previous state (put, delete).
        keys_only: Answer without values (get).
        limit: At most this many keys (get); ``None``: the server's page size.
    """

    kind: Literal["get", "put", "delete"]
    key: bytes
    value: bytes = b""
    range_end: bytes = b""
    prefix: bool = False
    lease: int = 0
    prev_kv: bool = False
    keys_only: bool = False
    limit: int | None = None

    @classmethod
    def get(
        cls,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        keys_only: bool = False,
        limit: int | None = None,
    ) -> Op:
        """Read one key, a prefix or a range; answered by a :class:`RangeResult`.

        Without ``prefix`` or ``range_end`` it reads ``key`` alone.
        """
        key_bytes = to_bytes(key)
        end = optional_bytes(range_end)
        if not prefix and not end:
            # One key: the range [key, key + "\0").
            end = key_bytes + b"\0"
        return cls(
            "get",
            key_bytes,
            range_end=end,
            prefix=prefix,
            keys_only=keys_only,
            limit=limit,
        )

    @classmethod
    def put(cls, key: BytesLike, value: BytesLike, *, lease: int = 0, prev_kv: bool = False) -> Op:
        """Store ``value`` under ``key``; answered by a :class:`PutResult`."""
        return cls("put", to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)

    @classmethod
    def delete(
        cls,
        key: BytesLike,
        *,
        prefix: bool = False,
        range_end: BytesLike | None = None,
        prev_kv: bool = False,
    ) -> Op:
        """Delete one key, a prefix or a range; answered by a :class:`DeleteResult`."""
        return cls(
            "delete",
            to_bytes(key),
            range_end=optional_bytes(range_end),
            prefix=prefix,
            prev_kv=prev_kv,
        )

    def to_pb(self) -> kv_pb2.Op:
        """The wire form."""
        if self.kind == "get":
            return kv_pb2.Op(
                range=kv_pb2.RangeRequest(
                    key=self.key,
                    range_end=self.range_end,
                    prefix=self.prefix,
                    keys_only=self.keys_only,
                    limit=self.limit or 0,
                    # RangeResult.count is the whole range's (as etcd's is);
                    # the server counts past a page only when asked.
                    count_all=True,
                )
            )
        if self.kind == "put":
            return kv_pb2.Op(
                put=kv_pb2.PutRequest(
                    key=self.key, value=self.value, lease=self.lease, prev_kv=self.prev_kv
                )
            )
        return kv_pb2.Op(
            delete=kv_pb2.DeleteRequest(
                key=self.key, range_end=self.range_end, prefix=self.prefix, prev_kv=self.prev_kv
            )
        )


OpResult = RangeResult | PutResult | DeleteResult
"""The answer to one :class:`Op`: get, put and delete, respectively."""


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The answer to :meth:`~keyvalue.Client.txn`.

    Attributes:
        succeeded: Whether every compare held (so the ``success`` branch ran).
        revision: The store's revision after the transaction.
        responses: One answer per operation of the branch that ran, in order.
    """

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...]

    @classmethod
    def from_pb(
        cls, message: kv_pb2.TxnResponse, success: Sequence[Op], failure: Sequence[Op]
    ) -> TxnResult:
        """The result of a wire ``TxnResponse`` to a transaction of these branches.

        Each response is read with the operation it answers (of the branch
        that ran): the server names no lease in a put's response, so a put's
        result carries the lease its operation asked for.

        Raises:
            ValueError: The server answered another number of operations than
                the branch has.
        """
        ops = success if message.succeeded else failure
        if len(message.responses) != len(ops):
            raise ValueError(
                f"the server answered {len(message.responses)} operations, "
                f"the branch that ran has {len(ops)}"
            )
        return cls(
            succeeded=message.succeeded,
            revision=message.header.revision,
            responses=tuple(
                _op_result(op, response)
                for op, response in zip(ops, message.responses, strict=True)
            ),
        )


def _op_result(op: Op, message: kv_pb2.OpResponse) -> OpResult:
    kind = message.WhichOneof("response")
    if kind == "range":
        return RangeResult.from_pb(message.range)
    if kind == "put":
        return PutResult.from_pb(message.put, op.lease)
    if kind == "delete":
        return DeleteResult.from_pb(message.delete)
    raise ValueError(f"the server answered an operation with no response ({kind!r})")


def txn_request(
    compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
) -> kv_pb2.TxnRequest:
    """The wire request of a transaction."""
    return kv_pb2.TxnRequest(
        compare=[compare.to_pb() for compare in compares],
        success=[op.to_pb() for op in success],
        failure=[op.to_pb() for op in failure],
    )
