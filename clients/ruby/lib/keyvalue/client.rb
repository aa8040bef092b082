# frozen_string_literal: true

require "grpc"
require "keyvalue/address"
require "keyvalue/connection"
require "keyvalue/credentials"
require "keyvalue/errors"
require "keyvalue/kv_api"
require "keyvalue/recipes"
require "keyvalue/retry_policy"
require "keyvalue/watch"
require "keyvalue/watch_registry"
require "keyvalue/watch_session"
require "keyvalue/wire"

module KeyValue
  # A connection to one kvserver: a typed, blocking wrapper around its two
  # gRPC services, over one channel:
  #
  # - get and set: the tutorial's simplekeyvalue.KeyValue (string values,
  #   KeyNotFound for a missing key);
  # - everything else: the full keyvalue.v1.KV, over the same data. Keys and
  #   values are binary Strings there (any String is sent as its bytes; what
  #   comes back is ASCII-8BIT), and a missing key is nil, not an error.
  #
  # Each call has a deadline (+timeout+ seconds, or its own timeout:) and
  # raises a KeyValue::Error subclass on failure, never a raw
  # GRPC::BadStatus: DeadlineExceeded when the answer did not come in time
  # (a write may have happened), ServerUnavailable when there was no
  # connection (it did not). With a RetryPolicy, safe calls are retried. A
  # watch must be registered by the server within the timeout, a snapshot
  # must find the connection ready within it; the streams themselves have
  # no deadline, and a watch resumes by itself after a disconnect. The
  # channel connects on the first call and reconnects by itself if the
  # server restarts.
  #
  # Threads: a client may be shared by any number of threads; its channel
  # and stubs are thread-safe and it keeps no per-call state, so calls from
  # several threads run concurrently over one connection. A Watch is read
  # by one thread at a time and may be closed from any other.
  #
  # Security (see KeyValue::Credentials): tls: true makes the channel TLS
  # with the system's root certificates; ca_file makes it TLS trusting those
  # PEM certificates (cert_file alone: TLS with the system's roots);
  # cert_file and key_file present a client certificate (mutual TLS);
  # token sends "authorization: Bearer TOKEN" on every call of both services,
  # watches included. A server that refuses the token raises Unauthenticated
  # or PermissionDenied; a failed TLS handshake is ServerUnavailable.
  #
  #   KeyValue::Client.open("127.0.0.1:50051") do |client|
  #     client.set("weather", "sunny")
  #     client.get("weather") # => "sunny"
  #     client.get_record("weather").mod_revision # => 42
  #   end
  #
  #   KeyValue::Client.open("kv.example:50051", ca_file: "ca.pem", cert_file: "me.pem",
  #                                             key_file: "me.key", token: ENV["KV_TOKEN"])
  class Client
    # get_record, put, delete, range, count, compare_and_set, txn, batch_get,
    # batch_put, watch, lease_grant, lease_keep_alive, lease_revoke, lease_info,
    # lease_list,
    # snapshot.
    include KVAPI
    # lease (kept alive while a block runs), lock, update.
    include Recipes

    # Where kvserver listens unless told otherwise.
    DEFAULT_ADDRESS = "127.0.0.1:50051"
    # Seconds each call may take, connecting included, before it fails.
    DEFAULT_TIMEOUT = 5.0
    # The longest timeout: a year (the grpc gem cannot take deadlines much
    # further off; nil is no deadline at all).
    MAX_TIMEOUT = Wire::MAX_TIMEOUT

    attr_reader :address, :timeout

    # Opens a client (with the options of #new), yields it and closes it
    # afterwards; without a block, returns the open client.
    def self.open(address = DEFAULT_ADDRESS, **options)
      client = new(address, **options)
      return client unless block_given?

      begin
        yield client
      ensure
        client.close
      end
    end

    # - address: "host:port", "[IPv6]:port" or "kv://host:port";
    # - timeout: seconds per call, above zero and at most MAX_TIMEOUT (nil:
    #   no deadline); each call may pass its own (timeout:);
    # - token: a bearer token, sent on every call;
    # - tls: true for TLS trusting the system's root certificates; false for
    #   plaintext; nil (the default): TLS if ca_file or cert_file is given;
    # - ca_file: PEM CA certificate(s) to verify the server with (TLS);
    # - cert_file, key_file: PEM client certificate and key (mutual TLS);
    # - retry_policy: a RetryPolicy to retry safe calls with (reads, and
    #   writes passed idempotent: true) after UNAVAILABLE or
    #   DEADLINE_EXCEEDED; nil (the default): no retries;
    # - wait_for_ready: a call made while the server cannot be reached waits
    #   for it, within its timeout, instead of failing at once.
    #
    # Raises ArgumentError for a bad option or address, naming any file that
    # cannot be read. Nothing is sent until the first call.
    def initialize(address = DEFAULT_ADDRESS, timeout: DEFAULT_TIMEOUT, token: nil, tls: nil, ca_file: nil,
                   cert_file: nil, key_file: nil, retry_policy: nil, wait_for_ready: false)
      @address = Address.parse(address)
      @timeout = Wire.duration("timeout", timeout, MAX_TIMEOUT, nil_ok: true)
      unless retry_policy.nil? || retry_policy.is_a?(RetryPolicy)
        raise ArgumentError, "retry_policy must be a KeyValue::RetryPolicy or nil, got #{retry_policy.inspect}"
      end

      @credentials = Credentials.new(token:, tls:, ca_file:, cert_file:, key_file:)
      @connection = Connection.new(@address, @timeout, @credentials, retry_policy:,
                                                                     wait_for_ready: wait_for_ready == true)
      @watches = WatchRegistry.new(@connection)
      @closed = false
    end

    # Whether the channel is TLS.
    def tls?
      @credentials.tls?
    end

    # Stores +value+ under +key+, replacing any previous value. Both are text:
    # Strings in any encoding that convert to UTF-8 (a binary String must hold
    # valid UTF-8); anything else raises ArgumentError before it is sent.
    #
    # Options (as for every call): timeout: seconds (nil: none), for this
    # call instead of the client's; idempotent: true lets the retry policy
    # repeat it.
    #
    # Raises InvalidArgument (key empty or too long, value too long),
    # DeadlineExceeded (it may have happened), ServerUnavailable, or another
    # KeyValue::Error.
    def set(key, value, **options)
      request = Simplekeyvalue::SetRequest.new(key: Wire.text("key", key), value: Wire.text("value", value))
      call(:set, request, options)
      nil
    end

    # The value last stored under +key+ (a UTF-8 String). +key+ is text, as
    # for #set.
    #
    # Raises KeyNotFound (never set), InvalidArgument (key empty or too long),
    # ServerUnavailable, or another KeyValue::Error.
    def get(key, **options)
      call(:get, Simplekeyvalue::GetRequest.new(key: Wire.text("key", key)), options, read: true).value
    end

    # Closes the channel. Calling it again does nothing.
    def close
      return if @closed

      @closed = true
      @watches.close_all
      @connection.close
    end

    def closed?
      @closed
    end

    def inspect
      security = [tls? ? "tls" : "plaintext", @credentials.token? ? "token" : nil].compact.join("+")
      "#<#{self.class.name} #{@address} timeout=#{@timeout} #{security} #{@closed ? 'closed' : 'open'}>"
    end

    private

    # A call of the tutorial's service (options: see Connection#unary).
    def call(method, request, options = {}, read: false)
      @connection.unary(:tutorial, method, request, options, read:)
    end

    # A unary call of keyvalue.v1.KV; +read+: it changes nothing.
    def call_v1(method, request, options = {}, read: false)
      @connection.unary(:v1, method, request, options, read:)
    end

    # A Watch of the key range +fields+, once the server registered it.
    # The session's calls go on the client's channel; a refusal at
    # --max-watchers first collects this client's abandoned watches.
    def start_watch(fields, start_revision, resume)
      @connection.check_open
      open = lambda do |revision|
        @connection.watch_call(Keyvalue::V1::WatchRequest.new(**fields, start_revision: revision))
      end
      now = -> { current_revision(fields[:key]) }
      @watches.start { WatchSession.new(open:, start_revision:, resume:, now:) }
    end

    # The store's revision, read through a cheap count of one key.
    def current_revision(key)
      request = Keyvalue::V1::RangeRequest.new(key: Wire.bytes(key), range_end: Wire.single_key_end(key),
                                               count_only: true)
      Wire.revision(call_v1(:range, request, read: true))
    end

    def start_snapshot
      @connection.snapshot
    end
  end
end
