# frozen_string_literal: true

require "test_helper"

# batch_get and batch_put.
class BatchTest < Minitest::Test
  include TestHelpers

  def test_batch_put_writes_every_key_at_one_revision
    keys = Array.new(3) { unique_key }
    with_client do |client|
      revision = client.batch_put(keys.to_h { |k| [k, "value of #{k}"] })
      records = client.batch_get(keys)
      assert_equal keys.map { |k| "value of #{k}".b }, records.map(&:value)
      assert_equal [revision] * 3, records.map(&:mod_revision)
    end
  end

  def test_batch_get_answers_in_order_with_nil_for_missing_keys
    present = unique_key
    with_client do |client|
      client.set(present, "here")
      missing = unique_key("missing")
      records = client.batch_get([missing, present, missing])
      assert_equal 3, records.size
      assert_nil records[0]
      assert_nil records[2]
      assert_equal "here".b, records[1].value
      assert_equal [], client.batch_get([])
    end
  end

  def test_max_batch_keys_is_enforced_and_a_refused_batch_writes_nothing
    with_server("--max-batch-keys", "3") do |client|
      four = %w[a b c d]
      error = assert_raises(KeyValue::InvalidArgument) { client.batch_put(four.to_h { |k| [k, k] }) }
      assert_includes error.message, "--max-batch-keys"
      assert_equal 0, client.count
      assert_includes assert_raises(KeyValue::InvalidArgument) { client.batch_get(four) }.message, "--max-batch-keys"
      client.batch_put(four.first(3).to_h { |k| [k, k] })
      assert_equal %w[a b c].map(&:b), client.batch_get(four.first(3)).map(&:value)
    end
  end

  def test_batch_put_with_a_lease_attaches_every_key_and_revoking_deletes_them
    prefix = "#{unique_key}/"
    with_client do |client|
      lease = client.lease_grant(60)
      client.batch_put({ "#{prefix}a" => "1", "#{prefix}b" => "2" }, lease: lease.id)
      assert_equal [lease.id] * 2, client.range(prefix, prefix: true).map(&:lease)
      assert_equal 2, client.lease_revoke(lease.id)
      assert_equal 0, client.count(prefix, prefix: true)
      assert_raises(KeyValue::LeaseNotFound) { client.batch_put({ "#{prefix}c" => "3" }, lease: lease.id) }
      assert_argument_error("lease") { client.batch_put({ "#{prefix}c" => "3" }, lease: -1) }
    end
  end
end
