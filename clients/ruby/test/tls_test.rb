# frozen_string_literal: true

require "open3"
require "test_helper"
require "test_certs"

# TLS and mutual TLS against kvservers started with --tls-cert/--tls-key (and
# --tls-client-ca), with certificates made by TestCerts.
class TLSTest < Minitest::Test
  include TestHelpers

  def certs
    TestCerts.files
  end

  def tls_server
    shared_server("--tls-cert", certs[:server_cert], "--tls-key", certs[:server_key])
  end

  def mtls_server
    shared_server("--tls-cert", certs[:server_cert], "--tls-key", certs[:server_key], "--tls-client-ca", certs[:ca])
  end

  def client_cert
    { cert_file: certs[:client_cert], key_file: certs[:client_key] }
  end

  # Sets and reads back a key over both services.
  def assert_round_trip(client)
    key = unique_key("tls")
    client.set(key, "sunny")
    assert_equal "sunny", client.get(key)
    client.put(key, "rain")
    assert_equal "rain".b, client.get_record(key).value
  end

  def test_get_and_set_over_tls_with_the_ca
    KeyValue::Client.open(tls_server.address, ca_file: certs[:ca]) do |client|
      assert client.tls?
      assert_includes client.inspect, "tls"
      assert_round_trip(client)
    end
  end

  def test_a_watch_runs_over_tls
    KeyValue::Client.open(tls_server.address, ca_file: certs[:ca]) do |client|
      key = unique_key("tls-watch")
      revision = client.put(key, "one").revision
      event = client.watch(key, start_revision: revision).first
      assert_equal [:put, "one".b, revision], [event.kind, event.record.value, event.revision]
    end
  end

  # tls: true trusts the system's roots (here: none of them signed the test
  # CA); gRPC reads them from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH when set, so
  # a process pointed at the test CA proves they are what is used.
  def test_tls_true_verifies_the_server_with_the_systems_root_certificates
    KeyValue::Client.open(tls_server.address, tls: true, timeout: 2) do |client|
      assert client.tls?
      assert_raises(KeyValue::ServerUnavailable) { client.get(unique_key) }
    end
    script = "require 'keyvalue'; KeyValue::Client.open(#{tls_server.address.dump}, tls: true) " \
             "{ |c| c.set('k', 'v'); print c.get('k') }"
    env = { "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH" => certs[:ca] }
    output, status = Open3.capture2e(env, RbConfig.ruby, "-I", File.expand_path("../lib", __dir__), "-e", script)
    assert status.success?, output
    assert_equal "v", output
  end

  def test_tls_false_contradicts_tls_files
    error = assert_raises(ArgumentError) { KeyValue::Client.new("127.0.0.1:1", tls: false, ca_file: certs[:ca]) }
    assert_includes error.message, "ca_file"
    assert_raises(ArgumentError) { KeyValue::Client.new("127.0.0.1:1", tls: "yes") }
    refute KeyValue::Client.new("127.0.0.1:1", tls: false).tls?
  end

  def test_a_plaintext_client_cannot_talk_to_a_tls_server
    KeyValue::Client.open(tls_server.address, timeout: 2) do |client|
      refute client.tls?
      assert_raises(KeyValue::ServerUnavailable) { client.get(unique_key) }
    end
  end

  def test_a_server_certificate_from_another_ca_is_rejected
    KeyValue::Client.open(tls_server.address, timeout: 2, ca_file: certs[:other_ca]) do |client|
      assert_raises(KeyValue::ServerUnavailable) { client.get(unique_key) }
    end
  end

  def test_mutual_tls_with_a_client_certificate_from_the_ca_works
    KeyValue::Client.open(mtls_server.address, ca_file: certs[:ca], **client_cert) do |client|
      assert_round_trip(client)
    end
  end

  def test_mutual_tls_without_a_client_certificate_fails
    KeyValue::Client.open(mtls_server.address, timeout: 2, ca_file: certs[:ca]) do |client|
      assert_raises(KeyValue::ServerUnavailable) { client.get(unique_key) }
      assert_raises(KeyValue::ServerUnavailable) { client.get_record(unique_key) }
    end
  end

  def test_mutual_tls_with_a_client_certificate_from_another_ca_fails
    stranger = { cert_file: certs[:other_client_cert], key_file: certs[:other_client_key] }
    KeyValue::Client.open(mtls_server.address, timeout: 2, ca_file: certs[:ca], **stranger) do |client|
      assert_raises(KeyValue::ServerUnavailable) { client.set(unique_key, "x") }
    end
  end

  def test_a_certificate_needs_its_key_and_a_key_its_certificate
    error = assert_raises(ArgumentError) { KeyValue::Client.new(ca_file: certs[:ca], cert_file: certs[:client_cert]) }
    assert_includes error.message, "key_file"
    error = assert_raises(ArgumentError) { KeyValue::Client.new(key_file: certs[:client_key]) }
    assert_includes error.message, "cert_file"
  end

  def test_an_unreadable_file_is_named_in_the_error
    missing = File.join(Dir.tmpdir, "#{unique_key('missing')}.pem")
    { ca_file: missing, cert_file: missing }.each do |option, path|
      options = { option => path }
      options[:key_file] = certs[:client_key] if option == :cert_file
      error = assert_raises(ArgumentError) { KeyValue::Client.new(**options) }
      assert_equal "cannot read #{option} #{path}: No such file or directory", error.message
    end
  end

  def test_a_file_that_is_not_the_right_pem_is_refused
    error = assert_raises(ArgumentError) { KeyValue::Client.new(ca_file: certs[:client_key]) }
    assert_equal "ca_file #{certs[:client_key]} is not a PEM file (no CERTIFICATE in it)", error.message
    error = assert_raises(ArgumentError) do
      KeyValue::Client.new(ca_file: certs[:ca], cert_file: certs[:client_cert], key_file: certs[:client_cert])
    end
    assert_includes error.message, "key_file #{certs[:client_cert]}"
  end
end
