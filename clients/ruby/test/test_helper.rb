# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
$LOAD_PATH.unshift(__dir__)

# gRPC's C core logs every failed TLS handshake on stderr; the tests fail
# handshakes on purpose. GRPC_VERBOSITY=ERROR (or DEBUG) shows them again.
ENV["GRPC_VERBOSITY"] ||= "NONE"

require "fileutils"
require "securerandom"
require "socket"
require "tmpdir"
require "minitest/autorun"
require "keyvalue"
require "kvserver_process"

# Helpers shared by the test files.
module TestHelpers
  # The tokens of TestHelpers.token_file: one that may only read, one that may
  # read and write, and one that may read and write only keys under SCOPE.
  READER = "reader-#{SecureRandom.hex(8)}".freeze
  WRITER = "writer-#{SecureRandom.hex(8)}".freeze
  SCOPED = "scoped-#{SecureRandom.hex(8)}".freeze
  SCOPE = "app/"

  # A --auth-token-file with READER, WRITER and SCOPED, written once per run.
  def self.token_file
    @token_file ||= begin
      dir = Dir.mktmpdir("kv-tokens")
      Minitest.after_run { FileUtils.rm_rf(dir) }
      path = File.join(dir, "tokens")
      File.write(path, "#{READER} read\n#{WRITER} readwrite\n#{SCOPED} readwrite #{SCOPE}\n")
      path
    end
  end

  # A key no other test uses, so tests sharing one server never collide.
  def unique_key(prefix = "key")
    "#{prefix}-#{SecureRandom.hex(6)}"
  end

  # Starts a kvserver of its own with +flags+, yields a client of it, and
  # stops it afterwards (checking that it exits 0).
  def with_server(*flags)
    server = KvServerProcess.new(flags)
    server.start
    begin
      KeyValue::Client.open(server.address) { |client| yield client, server }
    ensure
      assert_equal 0, server.stop
    end
  end

  # A kvserver started with +flags+ the first time a test asks for it, shared
  # by every test asking for the same flags, and stopped when the run ends.
  def shared_server(*flags)
    TestHelpers.servers[flags] ||= KvServerProcess.new(flags).tap do |server|
      server.start
      Minitest.after_run { server.stop }
    end
  end

  def self.servers
    @servers ||= {}
  end

  # A client of the shared kvserver, closed after the block.
  def with_client(&)
    KeyValue::Client.open(KvServerProcess.shared.address, &)
  end

  # The value of +thread+, failing the test if it takes longer than +seconds+.
  def value_within(thread, seconds = 10)
    flunk "the thread did not finish within #{seconds}s" unless thread.join(seconds)
    thread.value
  end

  # Asserts that the block raises ArgumentError with a message that names
  # +name+ and says what it must be.
  def assert_argument_error(name, &)
    error = assert_raises(ArgumentError, &)
    assert error.message.start_with?("#{name} must be "), error.message
    error
  end

  # Yields the address of a TCP server that accepts connections and never
  # sends a byte (not even HTTP/2's settings).
  def with_silent_server
    server = TCPServer.new("127.0.0.1", 0)
    accepted = []
    acceptor = Thread.new { loop { accepted << server.accept } }
    yield "127.0.0.1:#{server.addr[1]}"
  ensure
    acceptor&.kill
    accepted&.each(&:close)
    server&.close
  end

  # An address where nothing listens: a port bound and released again.
  def unused_address
    socket = TCPServer.new("127.0.0.1", 0)
    port = socket.addr[1]
    socket.close
    "127.0.0.1:#{port}"
  end
end
