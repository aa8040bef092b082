# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"
require "keyvalue/proto/keyvalue/v1/kv_pb"

# KeyValue::WatchCall: one Watch RPC, driven through the grpc gem's core
# call API so that the moment the server registers the watch can be seen.
module KeyValue
  # The grpc gem's stubs read a stream's response headers together with its
  # first message, so a caller cannot tell "the server registered the watch"
  # (kvserver answers with headers then) from "an event came". This class
  # runs the batches itself: send the request, receive the headers
  # (#await_headers), then each message (#each_response), then the status.
  #
  # Every method but #cancel blocks, and is meant for one reading thread;
  # #cancel may be called from any thread, at any time.
  class WatchCall
    OPS = GRPC::Core::CallOps
    METHOD = "/keyvalue.v1.KV/Watch"
    private_constant :OPS, :METHOD

    # Starts the call on +channel+ (a GRPC::Core::Channel): sends +request+
    # (a Keyvalue::V1::WatchRequest) with +metadata+. The call has no
    # deadline. Raises a KeyValue::Error if it cannot even be sent.
    def initialize(channel, request, metadata)
      @call = channel.create_call(nil, nil, METHOD, nil, GRPC::Core::TimeConsts::INFINITE_FUTURE)
      batch(OPS::SEND_INITIAL_METADATA => metadata, OPS::SEND_MESSAGE => Keyvalue::V1::WatchRequest.encode(request),
            OPS::SEND_CLOSE_FROM_CLIENT => nil)
    end

    # Waits for the server's response headers: kvserver sends them once the
    # watch is registered; whether they came. A refusal comes as a
    # "trailers-only" answer instead, whose headers the core hands over as
    # an empty set (its metadata, HTTP/2's date included, goes with the
    # status, which #each_response then raises); a registration's headers
    # are never empty (hyper, under tonic, always sends a date).
    def await_headers
      !batch(OPS::RECV_INITIAL_METADATA => nil).metadata.to_h.empty?
    end

    # Yields each Keyvalue::V1::WatchResponse until the stream ends; then
    # raises the KeyValue::Error of a failed status (returns for OK).
    def each_response
      while (message = batch(OPS::RECV_MESSAGE => nil).message)
        yield Keyvalue::V1::WatchResponse.decode(message)
      end
      finish
    end

    # Cancels the call; its reader then gets a CANCELLED status.
    def cancel
      @call.cancel
    rescue StandardError
      nil # already finished
    end

    private

    # Runs +ops+; a batch the core refuses (the call already failed) raises
    # the call's own status instead.
    def batch(ops)
      @call.run_batch(ops)
    rescue GRPC::Core::CallError
      finish
      raise KeyValue.error_for_status(GRPC::Core::StatusCodes::INTERNAL, "the watch call failed", api: :v1)
    end

    def finish
      status = @call.run_batch(OPS::RECV_STATUS_ON_CLIENT => nil).status
      return if status.nil? || status.code == GRPC::Core::StatusCodes::OK

      raise KeyValue.error_for_status(status.code, status.details.to_s, api: :v1)
    ensure
      @call.close
    end
  end
end
