# frozen_string_literal: true

require "test_helper"

# TTLs and leases. The sleeps here are the only ones in the suite: expiry
# needs time to pass. Each leaves several hundred milliseconds of margin
# around the deadline it tests.
class LeaseTest < Minitest::Test
  include TestHelpers

  def test_a_key_with_a_ttl_expires_for_get_record_range_and_watch
    key = unique_key
    with_client do |client|
      put = client.put(key, "short-lived", ttl: 1.0)
      refute_equal 0, put.lease
      assert_equal 1.0, client.lease_info(put.lease).ttl
      expiry = Thread.new { client.watch(key, start_revision: put.revision + 1).first }
      record = client.get_record(key)
      assert_equal ["short-lived".b, put.lease], [record.value, record.lease]
      assert_equal [key.b], client.range(key, prefix: true).map(&:key)

      sleep 1.5
      assert_nil client.get_record(key)
      assert_equal [], client.range(key, prefix: true).to_a
      assert_equal 0, client.count(key, prefix: true)
      event = value_within(expiry)
      assert_equal [:expire, key.b], [event.kind, event.key]
      assert_operator event.revision, :>, put.revision
      assert_raises(KeyValue::LeaseNotFound) { client.lease_info(put.lease) }
    end
  end

  def test_keep_alive_restarts_the_ttl_of_every_key_on_the_lease
    keys = [unique_key, unique_key]
    with_client do |client|
      lease = client.lease_grant(1.5)
      assert_equal 1.5, lease.ttl
      info = client.lease_info(lease.id)
      assert_equal [lease.id, 1.5], [info.id, info.ttl]
      assert_operator info.remaining, :<=, 1.5
      assert_operator info.remaining, :>, 1.0
      keys.each { |key| assert_equal lease.id, client.put(key, "v", lease: lease.id).lease }

      sleep 0.8
      kept = client.lease_keep_alive(lease.id)
      assert_equal [lease.id, 1.5, 1.5], [kept.id, kept.ttl, kept.remaining]
      sleep 1.1 # 1.9s after the grant: past the first deadline, 0.4s before the new one
      assert_equal [lease.id, lease.id], client.batch_get(keys).map(&:lease)
      assert_operator client.lease_info(lease.id).remaining, :<, 1.5

      sleep 0.9 # 0.5s past the new deadline
      assert_equal [nil, nil], client.batch_get(keys)
      assert_raises(KeyValue::LeaseNotFound) { client.lease_keep_alive(lease.id) }
    end
  end

  def test_revoke_deletes_the_keys_of_the_lease_at_once
    keys = [unique_key, unique_key]
    with_client do |client|
      lease = client.lease_grant(60)
      info = client.lease_info(lease.id)
      assert_equal lease.id, info.id
      assert_operator info.remaining, :<=, 60
      assert_operator info.remaining, :>, 50
      start = client.put(keys[0], "a", lease: lease.id).revision
      client.put(keys[1], "b", lease: lease.id)
      client.put(keys[0], "a2", lease: lease.id)

      assert_equal 2, client.lease_revoke(lease.id)
      assert_equal [nil, nil], client.batch_get(keys)
      events = client.watch(keys[0], start_revision: start).first(3)
      assert_equal %i[put put delete], events.map(&:kind)
      assert_raises(KeyValue::LeaseNotFound) { client.lease_revoke(lease.id) }
      assert_raises(KeyValue::LeaseNotFound) { client.lease_keep_alive(lease.id) }
      assert_raises(KeyValue::LeaseNotFound) { client.put(keys[0], "again", lease: lease.id) }
    end
  end

  def test_unknown_leases_raise_lease_not_found_with_the_servers_text
    with_client do |client|
      error = assert_raises(KeyValue::LeaseNotFound) { client.lease_info(424_242) }
      assert_equal GRPC::Core::StatusCodes::NOT_FOUND, error.code
      assert_includes error.message, "424242"
      assert_raises(KeyValue::LeaseNotFound) { client.put(unique_key, "v", lease: 424_242) }
    end
  end

  def test_ttls_must_be_positive
    with_client do |client|
      [0, "10", Float::INFINITY, Float::NAN, 1e20, 2**70].each do |ttl|
        error = assert_argument_error("ttl") { client.lease_grant(ttl) }
        assert_includes error.message, "a number of seconds above zero, at most #{KeyValue::Wire::MAX_TTL_SECONDS}"
      end
      %i[lease_keep_alive lease_revoke lease_info].product([-1, 2**63, "1"]).each do |method, id|
        assert_argument_error("id") { client.public_send(method, id) }
      end
      assert_raises(KeyValue::InvalidArgument) { client.put(unique_key, "v", ttl: 10, lease: 1) }
      assert_equal 0.001, client.lease_grant(0.0001).ttl, "rounded up to a millisecond, never to no TTL"
    end
  end

  def test_leases_are_listed_in_pages_with_their_first_keys
    prefix = unique_key
    with_client do |client|
      mine = Array.new(4) { client.lease_grant(30) }
      mine.each_with_index do |lease, n|
        n.times { |k| client.put("#{prefix}/#{n}/#{k}", "v", lease: lease.id) }
      end
      listed = client.lease_list(keys: 2, page_size: 2).to_a
      ids = listed.map(&:id)
      assert_equal ids.sort, ids, "in id order"
      by_id = listed.to_h { |lease| [lease.id, lease] }
      mine.each_with_index do |lease, n|
        found = by_id.fetch(lease.id)
        assert_equal 30.0, found.ttl
        assert_equal Array.new([n, 2].min) { |k| "#{prefix}/#{n}/#{k}".b }, found.keys
        assert_equal n > 2, found.more_keys
      end
      assert_equal Array.new(3) { |k| "#{prefix}/3/#{k}".b }, client.lease_info(mine[3].id, keys: 5).keys
      client.lease_revoke(mine[0].id)
      refute_includes client.lease_list.map(&:id), mine[0].id
      assert_raises(ArgumentError) { client.lease_list(page_size: 0) }
      assert_raises(ArgumentError) { client.lease_info(mine[1].id, keys: -1) }
    end
  end
end
