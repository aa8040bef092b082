# frozen_string_literal: true

require "test_helper"

# Per-call timeouts, DeadlineExceeded against ServerUnavailable, retries of
# safe calls (across a real restart), and wait-for-ready.
class TimeoutTest < Minitest::Test
  include TestHelpers

  # Retries quickly enough for a test: up to about 5 seconds in all.
  QUICK = KeyValue::RetryPolicy.new(attempts: 30, initial_backoff: 0.05, max_backoff: 0.2)

  # A count of 10,000 keys takes the server longer than a millisecond; a
  # local call that short would finish before gRPC's timer fires.
  def test_a_call_that_runs_out_of_time_on_a_connection_raises_deadline_exceeded
    with_server("--max-batch-keys", "10000") do |client|
      client.batch_put(Array.new(10_000) { |i| ["k#{i}", ""] }.to_h)
      errors = Array.new(5) do
        client.count(timeout: 0.001)
        nil
      rescue KeyValue::Error => e
        e
      end
      error = errors.compact.first
      assert_instance_of KeyValue::DeadlineExceeded, error, errors.inspect
      assert_equal GRPC::Core::StatusCodes::DEADLINE_EXCEEDED, error.code
      assert_kind_of KeyValue::ServerUnavailable, error
      assert_equal 10_000, client.count(timeout: 30)
      assert_nil client.get_record(unique_key, timeout: nil)
      assert_argument_error("timeout") { client.get_record("k", timeout: 0) }
      assert_raises(ArgumentError) { client.get_record("k", read: true) }
    end
  end

  def test_a_call_that_never_connected_raises_server_unavailable_not_deadline_exceeded
    with_silent_server do |address|
      KeyValue::Client.open(address, timeout: 5) do |client|
        started = Time.now
        error = assert_raises(KeyValue::ServerUnavailable) { client.put("k", "v", timeout: 0.3) }
        refute_instance_of KeyValue::DeadlineExceeded, error
        assert_includes error.message, "no connection to #{address}"
        assert_operator Time.now - started, :>=, 0.25
        assert_operator Time.now - started, :<, 3, "the call's own timeout, not the client's 5 s"
      end
    end
  end

  def test_wait_for_ready_waits_for_a_server_that_comes_up_within_the_timeout
    address = unused_address
    KeyValue::Client.open(address, timeout: 0.3) do |client|
      assert_raises(KeyValue::ServerUnavailable) { client.get_record("k") }
    end
    KeyValue::Client.open(address, timeout: 10, wait_for_ready: true) do |client|
      started = Time.now
      error = assert_raises(KeyValue::ServerUnavailable) { client.get_record("k", timeout: 0.4) }
      assert_operator Time.now - started, :>=, 0.35, "a wait-for-ready call waits its timeout out"
      assert_includes error.message, "no connection"
      waiting = Thread.new { client.put("k", "v").revision }
      sleep 0.3
      server = KvServerProcess.new(listen: address)
      server.start
      begin
        assert_operator value_within(waiting), :>, 0
      ensure
        assert_equal 0, server.stop
      end
    end
  end

  def test_safe_calls_are_retried_across_a_server_restart_and_unsafe_writes_are_not
    Dir.mktmpdir("kv-retry") do |dir|
      server = KvServerProcess.new(data_dir: dir)
      server.start
      address = server.address
      KeyValue::Client.open(address, retry_policy: QUICK, timeout: 2) do |client|
        revision = client.put("kept", "before").revision
        server.stop
        # Down: a plain write fails at once, and did not happen.
        assert_raises(KeyValue::ServerUnavailable) { client.put("kept", "lost") }
        reader = Thread.new { client.get_record("kept") }
        # A restarted server's history starts after its last revision.
        watcher = Thread.new { client.watch("written", start_revision: revision + 1).next }
        writer = Thread.new { client.put("written", "after", idempotent: true).revision }
        copier = Thread.new { client.snapshot(&:revision) }
        sleep 0.5
        server = KvServerProcess.new(data_dir: dir, listen: address)
        server.start
        record = value_within(reader)
        assert_equal ["before".b, revision], [record.value, record.mod_revision]
        assert_equal revision + 1, value_within(writer)
        assert_operator value_within(copier), :>=, revision
        event = value_within(watcher)
        assert_equal ["after".b, revision + 1], [event.record.value, event.revision]
        assert_equal "after".b, client.get_record("written").value
      end
    ensure
      server&.stop if server&.address
    end
  end

  def test_without_a_policy_nothing_is_retried
    address = unused_address
    KeyValue::Client.open(address) do |client|
      started = Time.now
      assert_raises(KeyValue::ServerUnavailable) { client.get_record("k") }
      assert_operator Time.now - started, :<, 1
    end
    KeyValue::Client.open(address, retry_policy: KeyValue::RetryPolicy.new(attempts: 3, initial_backoff: 0.2)) do |c|
      started = Time.now
      assert_raises(KeyValue::ServerUnavailable) { c.get_record("k") }
      assert_operator Time.now - started, :<, 1.5
      started = Time.now
      assert_raises(KeyValue::ServerUnavailable) { c.put("k", "v") }
      assert_operator Time.now - started, :<, 0.2, "a write not marked idempotent is tried once"
    end
    assert_raises(ArgumentError) { KeyValue::Client.new(address, retry_policy: { attempts: 3 }) }
  end
end
