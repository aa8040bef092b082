# frozen_string_literal: true

require "test_helper"

# txn with the Compare and Op builders.
class TxnTest < Minitest::Test
  include TestHelpers

  Compare = KeyValue::Compare
  Op = KeyValue::Op

  def test_when_every_compare_holds_the_success_branch_runs
    key = unique_key
    other = unique_key
    with_client do |client|
      revision = client.put(key, "old").revision
      result = client.txn(compares: [Compare.mod_revision(key, :==, revision), Compare.absent(other)],
                          success: [Op.put(key, "new", prev: true), Op.put(other, "x"), Op.get(key),
                                    Op.get(unique_key)],
                          failure: [Op.get(key)])
      assert_predicate result, :succeeded?
      assert_operator result.revision, :>, revision
      put, _, got, missing = result.results
      assert_instance_of KeyValue::PutResult, put
      assert_equal ["old".b, result.revision], [put.prev.value, put.revision]
      assert_equal ["new".b, result.revision], [got.value, got.mod_revision]
      assert_nil missing
      assert_equal result.revision, client.get_record(other).mod_revision, "one revision for the whole txn"
    end
  end

  def test_when_a_compare_fails_only_the_failure_branch_runs
    key = unique_key
    other = unique_key
    with_client do |client|
      revision = client.put(key, "old").revision
      result = client.txn(compares: [Compare.value(key, :==, "something else")],
                          success: [Op.put(key, "new"), Op.delete(other)],
                          failure: [Op.get(key), Op.put(other, "from failure")])
      refute_predicate result, :succeeded?
      got, put = result.results
      assert_equal ["old".b, revision], [got.value, got.mod_revision]
      assert_equal result.revision, put.revision
      assert_equal "old", client.get(key)
      assert_equal "from failure", client.get(other)
    end
  end

  def test_compares_on_each_target_and_operator
    key = unique_key
    with_client do |client|
      first = client.put(key, "b").revision
      client.put(key, "b")
      held = lambda do |compare|
        client.txn(compares: [compare]).succeeded?
      end
      assert held.call(Compare.value(key, :==, "b"))
      assert held.call(Compare.value(key, :>, "a"))
      assert held.call(Compare.value(key, :<, "c"))
      assert held.call(Compare.value(key, :!=, "a"))
      assert held.call(Compare.version(key, :==, 2))
      assert held.call(Compare.create_revision(key, :==, first))
      assert held.call(Compare.mod_revision(key, :>, first))
      assert held.call(Compare.exists(key))
      refute held.call(Compare.absent(key))
      refute held.call(Compare.version(key, :<, 2))
      refute held.call(Compare.exists(unique_key))
      assert held.call(Compare.absent(unique_key))
    end
  end

  def test_range_and_delete_operations_answer_records_and_counts
    prefix = "#{unique_key}/"
    with_client do |client|
      client.batch_put("#{prefix}a" => "1", "#{prefix}b" => "2", "#{prefix}c" => "3")
      result = client.txn(compares: [],
                          success: [Op.range(prefix, prefix: true, limit: 2), Op.delete("#{prefix}a"),
                                    Op.delete(prefix, prefix: true), Op.range(prefix, prefix: true)])
      listed, deleted_one, deleted_rest, after = result.results
      assert_equal %w[a b].map { |k| "#{prefix}#{k}".b }, listed.map(&:key)
      assert_equal [1, 2, []], [deleted_one, deleted_rest, after]
      assert_equal 0, client.count(prefix, prefix: true)
    end
  end

  def test_the_server_refuses_a_put_on_an_unknown_lease_and_nothing_is_written
    key = unique_key
    with_client do |client|
      assert_raises(KeyValue::LeaseNotFound) do
        client.txn(compares: [], success: [Op.put(key, "a"), Op.put(unique_key, "b", lease: 12_345)])
      end
      assert_nil client.get_record(key)
    end
  end

  def test_builders_refuse_unknown_operators
    assert_raises(ArgumentError) { Compare.version("k", :<=, 1) }
    assert_raises(ArgumentError) { Compare.value("k", "==", "v") }
  end

  def test_builders_refuse_numbers_the_wire_cannot_carry
    [-1, 2**32, "3", 2.0].each do |limit|
      error = assert_argument_error("limit") { Op.range("a", limit:) }
      assert_includes error.message, "nil or an Integer from 0 to #{(2**32) - 1}"
    end
    [-1, 2**64, 1.5, nil].each do |operand|
      assert_argument_error("mod_revision") { Compare.mod_revision("a", :==, operand) }
      assert_argument_error("create_revision") { Compare.create_revision("a", :>, operand) }
      assert_argument_error("version") { Compare.version("a", :<, operand) }
    end
    assert_argument_error("lease") { Op.put("a", "v", lease: -1) }
    assert_equal((2**64) - 1, Compare.mod_revision("a", :<, (2**64) - 1).mod_revision)
  end
end
