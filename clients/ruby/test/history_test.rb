# frozen_string_literal: true

require "test_helper"

# Reads at past revisions, compact, and one-snapshot paging, against a real
# kvserver. Compaction forgets every key's history, so these tests share a
# server of their own (small pages), not the suite's shared one.
class HistoryTest < Minitest::Test
  include TestHelpers

  PAGE = 100

  def with_history_client(&)
    KeyValue::Client.open(shared_server("--max-range-page", PAGE.to_s).address, &)
  end

  def test_reads_at_past_revisions_see_overwrites_and_deletes
    a = unique_key("hist-a")
    b = "#{a}-b"
    with_history_client do |client|
      r1 = client.put(a, "a1").revision
      r2 = client.put(b, "b1").revision
      r3 = client.put(a, "a2").revision
      assert_equal 1, client.delete(b)
      now = client.put("#{a}-c", "c1").revision

      at_r1 = client.get_record(a, revision: r1)
      assert_equal ["a1".b, r1], [at_r1.value, at_r1.mod_revision]
      at_r3 = client.get_record(a, revision: r3)
      assert_equal ["a2".b, 2], [at_r3.value, at_r3.version]
      assert_equal "b1".b, client.get_record(b, revision: r3).value
      assert_nil client.get_record(b, revision: now)
      assert_nil client.get_record(b)

      assert_equal ["a1".b, "b1".b], client.batch_get([a, b], revision: r2).map(&:value)
      assert_equal ["a2".b, nil], (client.batch_get([a, b], revision: now).map { |r| r&.value })
      assert_equal({ a.b => "a1".b, b.b => "b1".b }, pairs(client.range(a, prefix: true, revision: r2)))
      assert_equal [a.b, "#{a}-c".b], client.range(a, prefix: true).map(&:key)
      assert_equal [1, 2, 2], ([r1, r3, now].map { |rev| client.count(a, prefix: true, revision: rev) })
    end
  end

  def test_compaction_then_older_reads_raise_compacted
    key = unique_key("hist-compact")
    with_history_client do |client|
      old = client.put(key, "old").revision
      kept = client.put(key, "new").revision
      assert_operator client.compact(kept), :>=, kept

      error = assert_raises(KeyValue::Compacted) { client.get_record(key, revision: old) }
      assert_equal GRPC::Core::StatusCodes::OUT_OF_RANGE, error.code
      assert_equal [kept, old], [error.compacted_revision, error.requested_revision]
      assert_raises(KeyValue::Compacted) { client.batch_get([key], revision: old) }
      assert_raises(KeyValue::Compacted) { client.range(key, revision: old).to_a }
      assert_raises(KeyValue::Compacted) { client.count(key, revision: old) }

      watched = assert_raises(KeyValue::Compacted) { client.watch(key, start_revision: old).next }
      assert_equal kept, watched.compacted_revision
      assert_equal "new".b, client.get_record(key, revision: kept).value
      again = assert_raises(KeyValue::Compacted) { client.compact(kept) }
      assert_equal kept, again.compacted_revision
    end
  end

  def test_future_revisions_raise_future_revision
    key = unique_key("hist-future")
    with_history_client do |client|
      current = client.put(key, "v").revision
      ahead = current + 1000
      [-> { client.get_record(key, revision: ahead) }, -> { client.compact(ahead) }].each do |attempt|
        error = assert_raises(KeyValue::FutureRevision) { attempt.call }
        refute_kind_of KeyValue::Compacted, error
        assert_equal GRPC::Core::StatusCodes::OUT_OF_RANGE, error.code
        assert_equal ahead, error.requested_revision
        assert_includes current...ahead, error.current_revision
      end
    end
  end

  def test_revisions_are_checked_before_sending
    with_history_client do |client|
      assert_argument_error("revision") { client.get_record("k", revision: -1) }
      assert_argument_error("revision") { client.range("k", revision: "1").to_a }
      assert_argument_error("revision") { client.compact(0) }
    end
  end

  def test_a_listing_under_a_writer_is_one_snapshot
    prefix = "#{unique_key('hist-snap')}/"
    keys = Array.new(3000) { |i| "#{prefix}#{i.to_s.rjust(5, '0')}".b }
    with_history_client do |client|
      loaded_at = keys.each_slice(500).map { |slice| client.batch_put(slice.to_h { |k| [k, "v0"] }) }.last
      before = pairs(client.range(prefix, prefix: true))
      assert_equal keys.size, before.size

      seen = list_while_writing(client, client.range(prefix, prefix: true), keys)

      assert_equal before, pairs(seen)
      assert_equal keys, seen.map(&:key)
      assert_equal loaded_at, seen.map(&:mod_revision).max
      refute_equal before, pairs(client.range(prefix, prefix: true)), "the writer changed nothing"
    end
  end

  def test_out_of_range_messages_choose_the_error
    out_of_range = GRPC::Core::StatusCodes::OUT_OF_RANGE
    compacted = KeyValue.error_for_status(out_of_range, "required revision 3 has been compacted: the " \
                                                        "compacted revision is 7, read at it or later", api: :v1)
    assert_equal [KeyValue::Compacted, 7, 3],
                 [compacted.class, compacted.compacted_revision, compacted.requested_revision]
    etcd = KeyValue.error_for_status(out_of_range, "etcdserver: mvcc: required revision has been compacted", api: :v1)
    assert_equal [KeyValue::Compacted, nil], [etcd.class, etcd.compacted_revision]
    future = KeyValue.error_for_status(out_of_range, "required revision 90 is a future revision: the store is " \
                                                     "at revision 12", api: :v1)
    assert_equal [KeyValue::FutureRevision, 12, 90], [future.class, future.current_revision, future.requested_revision]
  end

  private

  def pairs(records)
    records.to_h { |r| [r.key, r.value] }
  end

  # Reads +listing+ to its end while another client overwrites, deletes and
  # inserts +keys+, with at least one round of writes between two pages.
  def list_while_writing(client, listing, keys)
    seen = [listing.next] # the first page is read: the listing's revision is fixed
    writes = Queue.new
    stop = false
    writer = Thread.new do
      KeyValue::Client.open(client.address) { |other| write_until(-> { stop }, other, keys, writes) }
    end
    begin
      loop do
        seen << listing.next
        await_a_write(writes) if (seen.size % PAGE).zero?
      end
    ensure
      stop = true
      value_within(writer)
    end
    seen
  end

  # Takes one round of writes off +writes+, waiting up to 10 s for it
  # (Ruby 3.1's Queue#pop has no timeout).
  def await_a_write(writes)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    while writes.empty?
      flunk "the writer made no progress" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.001
    end
    writes.pop
  end

  def write_until(stop, client, keys, writes)
    round = 0
    until stop.call
      round += 1
      client.batch_put(keys.values_at(*(round % 7).step(keys.size - 1, 97)).to_h { |k| [k, "w#{round}"] })
      client.delete(keys[(round * 131) % keys.size])
      client.put("#{keys[round * 13 % keys.size]}x", "inserted")
      writes << round
    end
  end
end
