"""Tests of the one mapping from gRPC status codes to keyvalue exceptions."""

from __future__ import annotations

import grpc
import pytest

from keyvalue import (
    InvalidArgument,
    KeyNotFound,
    KeyValueError,
    RequestFailed,
    ServerUnavailable,
)
from keyvalue.errors import error_for_status, from_rpc_error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, KeyNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAVAILABLE, ServerUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ServerUnavailable),
        (grpc.StatusCode.INTERNAL, RequestFailed),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RequestFailed),
        (grpc.StatusCode.UNKNOWN, RequestFailed),
    ],
)
def test_each_code_maps_to_its_exception(
    code: grpc.StatusCode, expected: type[KeyValueError]
) -> None:
    error = error_for_status(code, "server text")
    assert type(error) is expected
    assert isinstance(error, KeyValueError)
    assert error.code is code
    assert error.message == "server text"


def test_str_is_the_server_text_and_repr_names_the_code() -> None:
    error = error_for_status(grpc.StatusCode.NOT_FOUND, "key not found")
    assert str(error) == "key not found"
    assert repr(error) == "KeyNotFound(code=NOT_FOUND, message='key not found')"


def test_a_bare_rpc_error_without_a_status_maps_to_request_failed() -> None:
    error = from_rpc_error(grpc.RpcError("no status"))
    assert type(error) is RequestFailed
    assert error.code is grpc.StatusCode.UNKNOWN
    assert error.message == "no status"
