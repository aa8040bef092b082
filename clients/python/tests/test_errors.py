"""Tests of the one mapping from gRPC status codes to keyvalue exceptions."""

from __future__ import annotations

import grpc
import pytest

from keyvalue import (
    Compacted,
    DeadlineExceeded,
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
from keyvalue.errors import error_for_status, from_rpc_error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, KeyNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAVAILABLE, ServerUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, RequestFailed),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.OUT_OF_RANGE, Compacted),
        (grpc.StatusCode.UNKNOWN, RequestFailed),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
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


def test_not_found_from_the_full_api_is_a_missing_lease() -> None:
    # keyvalue.v1 answers a missing key with an empty result; NOT_FOUND is a lease.
    error = error_for_status(grpc.StatusCode.NOT_FOUND, "lease 7 not found", service="v1")
    assert type(error) is LeaseNotFound
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.message == "lease 7 not found"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_both_services_agree_on_every_other_code(code: grpc.StatusCode) -> None:
    tutorial = error_for_status(code, "text")
    v1 = error_for_status(code, "text", service="v1")
    assert type(tutorial) is type(v1)


def test_resource_exhausted_is_still_a_request_failed() -> None:
    error = error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "disk full")
    assert isinstance(error, RequestFailed)
    assert isinstance(error, KeyValueError)
