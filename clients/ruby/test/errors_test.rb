# frozen_string_literal: true

require "test_helper"

# The one place that maps gRPC status codes to exceptions.
class ErrorsTest < Minitest::Test
  CODES = GRPC::Core::StatusCodes

  def test_each_mapped_code_gets_its_class
    {
      CODES::NOT_FOUND => KeyValue::KeyNotFound,
      CODES::INVALID_ARGUMENT => KeyValue::InvalidArgument,
      CODES::OUT_OF_RANGE => KeyValue::Compacted,
      CODES::RESOURCE_EXHAUSTED => KeyValue::ResourceExhausted,
      CODES::UNAUTHENTICATED => KeyValue::Unauthenticated,
      CODES::PERMISSION_DENIED => KeyValue::PermissionDenied,
      CODES::UNAVAILABLE => KeyValue::ServerUnavailable,
      CODES::DEADLINE_EXCEEDED => KeyValue::DeadlineExceeded
    }.each do |code, expected|
      assert_instance_of expected, KeyValue.error_for_status(code, "text")
    end
  end

  def test_both_services_map_the_token_codes
    %i[tutorial v1].each do |api|
      assert_instance_of KeyValue::Unauthenticated, KeyValue.error_for_status(CODES::UNAUTHENTICATED, "no token", api:)
      assert_instance_of KeyValue::PermissionDenied, KeyValue.error_for_status(CODES::PERMISSION_DENIED, "read", api:)
    end
  end

  def test_the_full_api_uses_not_found_for_leases_only
    assert_instance_of KeyValue::LeaseNotFound, KeyValue.error_for_status(CODES::NOT_FOUND, "lease 7", api: :v1)
    assert_instance_of KeyValue::InvalidArgument, KeyValue.error_for_status(CODES::INVALID_ARGUMENT, "x", api: :v1)
    assert_instance_of KeyValue::Compacted, KeyValue.error_for_status(CODES::OUT_OF_RANGE, "x", api: :v1)
    assert_raises(KeyError) { KeyValue.error_for_status(CODES::NOT_FOUND, "x", api: :v2) }
  end

  def test_other_codes_are_request_failed_with_code_and_text
    error = KeyValue.error_for_status(CODES::INTERNAL, "disk full")
    assert_instance_of KeyValue::RequestFailed, error
    assert_equal CODES::INTERNAL, error.code
    assert_equal "disk full", error.message
  end

  def test_resource_exhausted_is_still_a_request_failed
    assert_operator KeyValue::ResourceExhausted, :<, KeyValue::RequestFailed
  end

  def test_a_grpc_bad_status_keeps_its_details
    error = KeyValue.error_from_status(GRPC::NotFound.new("key not found"))
    assert_instance_of KeyValue::KeyNotFound, error
    assert_equal "key not found", error.message
    lease_error = KeyValue.error_from_status(GRPC::NotFound.new("lease 7 not found"), api: :v1)
    assert_instance_of KeyValue::LeaseNotFound, lease_error
    assert_equal "lease 7 not found", lease_error.message
  end

  def test_every_error_is_a_key_value_error
    [KeyValue::KeyNotFound, KeyValue::LeaseNotFound, KeyValue::InvalidArgument, KeyValue::Compacted,
     KeyValue::ResourceExhausted, KeyValue::ServerUnavailable, KeyValue::DeadlineExceeded, KeyValue::Unauthenticated,
     KeyValue::PermissionDenied,
     KeyValue::RequestFailed].each { |klass| assert_operator klass, :<, KeyValue::Error }
    assert_operator KeyValue::Error, :<, StandardError
  end
end
