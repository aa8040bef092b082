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
end
