# frozen_string_literal: true

require "grpc"

# Exceptions raised by the keyvalue client, and the one gRPC status mapping.
#
# Every failed call raises a subclass of KeyValue::Error, which carries the gRPC
# status code and the server's message text. Callers rescue what happened
# (KeyNotFound, LeaseNotFound, Compacted, ...) rather than inspecting status
# codes. Which code becomes which exception is decided in one place only: the
# tables below, used by KeyValue.error_from_status.
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

  # The key was never set (NOT_FOUND from the tutorial's Get). The full API
  # never raises it: a missing key is an empty answer there.
  class KeyNotFound < Error; end

  # The lease is unknown: it expired, was revoked, or never existed (NOT_FOUND
  # from the full API, which uses that code for leases only).
  class LeaseNotFound < Error; end

  # The server refused the request: empty or oversized key, oversized value,
  # too many keys in a batch, a page above --max-range-page, a bad range...
  # The message names the limit that was exceeded (INVALID_ARGUMENT).
  class InvalidArgument < Error; end

  # A read, watch or compact asked for a revision older than the history the
  # server keeps (OUT_OF_RANGE): a read at revision: below the compacted
  # revision, a watch from such a start_revision, a range whose revision was
  # compacted between its pages, a compact at or below the compacted
  # revision. Read at compacted_revision or later, or read the current state
  # again and watch from there.
  class Compacted < Error
    # The compacted revision, the oldest still readable, when the server's
    # message names it (nil otherwise: an etcd backend does not say).
    attr_reader :compacted_revision
    # The revision asked for, when the message names it.
    attr_reader :requested_revision

    def initialize(code, message)
      super
      @compacted_revision = KeyValue.revision_after("the compacted revision is", message)
      @requested_revision = KeyValue.revision_after("required revision", message)
    end
  end

  # A read or compact named a revision the store has not reached yet
  # (OUT_OF_RANGE, with "future revision" in the message). Not a Compacted:
  # the revision may exist later, a compacted one never again.
  class FutureRevision < Error
    # The store's revision when it answered, when the message names it.
    attr_reader :current_revision
    # The revision asked for, when the message names it.
    attr_reader :requested_revision

    def initialize(code, message)
      super
      @current_revision = KeyValue.revision_after("the store is at revision", message)
      @requested_revision = KeyValue.revision_after("required revision", message)
    end
  end

  # The server could not be reached (UNAVAILABLE), or did not answer in time
  # (DEADLINE_EXCEEDED: the subclass DeadlineExceeded). A call that could
  # not connect was not sent, so a write raising ServerUnavailable itself
  # did not happen.
  class ServerUnavailable < Error; end

  # No answer within the call's timeout (DEADLINE_EXCEEDED). A write that
  # timed out MAY HAVE HAPPENED: the server may have applied it and the
  # answer came too late. Read the key (or compare revisions) before writing
  # again, or make the write safe to repeat (compare_and_set, or a write
  # marked idempotent: true). A ServerUnavailable, as it was raised before
  # it had a class of its own. (A call that waited for a connection that
  # never came, with wait_for_ready, raises ServerUnavailable instead.)
  class DeadlineExceeded < ServerUnavailable; end

  # The server wants a token and got none, or one it does not know
  # (UNAUTHENTICATED, from a server started with --auth-token-file).
  class Unauthenticated < Error; end

  # The token is known but may not do this: a read-only token on a write, or a
  # key outside the token's prefix (PERMISSION_DENIED).
  class PermissionDenied < Error; end

  # Any other failure status (INTERNAL, FAILED_PRECONDITION, ...).
  class RequestFailed < Error; end

  # The server is at one of its limits, such as --max-watchers
  # (RESOURCE_EXHAUSTED). A RequestFailed, as it was before it had a class
  # of its own.
  class ResourceExhausted < RequestFailed; end

  codes = GRPC::Core::StatusCodes
  # The tutorial's simplekeyvalue.KeyValue.
  ERROR_FOR_CODE = {
    codes::NOT_FOUND => KeyNotFound,
    codes::INVALID_ARGUMENT => InvalidArgument,
    codes::OUT_OF_RANGE => Compacted,
    codes::RESOURCE_EXHAUSTED => ResourceExhausted,
    codes::UNAUTHENTICATED => Unauthenticated,
    codes::PERMISSION_DENIED => PermissionDenied,
    codes::UNAVAILABLE => ServerUnavailable,
    codes::DEADLINE_EXCEEDED => DeadlineExceeded
  }.freeze
  # The full keyvalue.v1.KV: a missing key is not an error there, so NOT_FOUND
  # only ever means an unknown lease.
  V1_ERROR_FOR_CODE = ERROR_FOR_CODE.merge(codes::NOT_FOUND => LeaseNotFound).freeze
  ERROR_TABLES = { tutorial: ERROR_FOR_CODE, v1: V1_ERROR_FOR_CODE }.freeze
  private_constant :ERROR_FOR_CODE, :V1_ERROR_FOR_CODE, :ERROR_TABLES

  # The exception for a gRPC status from +api+ (:tutorial or :v1); codes
  # without their own class get RequestFailed.
  def self.error_for_status(code, message, api: :tutorial)
    # One code, two meanings: the server's (and etcd's) message says which.
    return FutureRevision.new(code, message) if code == GRPC::Core::StatusCodes::OUT_OF_RANGE &&
                                                message.include?("future revision")

    ERROR_TABLES.fetch(api).fetch(code, RequestFailed).new(code, message)
  end

  # Raises the Compacted a resuming watch raises when the server is at
  # revision +current+, behind revision +seen+ it has handed over: the
  # server lost its history (a memory backend restarted), and resuming
  # would skip its writes until it got back to +seen+.
  def self.check_history(current, seen)
    return if current >= seen

    raise Compacted.new(GRPC::Core::StatusCodes::OUT_OF_RANGE,
                        "the server is at revision #{current}, behind revision #{seen} this watch has seen: " \
                        "it lost its history (restarted without its data?); read the keys again and watch from there")
  end

  # The number after +words+ in a server's +message+, or nil.
  def self.revision_after(words, message)
    message[/#{Regexp.escape(words)} (\d+)/, 1]&.to_i
  end

  # Translates the exception the grpc gem raised for a failed call into ours.
  def self.error_from_status(bad_status, api: :tutorial)
    error_for_status(bad_status.code, bad_status.details.to_s, api:)
  end
end
