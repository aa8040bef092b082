# frozen_string_literal: true

require "test_helper"
require "timeout"

# Watches that resume by themselves across a real restart of kvserver (on
# the disk backend, back on the same port), a graceful one and a kill -9.
class WatchResumeTest < Minitest::Test
  include TestHelpers

  # A short history makes a resume point fall out of it easily. The
  # shutdown grace is kvserver's default (10 s): it serves open streams
  # that long on SIGTERM, unless their clients leave, as watches do when
  # the server's GOAWAY arrives.
  FLAGS = ["--watch-history", "3"].freeze

  # Yields a client (waiting for the server when it is down) of a disk
  # kvserver of its own, and the server, which the test restarts.
  def with_disk_server
    Dir.mktmpdir("kv-resume") do |dir|
      server = KvServerProcess.new(FLAGS, data_dir: dir)
      server.start
      begin
        KeyValue::Client.open(server.address, timeout: 10, wait_for_ready: true) { |client| yield client, server }
      ensure
        server.stop if server.address
      end
    end
  end

  def test_a_watch_survives_a_graceful_restart_and_a_kill_without_losing_or_repeating_an_event
    with_disk_server do |client, server|
      watch = client.watch("job/", prefix: true)
      seen = Queue.new
      reader = Thread.new do
        watch.each { |event| seen << event }
        :closed
      end
      written = []
      %w[TERM KILL].each do |signal|
        written += Array.new(2) { |i| client.put("job/#{signal}-before-#{i}", "v").revision }
        assert_equal written.last(2), Array.new(2) { seen.pop.revision }
        started = Time.now
        server.restart(signal:)
        assert_operator Time.now - started, :<, 5, "the watch left the stopping server at once (SIG#{signal})"
        # Written after the restart, before the watch has noticed.
        written += Array.new(2) { |i| client.put("job/#{signal}-after-#{i}", "v").revision }
        assert_equal written.last(2), Array.new(2) { seen.pop.revision }, "after SIG#{signal}"
      end
      watch.close
      assert_equal :closed, value_within(reader)
      assert_empty seen, "no event twice"
      assert_equal written.sort, written
    end
  end

  # The server keeps 3 to 6 revisions of history (--watch-history 3: once
  # it holds 6, it is compacted to 3); 8 writes made on a restarted server
  # before the watch is back leave a gap it must not skip over silently.
  # Whether the watch comes back before or after them is a race
  # (the writes come from a new client, whose channel is not in a reconnect
  # backoff as the watch's is), so every round checks that either every
  # event came or Compacted did, and Compacted must come in one of three.
  def test_a_resume_point_older_than_the_history_raises_compacted_rather_than_skipping
    with_disk_server do |_client, server|
      watcher = KeyValue::Client.new(server.address)
      outcomes = Array.new(3) do |round|
        watch = watcher.watch("gap/", prefix: true)
        # Down long enough for the watch to be in its longest backoff.
        server.restart(signal: "KILL", down: 1.5)
        revisions = KeyValue::Client.open(server.address, timeout: 10, wait_for_ready: true) do |writer|
          Array.new(8) { |i| writer.put("gap/#{round}-#{i}", "v").revision }
        end
        outcome = begin
          assert_equal revisions, Array.new(8) { watch.next.revision }
          :all_events
        rescue KeyValue::Compacted => e
          assert_equal GRPC::Core::StatusCodes::OUT_OF_RANGE, e.code
          :compacted
        ensure
          watch.close
        end
        break [outcome] if outcome == :compacted

        outcome
      end
      assert_includes outcomes, :compacted
    ensure
      watcher&.close
    end
  end

  # A memory server restarted counts revisions from 1 again: resuming from
  # the revision after the last event would skip its writes until then.
  def test_a_watch_will_not_resume_on_a_server_that_lost_its_history
    server = KvServerProcess.new
    server.start
    KeyValue::Client.open(server.address, timeout: 10, wait_for_ready: true) do |client|
      watch = client.watch("lost/", prefix: true)
      written = Array.new(3) { |i| client.put("lost/#{i}", "v").revision }
      assert_equal written, Array.new(3) { watch.next.revision }
      server.restart
      client.put("lost/again", "v")
      # Without the check the watch would wait here for revisions to come.
      error = assert_raises(KeyValue::Compacted) { Timeout.timeout(20) { watch.next } }
      assert_match(/lost its history/, error.message)
      watch.close
    end
  ensure
    server&.stop if server&.address
  end

  def test_without_resume_a_restart_ends_the_watch_with_server_unavailable
    with_disk_server do |client, server|
      watch = client.watch("noresume/", prefix: true, resume: false)
      revision = client.put("noresume/a", "v").revision
      assert_equal revision, watch.next.revision
      server.restart(signal: "KILL")
      assert_raises(KeyValue::ServerUnavailable) { watch.next }
    end
  end
end
