# frozen_string_literal: true

require "grpc"
require "json"
require "keyvalue/errors"
require "keyvalue/proto/api_services_pb"
require "keyvalue/proto/keyvalue/v1/kv_services_pb"
require "keyvalue/snapshot"
require "keyvalue/watch_call"
require "keyvalue/wire"

# KeyValue::Connection: the gRPC channel of a Client and the calls made on
# it: deadlines, retries, metadata, and the mapping of failures to
# KeyValue::Error.
module KeyValue
  # One channel to one kvserver, with a stub of each of its two services.
  # Every call sends the credentials' metadata (the token) and has the
  # connection's timeout unless told otherwise; a failed one raises a
  # KeyValue::Error, never a raw GRPC::BadStatus; a safe one is retried as
  # the RetryPolicy says. Safe to share between threads (the grpc gem's
  # channels and stubs are).
  class Connection
    # The grpc gem refuses replies above 4 MiB by default. The server already
    # bounds values (--max-value-bytes, which may be raised above 4 MiB), so
    # accept whatever it sends back.
    CHANNEL_ARGS = { "grpc.max_receive_message_length" => -1 }.freeze
    # gRPC's wait-for-ready, for every method of both services: a call made
    # while the server cannot be reached waits for it (within its timeout)
    # instead of failing at once. The grpc gem has no per-call flag for it;
    # a service config on the channel sets it.
    WAIT_FOR_READY = {
      "grpc.service_config" => JSON.generate(
        methodConfig: [{ name: [{ service: "keyvalue.v1.KV" }, { service: "simplekeyvalue.KeyValue" }],
                         waitForReady: true }]
      )
    }.freeze
    # Channel states that are neither connected nor failed.
    WAITING_STATES = [GRPC::Core::ConnectivityStates::IDLE, GRPC::Core::ConnectivityStates::CONNECTING].freeze
    private_constant :CHANNEL_ARGS, :WAIT_FOR_READY, :WAITING_STATES

    attr_reader :address, :timeout, :retry_policy

    # +timeout+: seconds per call (nil: none); +credentials+: a Credentials;
    # +retry_policy+: a RetryPolicy or nil (no retries); +wait_for_ready+:
    # calls wait for a connection within their timeout.
    def initialize(address, timeout, credentials, retry_policy: nil, wait_for_ready: false)
      @address = address
      @timeout = timeout
      @credentials = credentials
      @retry_policy = retry_policy
      args = wait_for_ready ? CHANNEL_ARGS.merge(WAIT_FOR_READY) : CHANNEL_ARGS
      @channel = GRPC::Core::Channel.new(address, args, credentials.channel_credentials)
      @stubs = {
        tutorial: Simplekeyvalue::KeyValue::Stub.new(address, :this_channel_is_insecure, channel_override: @channel),
        v1: Keyvalue::V1::KV::Stub.new(address, :this_channel_is_insecure, channel_override: @channel)
      }.freeze
      @closed = false
    end

    # A unary call of +api+ (:tutorial or :v1): its response. +read+: the
    # call changes nothing (retried under a RetryPolicy). The caller's
    # options: timeout: seconds for each try (nil: no deadline; default the
    # connection's); idempotent: true marks a write safe to retry.
    def unary(api, method, request, options = {}, read: false)
      check_open
      timeout, idempotent = call_options(**options)
      with_retries(read || idempotent) { once(api, method, request, timeout) }
    end

    # The block's value; if it raises an Error the RetryPolicy retries, and
    # the call is +safe+ to repeat, runs it again after the policy's wait.
    def with_retries(safe)
      delays = safe && @retry_policy ? @retry_policy.delays.to_a : []
      begin
        yield
      rescue Error => e
        raise unless @retry_policy&.retried?(e) && (delay = delays.shift)

        sleep delay
        retry
      end
    end

    # A Watch call of +request+, sent (see WatchCall).
    def watch_call(request)
      check_open
      WatchCall.new(@channel, request, metadata)
    end

    # The Snapshot stream, started (its first chunk read) once the channel
    # is ready; a read, so the RetryPolicy retries its start.
    def snapshot
      with_retries(true) do
        await_connection
        Snapshot.start(@stubs.fetch(:v1), metadata:)
      end
    end

    def close
      @closed = true
      @channel.close
    end

    def check_open
      raise IOError, "the client is closed" if @closed
    end

    # Whether the channel has a connection now.
    def connected?
      state == GRPC::Core::ConnectivityStates::READY
    end

    # The channel's connectivity state (GRPC::Core::ConnectivityStates).
    def state
      @channel.connectivity_state(false)
    end

    # Waits until the channel's state is no longer +state+, for at most
    # +seconds+; whether it changed.
    def await_state_change(state, seconds)
      return false if @closed

      @channel.watch_connectivity_state(state, Time.now + seconds)
    end

    private

    # The options a caller may give a call; ArgumentError for any other.
    def call_options(timeout: @timeout, idempotent: false)
      [Wire.duration("timeout", timeout, Wire::MAX_TIMEOUT, nil_ok: true), idempotent == true]
    end

    # One try of a unary call. A deadline that passed while the channel had
    # no connection is ServerUnavailable (the request never went out), not
    # DeadlineExceeded (it may have been applied).
    def once(api, method, request, timeout)
      @stubs.fetch(api).public_send(method, request, deadline: timeout && (Time.now + timeout), metadata:)
    rescue GRPC::BadStatus => e
      error = KeyValue.error_from_status(e, api:)
      raise error unless error.is_a?(DeadlineExceeded) && !connected?

      raise ServerUnavailable.new(e.code, "no connection to #{@address} within #{timeout}s")
    end

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
          raise ServerUnavailable.new(GRPC::Core::StatusCodes::DEADLINE_EXCEEDED,
                                      "no connection to #{@address} within #{@timeout}s")
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
