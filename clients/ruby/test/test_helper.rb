# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
$LOAD_PATH.unshift(__dir__)

require "securerandom"
require "socket"
require "minitest/autorun"
require "keyvalue"
require "kvserver_process"

# Helpers shared by the test files.
module TestHelpers
  # A key no other test uses, so tests sharing one server never collide.
  def unique_key(prefix = "key")
    "#{prefix}-#{SecureRandom.hex(6)}"
  end

  # An address where nothing listens: a port bound and released again.
  def unused_address
    socket = TCPServer.new("127.0.0.1", 0)
    port = socket.addr[1]
    socket.close
    "127.0.0.1:#{port}"
  end
end
