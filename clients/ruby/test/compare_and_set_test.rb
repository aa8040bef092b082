# frozen_string_literal: true

require "test_helper"

# compare_and_set: a put that happens only if the key is still at the
# revision the caller saw.
class CompareAndSetTest < Minitest::Test
  include TestHelpers

  def test_it_succeeds_at_the_expected_revision_and_answers_the_new_record
    key = unique_key
    with_client do |client|
      created = client.put(key, "one")
      result = client.compare_and_set(key, "two", expect_revision: created.revision)
      assert_predicate result, :succeeded?
      assert_operator result.revision, :>, created.revision
      assert_equal client.get_record(key), result.current
      assert_equal ["two".b, created.revision, result.revision, 2], result.current.to_a.values_at(1, 2, 3, 4)
    end
  end

  def test_it_fails_at_another_revision_with_the_current_state_and_writes_nothing
    key = unique_key
    with_client do |client|
      created = client.put(key, "one")
      current = client.put(key, "two")
      result = client.compare_and_set(key, "three", expect_revision: created.revision)
      refute_predicate result, :succeeded?
      assert_equal client.get_record(key), result.current
      assert_equal ["two".b, current.revision], [result.current.value, result.current.mod_revision]
      assert_equal current.revision, client.get_record(key).mod_revision
      assert_operator result.revision, :>=, current.revision
    end
  end

  def test_expect_revision_zero_means_only_if_absent
    key = unique_key
    with_client do |client|
      created = client.compare_and_set(key, "first", expect_revision: 0)
      assert_predicate created, :succeeded?
      assert_equal [1, created.revision], [created.current.version, created.current.create_revision]
      again = client.compare_and_set(key, "second", expect_revision: 0)
      refute_predicate again, :succeeded?
      assert_equal "first".b, again.current.value
      assert_equal "first", client.get(key)
    end
  end

  def test_on_a_missing_key_any_other_revision_fails_with_no_current_record
    key = unique_key
    with_client do |client|
      result = client.compare_and_set(key, "v", expect_revision: 5)
      refute_predicate result, :succeeded?
      assert_nil result.current
      assert_nil client.get_record(key)
    end
  end

  def test_exactly_one_of_two_racing_writers_wins_each_round
    key = unique_key
    clients = Array.new(2) { KeyValue::Client.new(KvServerProcess.shared.address) }
    revision = clients.first.put(key, "start").revision
    200.times do |round|
      threads = clients.each_with_index.map do |client, writer|
        Thread.new { client.compare_and_set(key, "round #{round} writer #{writer}", expect_revision: revision) }
      end
      results = threads.map { |thread| value_within(thread) }
      winners, losers = results.partition(&:succeeded?)
      assert_equal [1, 1], [winners.size, losers.size], "round #{round}"
      assert_equal winners.first.current, losers.first.current, "the loser sees the winner's write"
      revision = winners.first.revision
    end
    record = clients.first.get_record(key)
    assert_equal [201, revision], [record.version, record.mod_revision]
  ensure
    clients&.each(&:close)
  end

  def test_a_bad_expected_revision_is_refused_before_sending
    with_client do |client|
      [-1, nil, 2**64, "1"].each do |expect_revision|
        assert_argument_error("expect_revision") { client.compare_and_set("k", "v", expect_revision:) }
      end
    end
  end
end
