# frozen_string_literal: true

require "test_helper"

# delete of one key, a prefix or a range.
class DeleteTest < Minitest::Test
  include TestHelpers

  def test_delete_answers_how_many_keys_it_deleted
    key = unique_key
    with_client do |client|
      client.put(key, "v")
      assert_equal 1, client.delete(key)
      assert_equal 0, client.delete(key)
      assert_nil client.get_record(key)
      assert_raises(KeyValue::KeyNotFound) { client.get(key) }
    end
  end

  def test_a_prefix_delete_counts_the_keys_under_the_prefix_only
    prefix = "#{unique_key('dir')}/"
    with_client do |client|
      client.batch_put("#{prefix}a" => "1", "#{prefix}b" => "2", "#{prefix}c/d" => "3", "#{prefix.chop}x" => "out")
      assert_equal 3, client.delete(prefix, prefix: true)
      assert_equal 0, client.count(prefix, prefix: true)
      assert_equal "out".b, client.get_record("#{prefix.chop}x").value
      assert_equal 0, client.delete(prefix, prefix: true)
    end
  end

  def test_a_range_delete_stops_before_range_end
    prefix = unique_key
    with_client do |client|
      client.batch_put("#{prefix}a" => "", "#{prefix}b" => "", "#{prefix}c" => "")
      assert_equal 2, client.delete("#{prefix}a", range_end: "#{prefix}c")
      assert_equal ["#{prefix}c".b], client.range(prefix, prefix: true).map(&:key)
    end
  end

  def test_delete_if_deletes_only_at_the_expected_revision
    key = unique_key
    with_client do |client|
      written = client.put(key, "v1").revision
      client.put(key, "v2")
      stale = client.delete_if(key, expect_revision: written)
      refute stale.succeeded?
      assert_equal ["v2".b, written + 1], [stale.current.value, stale.current.mod_revision]
      deleted = client.delete_if(key, expect_revision: written + 1)
      assert deleted.succeeded?
      assert_nil deleted.current
      assert_nil client.get_record(key)
      gone = client.delete_if(key, expect_revision: written + 1)
      refute gone.succeeded?
      assert_nil gone.current
      assert_argument_error("expect_revision") { client.delete_if(key, expect_revision: -1) }
    end
  end
end
