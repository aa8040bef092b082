# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"
require "keyvalue/proto/api_services_pb"
require "keyvalue/proto/keyvalue/v1/kv_services_pb"
require "keyvalue/snapshot"
require "keyvalue/watch_call"

# KeyValue::Connection: the gRPC channel of a Client and the calls made on
# it: deadlines, metadata, and the mapping of failures to KeyValue::Error.
module KeyValue
  # One channel to one kvserver, with a stub of each of its two services.
  # Every call sends the credentials' metadata (the token) and has the
  # connection's deadline unless told otherwise; a failed one raises a
  # KeyValue::Error, never a raw GRPC::BadStatus. Safe to share between
  # threads (the grpc gem's channels and stubs are).
  class Connection
    # The grpc gem refuses replies above 4 MiB by default. The server already
    # bounds values (--max-value-bytes, which may be raised above 4 MiB), so
    # accept whatever it sends back.
    CHANNEL_ARGS = { "grpc.max_receive_message_length" => -1 }.freeze
    # Channel states that are neither connected nor failed.
    WAITING_STATES = [GRPC::Core::ConnectivityStates::IDLE, GRPC::Core::ConnectivityStates::CONNECTING].freeze
    private_constant :CHANNEL_ARGS, :WAITING_STATES

    attr_reader :address, :timeout

    # +timeout+: seconds per call (nil: none); +credentials+: a Credentials.
    def initialize(address, timeout, credentials)
      @address = address
      @timeout = timeout
      @credentials = credentials
      @channel = GRPC::Core::Channel.new(address, CHANNEL_ARGS, credentials.channel_credentials)
      @stubs = {
        tutorial: Simplekeyvalue::KeyValue::Stub.new(address, :this_channel_is_insecure, channel_override: @channel),
        v1: Keyvalue::V1::KV::Stub.new(address, :this_channel_is_insecure, channel_override: @channel)
      }.freeze
      @closed = false
    end

    # A unary call of +api+ (:tutorial or :v1): its response.
    def unary(api, method, request)
      check_open
      @stubs.fetch(api).public_send(method, request, deadline:, metadata:)
    rescue GRPC::BadStatus => e
      raise KeyValue.error_from_status(e, api:)
    end

    # A Watch call of +request+, sent (see WatchCall).
    def watch_call(request)
      check_open
      WatchCall.new(@channel, request, metadata)
    end

    # The Snapshot stream, started once the channel is ready.
    def snapshot
      await_connection
      Snapshot.start(@stubs.fetch(:v1), metadata:)
    end

    def close
      @closed = true
      @channel.close
    end

    def check_open
      raise IOError, "the client is closed" if @closed
    end

    private

    # Before a stream, which has no deadline: waits until the channel has
    # connected (or failed, which the stream then reports), for at most the
    # timeout. A server that accepts the connection and never answers
    # raises ServerUnavailable (DEADLINE_EXCEEDED), as a unary call would.
    def await_connection
      check_open
      return unless @timeout

      until_time = deadline
      state = @channel.connectivity_state(true)
      while WAITING_STATES.include?(state)
        unless @channel.watch_connectivity_state(state, until_time)
          raise KeyValue.error_for_status(GRPC::Core::StatusCodes::DEADLINE_EXCEEDED,
                                          "no connection to #{@address} within #{@timeout}s", api: :v1)
        end
        state = @channel.connectivity_state(true)
      end
    end

    def deadline
      @timeout && (Time.now + @timeout)
    end

    # What each call sends: the token, if any (a copy, for the grpc gem to
    # keep or change).
    def metadata
      @credentials.metadata.dup
    end
  end
end
