# frozen_string_literal: true

require "test_helper"

# The one table that maps gRPC status codes to exceptions.
class ErrorsTest < Minitest::Test
  CODES = GRPC::Core::StatusCodes

  def test_each_mapped_code_gets_its_class
    {
      CODES::NOT_FOUND => KeyValue::KeyNotFound,
      CODES::INVALID_ARGUMENT => KeyValue::InvalidArgument,
      CODES::UNAVAILABLE => KeyValue::ServerUnavailable,
      CODES::DEADLINE_EXCEEDED => KeyValue::ServerUnavailable
    }.each do |code, expected|
      assert_instance_of expected, KeyValue.error_for_status(code, "text")
    end
  end

  def test_other_codes_are_request_failed_with_code_and_text
    error = KeyValue.error_for_status(CODES::RESOURCE_EXHAUSTED, "disk full")
    assert_instance_of KeyValue::RequestFailed, error
    assert_equal CODES::RESOURCE_EXHAUSTED, error.code
    assert_equal "disk full", error.message
  end

  def test_a_grpc_bad_status_keeps_its_details
    error = KeyValue.error_from_status(GRPC::NotFound.new("key not found"))
    assert_instance_of KeyValue::KeyNotFound, error
    assert_equal "key not found", error.message
  end

  def test_every_error_is_a_key_value_error
    [KeyValue::KeyNotFound, KeyValue::InvalidArgument, KeyValue::ServerUnavailable,
     KeyValue::RequestFailed].each { |klass| assert_operator klass, :<, KeyValue::Error }
    assert_operator KeyValue::Error, :<, StandardError
  end
end
