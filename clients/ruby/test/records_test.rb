# frozen_string_literal: true

require "test_helper"

# get_record and put of the full API, and how they meet the tutorial's get
# and set over the same data.
class RecordsTest < Minitest::Test
  include TestHelpers

  def test_a_value_set_through_the_tutorial_api_is_a_record_of_the_full_api
    key = unique_key
    with_client do |client|
      client.set(key, "sunny \u00e9")
      record = client.get_record(key)
      assert_instance_of KeyValue::Record, record
      assert_equal key.b, record.key
      assert_equal "sunny \u00e9".b, record.value
      assert_equal Encoding::ASCII_8BIT, record.value.encoding
      assert_equal [1, 0], [record.version, record.lease]
      assert_equal record.create_revision, record.mod_revision
      assert_operator record.mod_revision, :>, 0
    end
  end

  def test_a_value_put_through_the_full_api_is_read_by_the_tutorial_get
    key = "cl\u00e9-#{unique_key}"
    with_client do |client|
      client.put(key, "valeur \u00e0")
      assert_equal "valeur \u00e0", client.get(key)
      client.set(key, "again")
      assert_equal 2, client.get_record(key).version
    end
  end

  def test_a_missing_key_is_nil_not_an_error
    with_client { |client| assert_nil client.get_record(unique_key("never-set")) }
  end

  def test_put_answers_its_revision_and_the_previous_record_when_asked
    key = unique_key
    with_client do |client|
      first = client.put(key, "one")
      assert_nil first.prev
      assert_equal 0, first.lease
      second = client.put(key, "two", prev: true)
      assert_operator second.revision, :>, first.revision
      assert_equal KeyValue::Record.new(key: key.b, value: "one".b, create_revision: first.revision,
                                        mod_revision: first.revision, version: 1, lease: 0), second.prev
      assert_nil client.put(key, "three").prev
      record = client.get_record(key)
      assert_equal ["three".b, first.revision, 3], [record.value, record.create_revision, record.version]
      assert_operator record.mod_revision, :>, second.revision
    end
  end

  def test_every_write_bumps_the_store_wide_revision
    with_client do |client|
      revisions = Array.new(3) { client.put(unique_key, "v").revision }
      assert_equal revisions.sort, revisions
      assert_equal 3, revisions.uniq.size
      client.set(unique_key, "tutorial")
      assert_operator client.put(unique_key, "v").revision, :>=, revisions.last + 2
    end
  end

  def test_binary_keys_and_values_keep_every_byte
    key = "\x00\xFF\xFEbin-#{unique_key}".b
    value = (0..255).map(&:chr).join.b
    with_client do |client|
      client.put(key, value)
      record = client.get_record(key)
      assert_equal [key, value], [record.key, record.value]
      assert_equal [key], client.range(key, prefix: true).map(&:key)
      assert_equal [value], client.batch_get([key]).map(&:value)
      assert_equal 1, client.delete(key)
      assert_nil client.get_record(key)
    end
  end

  def test_the_tutorial_get_refuses_a_binary_value
    key = unique_key
    with_client do |client|
      client.put(key, "\xFF\xFE".b)
      error = assert_raises(KeyValue::RequestFailed) { client.get(key) }
      assert_equal GRPC::Core::StatusCodes::FAILED_PRECONDITION, error.code
    end
  end

  def test_bad_input_raises_invalid_argument_or_argument_error
    with_client do |client|
      assert_equal "key is empty", assert_raises(KeyValue::InvalidArgument) { client.put("", "v") }.message
      assert_raises(KeyValue::InvalidArgument) { client.delete("a", prefix: true, range_end: "b") }
      assert_raises(KeyValue::InvalidArgument) { client.delete("b", range_end: "a") }
      [0, -1, Float::INFINITY, Float::NAN, 1e20, "10"].each do |ttl|
        assert_argument_error("ttl") { client.put(unique_key, "v", ttl:) }
      end
      [-1, 2**63, "1", 1.0].each { |lease| assert_argument_error("lease") { client.put(unique_key, "v", lease:) } }
    end
  end

  def test_records_are_frozen_values
    record = KeyValue::Record.new(key: "k", value: "v", create_revision: 1, mod_revision: 2, version: 2, lease: 0)
    assert_predicate record, :frozen?
    assert_raises(FrozenError) { record.value = "w" }
  end

  def test_the_full_api_also_refuses_calls_on_a_closed_client
    client = KeyValue::Client.open(KvServerProcess.shared.address)
    client.close
    assert_raises(IOError) { client.get_record("k") }
    assert_raises(IOError) { client.watch("k") { flunk "no event expected" } }
  end
end
