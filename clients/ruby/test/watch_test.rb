# frozen_string_literal: true

require "open3"
require "test_helper"

# watch: replay from a past revision, live events, cancellation, and the
# errors of a compacted history and of too many watchers.
class WatchTest < Minitest::Test
  include TestHelpers

  def test_a_watch_from_a_past_revision_replays_the_missed_events_then_live_ones
    prefix = "#{unique_key}/"
    with_client do |client|
      client.put("#{prefix}before", "written before the start revision")
      missed_put = client.put("#{prefix}a", "1").revision
      outside = client.put("#{prefix.chop}-outside", "not under the prefix").revision
      client.delete("#{prefix}before")
      seen = Queue.new
      watcher = Thread.new do
        events = []
        client.watch(prefix, prefix: true, start_revision: missed_put) do |event|
          events << event
          seen << event
          break if events.size == 4
        end
        events
      end
      replayed = [seen.pop, seen.pop]
      live_put = client.put("#{prefix}b", "2").revision
      live_delete = client.delete("#{prefix}a")
      events = value_within(watcher)

      assert_equal replayed, events.first(2)
      assert_equal([[:put, "#{prefix}a".b], [:delete, "#{prefix}before".b]], replayed.map { |e| [e.kind, e.key] })
      assert_equal missed_put, replayed[0].revision
      assert_operator replayed[1].revision, :>, outside
      live = events.last(2).map { |e| [e.kind, e.key, e.record.value, e.revision] }
      assert_equal [[:put, "#{prefix}b".b, "2".b, live_put], [:delete, "#{prefix}a".b, "".b, live_put + 1]], live
      assert_equal 1, live_delete
    end
  end

  def test_without_a_block_watch_returns_a_registered_watch_whose_each_takes_what_it_needs
    key = unique_key
    with_client do |client|
      revisions = %w[1 2 3].map { |value| client.put(key, value).revision }
      events = client.watch(key, start_revision: revisions[0])
      assert_instance_of KeyValue::Watch, events
      assert events.registered?
      first_two = events.first(2).map { |e| [e.record.value, e.revision] }
      assert_equal [["1".b, revisions[0]], ["2".b, revisions[1]]], first_two
      assert events.closed?, "first(2) leaves each early, which closes the watch"
      assert_equal([1, 2, 3], client.watch(key, start_revision: revisions[0]).take(3).map { |e| e.record.version })
      assert_equal [revisions[2]], client.watch(key, start_revision: revisions[2]).first(1).map(&:revision)
    end
  end

  # Issue 18, bug 1: a watch read on another thread must see a put made
  # right after watch returned (the server has registered it by then).
  def test_a_put_right_after_watch_returns_is_seen_by_a_reader_thread
    with_client do |client|
      10.times do
        key = unique_key
        watch = client.watch(key)
        reader = Thread.new { watch.first }
        revision = client.put(key, "right after").revision
        event = value_within(reader, 5)
        assert_equal [:put, "right after".b, revision], [event.kind, event.record.value, event.revision]
        assert watch.closed?
      end
    end
  end

  def test_next_reads_one_event_at_a_time_and_close_from_another_thread_ends_each
    key = unique_key
    with_client do |client|
      watch = client.watch(key)
      first = client.put(key, "1").revision
      client.put(key, "2")
      assert_equal first, watch.next.revision
      assert_equal "2".b, watch.next.record.value
      assert_equal first + 2, watch.next_revision
      seen = Queue.new
      reader = Thread.new do
        watch.each { |event| seen << event.record.value }
        :ended
      end
      client.put(key, "3")
      assert_equal "3".b, seen.pop
      watch.close
      assert_equal :ended, value_within(reader)
      assert_raises(StopIteration) { watch.next }
    end
  end

  def test_closing_the_client_ends_its_watches
    client = KeyValue::Client.new(KvServerProcess.shared.address)
    watch = client.watch(unique_key)
    reader = Thread.new do
      watch.each { flunk "no event was written" }
      :ended
    end
    client.close
    assert_equal :ended, value_within(reader, 5)
    assert watch.closed?
  end

  # Issue 18, bug 3: a watch dropped after next (no break, no close) held
  # its server slot until the process ended.
  def test_watches_dropped_after_next_do_not_exhaust_the_servers_watchers
    with_server("--max-watchers", "2") do |client|
      revision = client.put("k", "1").revision
      values = Array.new(4) { client.watch("k", start_revision: revision).next.record.value }
      assert_equal ["1".b] * 4, values
      held = Array.new(2) { client.watch("k", start_revision: revision) }
      error = assert_raises(KeyValue::ResourceExhausted) { client.watch("k", start_revision: revision) }
      assert_includes error.message, "--max-watchers"
      held.each(&:close)
      assert_equal "1".b, client.watch("k", start_revision: revision).next.record.value
    end
  end

  def test_a_watch_from_a_compacted_revision_raises_compacted
    with_server("--watch-history", "5") do |client|
      revisions = Array.new(20) { |i| client.put("k#{i % 3}", i.to_s).revision }
      error = assert_raises(KeyValue::Compacted) { client.watch("k", prefix: true, start_revision: 1) { flunk } }
      assert_equal GRPC::Core::StatusCodes::OUT_OF_RANGE, error.code
      assert_raises(KeyValue::Compacted) { client.watch("k0", start_revision: revisions[2]).first }
      recent = client.watch("k", prefix: true, start_revision: revisions[-2]).first(2)
      assert_equal revisions.last(2), recent.map(&:revision)
    end
  end

  def test_breaking_out_cancels_the_stream_and_frees_the_watch_on_the_server
    with_server("--max-watchers", "1") do |client|
      revision = client.put("k", "1").revision
      holding = Queue.new
      release = Queue.new
      holder = Thread.new do
        client.watch("k", start_revision: revision) do |event|
          holding << event
          release.pop
          break
        end
        :stopped
      end
      assert_equal "1".b, holding.pop.record.value
      error = assert_raises(KeyValue::ResourceExhausted) { client.watch("k", start_revision: revision).first }
      assert_includes error.message, "--max-watchers"
      assert_kind_of KeyValue::RequestFailed, error

      release << :go
      assert_equal :stopped, value_within(holder)
      again = eventually { client.watch("k", start_revision: revision).first(1) }
      assert_equal(["1".b], again.map { |e| e.record.value })
      # first(1) broke out too: its slot is freed again.
      assert_equal 1, eventually { client.watch("k", start_revision: revision).first(1) }.size
    end
  end

  def test_watch_and_snapshot_give_up_on_a_server_that_never_answers_after_the_timeout
    with_silent_server do |address|
      KeyValue::Client.open(address, timeout: 0.5) do |client|
        { watch: -> { client.watch("k") { flunk } }, snapshot: -> { client.snapshot } }.each do |name, call|
          started = Time.now
          attempt = Thread.new do
            call.call
          rescue KeyValue::Error => e
            e
          end
          error = value_within(attempt)
          assert_instance_of KeyValue::ServerUnavailable, error, name
          assert_equal GRPC::Core::StatusCodes::DEADLINE_EXCEEDED, error.code
          assert_includes error.message, address
          assert_in_delta 0.5, Time.now - started, 0.45, name
        end
      end
    end
  end

  def test_an_established_watch_has_no_deadline
    key = unique_key
    KeyValue::Client.open(KvServerProcess.shared.address, timeout: 0.2) do |client|
      start = client.put(key, "before").revision + 1
      watcher = Thread.new { client.watch(key, start_revision: start).first.record.value }
      sleep 0.5
      client.put(key, "after the timeout")
      assert_equal "after the timeout".b, value_within(watcher)
    end
  end

  def test_ctrl_c_and_sigterm_stop_a_process_blocked_in_a_watch
    key = unique_key
    revision = with_client { |client| client.put(key, "seen").revision }
    watch = "client.watch(#{key.dump}, start_revision: #{revision}) { |event| puts event.record.value; $stdout.flush }"
    assert_signals_stop(KvServerProcess.shared.address, watch, "seen\n")
  end

  def test_ctrl_c_and_sigterm_stop_a_process_blocked_in_a_snapshot
    with_silent_server do |address|
      assert_signals_stop(address, "puts :started; $stdout.flush; client.snapshot", "started\n")
    end
  end

  def test_a_watch_needs_a_key_or_a_prefix
    with_client do |client|
      assert_raises(KeyValue::InvalidArgument) { client.watch("") { flunk } }
      assert_raises(KeyValue::InvalidArgument) { client.watch("a", prefix: true, range_end: "b").first }
      [-1, 2**64, "1"].each do |start_revision|
        assert_argument_error("start_revision") { client.watch("a", start_revision:) }
      end
    end
  end

  private

  # Runs +code+ in a Ruby process of its own, with +client+ a Client of
  # +address+ without a timeout; once it has printed +first_line+ (and gone
  # on to block on the stream), SIGINT, then in another process SIGTERM,
  # must end it within 5 seconds. The process starts with Ruby's own
  # SIGINT handler, as at a terminal: a test run started in the background
  # by a shell without job control inherits SIGINT ignored, and Ruby keeps
  # an ignored SIGINT ignored (CI's run failed so).
  def assert_signals_stop(address, code, first_line)
    lib = File.expand_path("../lib", __dir__)
    script = "trap('INT', 'DEFAULT')\nrequire 'keyvalue'\n" \
             "client = KeyValue::Client.new(#{address.dump}, timeout: nil)\n#{code}"
    %w[INT TERM].each do |signal|
      Open3.popen2(RbConfig.ruby, "-I", lib, "-e", script) do |_, out, waiter|
        assert_equal first_line, out.gets
        sleep 0.2 # into the wait for the stream
        Process.kill(signal, waiter.pid)
        status = waiter.join(5)&.value
        Process.kill("KILL", waiter.pid) unless status
        assert status, "SIG#{signal} did not stop the process within 5s"
        assert_equal Signal.list.fetch(signal), status.termsig, status.inspect
      end
    end
  end

  # The block's value once it stops raising ResourceExhausted (the server
  # frees a cancelled watch's slot shortly after the cancellation arrives).
  def eventually(seconds = 5)
    deadline = Time.now + seconds
    begin
      yield
    rescue KeyValue::ResourceExhausted
      raise if Time.now > deadline

      sleep 0.02
      retry
    end
  end
end
