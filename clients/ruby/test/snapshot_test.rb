# frozen_string_literal: true

require "test_helper"

# Client#snapshot. The tests that check the whole copy start a kvserver of
# their own (with_server), so the copy holds exactly what the test wrote.
class SnapshotTest < Minitest::Test
  include TestHelpers

  # The server sends this many keys per chunk (SNAPSHOT_CHUNK in src/storage).
  CHUNK = 1000

  # Stores each key with its reversed bytes as the value, 500 per batch;
  # returns the last batch's revision.
  def put_keys(client, keys)
    keys.each_slice(500).map { |slice| client.batch_put(slice.to_h { |k| [k, k.reverse] }) }.last
  end

  # +records+ are exactly +keys+, in order, as put_keys wrote them.
  def assert_keys(keys, records)
    assert_equal keys.map(&:b), records.map(&:key)
    assert(records.all? { |r| r.value == r.key.reverse })
    assert(records.all? { |r| r.version == 1 && r.create_revision == r.mod_revision && r.lease.zero? })
  end

  def check_copy(count)
    keys = Array.new(count) { |i| format("snap/%05d", i) }
    with_server do |client|
      put_keys(client, keys)
      lease = client.lease_grant(60)
      leased = client.put("snap/leased", "on a lease", lease: lease.id)
      revision = client.put("snap/last", "v").revision
      assert_equal leased.revision + 1, revision

      records = client.snapshot do |snapshot|
        assert_instance_of KeyValue::Snapshot, snapshot
        assert_equal revision, snapshot.revision
        assert_equal [KeyValue::Lease.new(id: lease.id, ttl: 60.0, remaining: nil)], snapshot.leases
        assert_predicate snapshot.leases, :frozen?
        refute_predicate snapshot, :complete?
        snapshot.to_a.tap { assert_predicate snapshot, :complete? }
      end

      assert_equal count + 2, records.size
      assert_keys keys, records.first(count)
      last, on_lease = records.last(2)
      assert_equal KeyValue::Record.new(key: "snap/leased".b, value: "on a lease".b, create_revision: leased.revision,
                                        mod_revision: leased.revision, version: 1, lease: lease.id), on_lease
      assert_equal ["snap/last".b, revision], [last.key, last.mod_revision]
      # The same records, with every counter, as a read of the whole keyspace.
      assert_equal client.range.to_a, records
    end
  end

  def test_a_few_hundred_keys_and_a_leased_one_in_one_chunk
    check_copy(300)
  end

  def test_thousands_of_keys_and_a_leased_one_over_several_chunks
    check_copy(2500)
  end

  def test_counters_and_a_key_with_a_ttl_of_its_own
    with_server do |client|
      client.put("a", "1")
      second = client.put("a", "2")
      with_ttl = client.put("b", "short", ttl: 1.5)
      client.snapshot do |snapshot|
        assert_equal with_ttl.revision, snapshot.revision
        assert_equal([[with_ttl.lease, 1.5]], snapshot.leases.map { |l| [l.id, l.ttl] })
        a, b = snapshot.to_a
        assert_equal ["a".b, "2".b, 2, second.revision, second.revision - 1],
                     [a.key, a.value, a.version, a.mod_revision, a.create_revision]
        assert_equal ["b".b, with_ttl.lease], [b.key, b.lease]
      end
    end
  end

  def test_the_copy_is_consistent_while_writes_go_on_and_is_read_once
    keys = Array.new((2 * CHUNK) + 10) { |i| format("k/%04d", i) }
    with_server do |client|
      revision = put_keys(client, keys)
      snapshot = client.snapshot
      begin
        first = snapshot.first(5)
        client.delete("k/0001")
        client.put("k/1500", "changed")
        client.put("k/9999", "new")
        rest = snapshot.to_a
        assert_equal revision, snapshot.revision
        assert_keys keys, first + rest
        assert_equal [], snapshot.to_a, "the records are read once"
        assert_predicate snapshot, :complete?
      ensure
        snapshot.close
      end
      assert_predicate snapshot, :closed?
      assert_equal keys.size, client.count
    end
  end

  def test_an_empty_store
    with_server do |client|
      client.snapshot do |snapshot|
        # etcd's numbering: an empty store is at revision 1.
        assert_equal [1, [], []], [snapshot.revision, snapshot.leases, snapshot.to_a]
        assert_predicate snapshot, :complete?
      end
    end
  end

  def test_closing_early_cancels_the_stream
    with_server do |client|
      put_keys(client, Array.new(3 * CHUNK) { |i| format("c/%05d", i) })
      snapshot = client.snapshot
      assert_equal "c/00000".b, snapshot.first.key
      snapshot.close
      snapshot.close # again: nothing happens
      assert_predicate snapshot, :closed?
      # What was already received may still come; then the records end early.
      assert_operator snapshot.count, :<, (3 * CHUNK) - 1
      refute_predicate snapshot, :complete?
      assert_match(/revision=\d+ leases=0 closed/, snapshot.inspect)
      # The block form closes it too, and returns the block's value.
      kept = client.snapshot { |s| s.first(2).map(&:key) << s }
      assert_equal %w[c/00000 c/00001].map(&:b), kept.first(2)
      assert_predicate kept.last, :closed?
    end
  end

  def test_errors_are_mapped
    assert_raises(KeyValue::ServerUnavailable) do
      KeyValue::Client.open(unused_address) { |client| client.snapshot { flunk "no snapshot expected" } }
    end
    client = KeyValue::Client.new(KvServerProcess.shared.address)
    client.close
    assert_raises(IOError) { client.snapshot }
  end

  def test_tokens
    with_server("--auth-token-file", TestHelpers.token_file) do |anonymous, server|
      KeyValue::Client.open(server.address, token: READER) do |reader|
        assert_predicate reader.snapshot { |s| s.tap(&:to_a) }, :complete?
      end
      KeyValue::Client.open(server.address, token: SCOPED) do |scoped|
        error = assert_raises(KeyValue::PermissionDenied) { scoped.snapshot }
        assert_equal GRPC::Core::StatusCodes::PERMISSION_DENIED, error.code
      end
      assert_raises(KeyValue::Unauthenticated) { anonymous.snapshot }
    end
  end
end
