# frozen_string_literal: true

require "grpc"

# Exceptions raised by the keyvalue client, and the one gRPC status mapping.
#
# Every failed call raises a subclass of KeyValue::Error, which carries the gRPC
# status code and the server's message text. Callers rescue what happened
# (KeyNotFound, ServerUnavailable, ...) rather than inspecting status codes.
# Which code becomes which exception is decided in one place only:
# ERROR_FOR_CODE, used by KeyValue.error_from_status.
module KeyValue
  # Base class of every error raised by the keyvalue client.
  class Error < StandardError
    # The gRPC status code of the failed call (an Integer, see GRPC::Core::StatusCodes).
    attr_reader :code

    def initialize(code, message)
      super(message)
      @code = code
    end
  end

  # The key was never set (NOT_FOUND).
  class KeyNotFound < Error; end

  # The server refused the request: empty or oversized key, oversized value.
  # The message names the limit that was exceeded (INVALID_ARGUMENT).
  class InvalidArgument < Error; end

  # The server could not be reached or did not answer in time
  # (UNAVAILABLE or DEADLINE_EXCEEDED).
  class ServerUnavailable < Error; end

  # Any other failure status (INTERNAL, RESOURCE_EXHAUSTED, ...).
  class RequestFailed < Error; end

  codes = GRPC::Core::StatusCodes
  ERROR_FOR_CODE = {
    codes::NOT_FOUND => KeyNotFound,
    codes::INVALID_ARGUMENT => InvalidArgument,
    codes::UNAVAILABLE => ServerUnavailable,
    codes::DEADLINE_EXCEEDED => ServerUnavailable
  }.freeze
  private_constant :ERROR_FOR_CODE

  # The exception for a gRPC status; codes without their own class get RequestFailed.
  def self.error_for_status(code, message)
    ERROR_FOR_CODE.fetch(code, RequestFailed).new(code, message)
  end

  # Translates the exception the grpc gem raised for a failed call into ours.
  def self.error_from_status(bad_status)
    error_for_status(bad_status.code, bad_status.details.to_s)
  end
end
