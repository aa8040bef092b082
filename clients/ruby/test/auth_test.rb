# frozen_string_literal: true

require "test_helper"
require "test_certs"

# Bearer tokens against kvservers started with --auth-token-file.
class AuthTest < Minitest::Test
  include TestHelpers

  # The tokens (READER, WRITER, SCOPED) and their file are TestHelpers'.
  def server
    shared_server("--auth-token-file", TestHelpers.token_file)
  end

  def client(token, &)
    KeyValue::Client.open(server.address, token:, &)
  end

  def test_without_a_token_every_call_is_unauthenticated
    client(nil) do |anonymous|
      key = unique_key
      assert_raises(KeyValue::Unauthenticated) { anonymous.get(key) }
      assert_raises(KeyValue::Unauthenticated) { anonymous.set(key, "x") }
      assert_raises(KeyValue::Unauthenticated) { anonymous.get_record(key) }
      assert_raises(KeyValue::Unauthenticated) { anonymous.range(key, prefix: true).to_a }
      assert_raises(KeyValue::Unauthenticated) { anonymous.watch(key).first }
    end
  end

  def test_an_unknown_token_is_unauthenticated
    client("not-a-token") do |stranger|
      error = assert_raises(KeyValue::Unauthenticated) { stranger.get(unique_key) }
      assert_equal GRPC::Core::StatusCodes::UNAUTHENTICATED, error.code
      assert_raises(KeyValue::Unauthenticated) { stranger.put(unique_key, "x") }
    end
  end

  def test_a_readwrite_token_works_on_both_services_watches_included
    client(WRITER) do |writer|
      key = unique_key
      writer.set(key, "sunny")
      assert_equal "sunny", writer.get(key)
      revision = writer.put(key, "rain").revision
      assert_equal "rain".b, writer.get_record(key).value
      assert_equal [key.b], writer.range(key, prefix: true).map(&:key)
      writer.batch_put(key => "hail")
      assert_equal 1, writer.count(key, prefix: true)
      events = writer.watch(key, start_revision: revision).first(2)
      assert_equal ["rain".b, "hail".b], events.map(&:record).map(&:value)
      lease = writer.lease_grant(30)
      assert_equal 0, writer.lease_revoke(lease.id)
      assert_equal 1, writer.delete(key)
    end
  end

  def test_a_read_token_can_read_but_not_write
    key = unique_key
    revision = client(WRITER) { |writer| writer.put(key, "sunny").revision }
    client(READER) do |reader|
      assert_equal "sunny", reader.get(key)
      assert_equal "sunny".b, reader.get_record(key).value
      assert_equal 1, reader.count(key, prefix: true)
      assert_equal "sunny".b, reader.watch(key, start_revision: revision).first.record.value
      assert_raises(KeyValue::PermissionDenied) { reader.set(key, "rain") }
      error = assert_raises(KeyValue::PermissionDenied) { reader.put(key, "rain") }
      assert_equal GRPC::Core::StatusCodes::PERMISSION_DENIED, error.code
      assert_raises(KeyValue::PermissionDenied) { reader.delete(key) }
      assert_raises(KeyValue::PermissionDenied) { reader.batch_put(key => "rain") }
      assert_raises(KeyValue::PermissionDenied) { reader.lease_grant(10) }
      assert_raises(KeyValue::PermissionDenied) { reader.txn(compares: [], success: [KeyValue::Op.put(key, "rain")]) }
      assert_equal "sunny", reader.get(key)
    end
  end

  def test_a_prefix_token_is_confined_to_its_prefix
    inside = unique_key(SCOPE)
    outside = unique_key("elsewhere")
    client(WRITER) { |writer| writer.set(outside, "theirs") }
    client(SCOPED) do |scoped|
      scoped.set(inside, "mine")
      assert_equal "mine", scoped.get(inside)
      scoped.put(inside, "still mine")
      assert_equal "still mine".b, scoped.get_record(inside).value
      assert_raises(KeyValue::PermissionDenied) { scoped.get(outside) }
      assert_raises(KeyValue::PermissionDenied) { scoped.set(outside, "x") }
      assert_raises(KeyValue::PermissionDenied) { scoped.get_record(outside) }
      assert_raises(KeyValue::PermissionDenied) { scoped.put(outside, "x") }
    end
    client(WRITER) { |writer| assert_equal "theirs", writer.get(outside) }
  end

  def test_tls_and_a_token_together
    certs = TestCerts.files
    tls_auth = shared_server("--tls-cert", certs[:server_cert], "--tls-key", certs[:server_key],
                             "--auth-token-file", TestHelpers.token_file)
    key = unique_key
    KeyValue::Client.open(tls_auth.address, ca_file: certs[:ca], token: WRITER) do |writer|
      assert_includes writer.inspect, "tls+token"
      writer.set(key, "secret")
      assert_equal "secret".b, writer.get_record(key).value
    end
    KeyValue::Client.open(tls_auth.address, ca_file: certs[:ca]) do |anonymous|
      assert_raises(KeyValue::Unauthenticated) { anonymous.get(key) }
    end
  end

  def test_a_token_that_cannot_be_a_header_is_refused_before_sending
    ["", "two words", "line\nbreak", 42].each do |token|
      assert_raises(ArgumentError, token.inspect) { KeyValue::Client.new(token:) }
    end
    refute_includes KeyValue::Client.new(token: WRITER).inspect, WRITER
  end
end
