# frozen_string_literal: true

require "test_helper"

# lease (kept alive in the background), lock and update, against a real
# server.
class RecipesTest < Minitest::Test
  include TestHelpers

  TTL = 0.9

  def test_a_kept_lease_outlives_three_ttls_and_is_revoked_when_the_block_ends
    key = unique_key("kept")
    with_client do |client|
      # Not kept alive, a lease of TTL seconds takes its key with it.
      bare = client.lease_grant(TTL)
      client.put("#{key}-bare", "v", lease: bare.id)
      kept_id = client.lease(TTL) do |lease|
        assert_instance_of KeyValue::KeptLease, lease
        client.put(key, "alive", lease: lease.id)
        sleep TTL * 3
        assert_nil client.get_record("#{key}-bare"), "an unkept lease expires"
        assert_equal "alive".b, client.get_record(key).value
        refute lease.lost?
        assert_operator lease.keep_alives, :>=, 3
        lease.id
      end
      assert_nil client.get_record(key), "revoked at the end of the block"
      assert_raises(KeyValue::LeaseNotFound) { client.lease_info(kept_id) }
    end
  end

  def test_a_kept_lease_is_revoked_when_the_block_raises_and_reports_a_lease_lost_meanwhile
    key = unique_key("raised")
    with_client do |client|
      assert_raises(RuntimeError) do
        client.lease(TTL) do |lease|
          client.put(key, "v", lease: lease.id)
          raise "boom"
        end
      end
      assert_nil client.get_record(key)
      lease = client.lease(TTL)
      client.lease_revoke(lease.id) # someone else revokes it
      deadline = Time.now + 5
      sleep 0.02 until lease.lost? || Time.now > deadline
      assert_kind_of KeyValue::LeaseNotFound, lease.lost
      assert_equal 0, lease.close
    end
  end

  def test_a_lock_contended_by_eight_threads_never_has_two_holders
    name = unique_key("locks/report")
    holders = 0
    most = 0
    fences = []
    guard = Mutex.new
    with_client do |client|
      threads = Array.new(8) do
        Thread.new do
          3.times do
            client.lock(name, ttl: 2) do |held|
              guard.synchronize do
                holders += 1
                most = [most, holders].max
                fences << held.revision
              end
              sleep 0.01
              guard.synchronize { holders -= 1 }
            end
          end
        end
      end
      threads.each { |thread| value_within(thread, 30) }
      assert_equal 1, most
      assert_equal 24, fences.size
      assert_equal fences.sort, fences, "each new holder has a higher revision"
      assert_nil client.get_record(name), "released"
    end
  end

  def test_update_under_sixteen_concurrent_writers_loses_no_update
    key = unique_key("counter")
    calls = Queue.new
    with_client do |client|
      threads = Array.new(16) do
        Thread.new do
          10.times do
            client.update(key) do |value|
              calls << 1
              (value.to_i + 1).to_s
            end
          end
        end
      end
      threads.each { |thread| value_within(thread, 30) }
      record = client.get_record(key)
      assert_equal "160".b, record.value
      assert_equal 160, record.version
      assert_operator calls.size, :>=, 160
      result = client.update(key) { |value| value.nil? ? "new" : "#{value}!" }
      assert result.succeeded?
      assert_equal "160!".b, result.current.value
      assert_equal "fresh".b, client.update(unique_key) { |value| value.nil? ? "fresh" : "?" }.current.value
    end
  end
end
