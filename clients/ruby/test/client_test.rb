# frozen_string_literal: true

require "test_helper"

# KeyValue::Client against a real kvserver.
class ClientTest < Minitest::Test
  include TestHelpers

  def setup
    @server = KvServerProcess.shared
  end

  def test_set_then_get_returns_the_value
    key = unique_key
    with_client do |client|
      assert_nil client.set(key, "sunny")
      assert_equal "sunny", client.get(key)
    end
  end

  def test_set_overwrites
    key = unique_key
    with_client do |client|
      client.set(key, "one")
      client.set(key, "two")
      assert_equal "two", client.get(key)
    end
  end

  def test_values_keep_every_character
    key = unique_key
    value = "a=b=c\nline two \u00e9\u6f22 \u{1F600}"
    with_client do |client|
      client.set(key, value)
      assert_equal value, client.get(key)
      client.set(key, "")
      assert_equal "", client.get(key)
    end
  end

  def test_text_in_a_binary_string_or_another_encoding_is_sent_as_utf8
    key = unique_key("\u00e9t\u00e9")
    with_client do |client|
      client.set(key.b, "\u00e9\u6f22".b)
      value = client.get(key)
      assert_equal "\u00e9\u6f22", value
      assert_equal Encoding::UTF_8, value.encoding
      client.set(key.encode("UTF-16LE"), "caf\u00e9".encode("ISO-8859-1"))
      assert_equal "caf\u00e9", client.get(key.b)
    end
  end

  def test_strings_that_are_not_utf8_raise_argument_error_before_anything_is_sent
    key = unique_key
    # Nothing listens there: a request that went out would be ServerUnavailable.
    KeyValue::Client.open(unused_address, timeout: 2) do |client|
      assert_argument_error("value") { client.set(key, "\xff") }
      assert_argument_error("value") { client.set(key, "\xC3".dup.force_encoding("US-ASCII")) }
      assert_argument_error("key") { client.set("k\xff".b, "v") }
      error = assert_argument_error("key") { client.get("\xC3(".b) }
      assert_includes error.message, "must be valid UTF-8 text"
    end
    with_client { |client| assert_raises(KeyValue::KeyNotFound) { client.get(key) } }
  end

  def test_writes_are_seen_by_other_connections
    key = unique_key
    with_client { |writer| writer.set(key, "shared") }
    with_client { |reader| assert_equal "shared", reader.get(key) }
  end

  def test_missing_key_raises_key_not_found_with_the_servers_text
    with_client do |client|
      error = assert_raises(KeyValue::KeyNotFound) { client.get(unique_key("never-set")) }
      assert_equal "key not found", error.message
      assert_equal GRPC::Core::StatusCodes::NOT_FOUND, error.code
      assert_kind_of KeyValue::Error, error
      assert_kind_of StandardError, error
    end
  end

  def test_empty_key_raises_invalid_argument
    with_client do |client|
      assert_equal "key is empty", assert_raises(KeyValue::InvalidArgument) { client.get("") }.message
      assert_equal "key is empty", assert_raises(KeyValue::InvalidArgument) { client.set("", "v") }.message
    end
  end

  def test_oversized_key_and_value_name_the_limit
    with_server("--max-key-bytes", "8", "--max-value-bytes", "16") do |client|
      key_error = assert_raises(KeyValue::InvalidArgument) { client.set("k" * 9, "v") }
      assert_includes key_error.message, "--max-key-bytes"
      value_error = assert_raises(KeyValue::InvalidArgument) { client.set("k", "v" * 17) }
      assert_includes value_error.message, "--max-value-bytes"
      client.set("k" * 8, "v" * 16)
      assert_equal "v" * 16, client.get("k" * 8)
    end
  end

  def test_unreachable_server_raises_server_unavailable
    KeyValue::Client.open(unused_address, timeout: 2) do |client|
      error = assert_raises(KeyValue::ServerUnavailable) { client.get("weather") }
      assert_equal GRPC::Core::StatusCodes::UNAVAILABLE, error.code
    end
  end

  def test_open_without_a_block_returns_an_open_client
    client = KeyValue::Client.open(@server.address)
    refute_predicate client, :closed?
    client.close
    client.close
    assert_predicate client, :closed?
    assert_raises(IOError) { client.get("weather") }
  end

  def test_open_with_a_block_closes_the_client_even_on_error
    leaked = nil
    assert_raises(KeyValue::KeyNotFound) do
      KeyValue::Client.open(@server.address) do |client|
        leaked = client
        client.get(unique_key("never-set"))
      end
    end
    assert_predicate leaked, :closed?
  end

  def test_bad_arguments_are_refused_before_connecting
    assert_raises(ArgumentError) { KeyValue::Client.new("  ") }
    ["5", 0, -1, Float::INFINITY, Float::NAN, KeyValue::Client::MAX_TIMEOUT + 1].each do |timeout|
      error = assert_argument_error("timeout") { KeyValue::Client.new("127.0.0.1:1", timeout:) }
      assert_includes error.message, "nil or a number of seconds above zero, at most #{KeyValue::Client::MAX_TIMEOUT}"
    end
  end

  def test_the_longest_timeout_and_no_timeout_work
    [KeyValue::Client::MAX_TIMEOUT, nil].each do |timeout|
      KeyValue::Client.open(@server.address, timeout:) do |client|
        client.set("weather", "long")
        assert_equal "long", client.get("weather")
      end
    end
  end

  def test_addresses_are_host_port_or_kv_urls_checked_at_construction
    with_client do |client|
      key = unique_key
      client.put(key, "v")
      url = "kv://#{KvServerProcess.shared.address}"
      KeyValue::Client.open(url) { |by_url| assert_equal "v".b, by_url.get_record(key).value }
      assert_equal KvServerProcess.shared.address, KeyValue::Client.new("#{url}/").address
    end
    ["", "127.0.0.1:", "localhost", "http://localhost:1", "a:0", "a:65536", "kv://"].each do |address|
      error = assert_raises(ArgumentError) { KeyValue::Client.new(address) }
      assert_match(/address/, error.message)
    end
    assert_equal "[::1]:5", KeyValue::Client.new("[::1]:5").address
  end

  # Parts of the client: a Client may be shared by threads.
  def test_one_client_serves_many_threads
    prefix = "#{unique_key}/"
    with_client do |client|
      threads = Array.new(8) do |t|
        Thread.new { 20.times { |i| client.put("#{prefix}#{t}-#{i}", i.to_s) } }
      end
      threads.each { |thread| value_within(thread) }
      assert_equal 160, client.count(prefix, prefix: true)
    end
  end
end
