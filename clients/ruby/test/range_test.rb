# frozen_string_literal: true

require "test_helper"

# range (paged transparently) and count.
class RangeTest < Minitest::Test
  include TestHelpers

  def test_range_with_a_prefix_yields_its_records_in_key_order
    prefix = "#{unique_key('dir')}/"
    with_client do |client|
      client.batch_put("#{prefix}b" => "2", "#{prefix}a" => "1", "#{prefix}c" => "3", "#{prefix.chop}0" => "out")
      records = client.range(prefix, prefix: true)
      assert_instance_of Enumerator, records
      assert_equal %w[a b c].map { |k| "#{prefix}#{k}".b }, records.map(&:key)
      assert_equal %w[1 2 3].map(&:b), records.map(&:value)
      assert_equal [1, 1, 1], records.map(&:version)
    end
  end

  def test_keys_only_leaves_values_empty
    prefix = unique_key
    with_client do |client|
      client.put("#{prefix}/k", "value")
      record = client.range(prefix, prefix: true, keys_only: true).first
      assert_equal ["#{prefix}/k".b, ""], [record.key, record.value]
      assert_equal 1, record.version
    end
  end

  def test_range_end_is_exclusive_and_no_end_runs_to_the_end_of_the_keyspace
    prefix = unique_key
    with_client do |client|
      client.batch_put(%w[a b c d].to_h { |k| ["#{prefix}#{k}", k] })
      assert_equal %w[b c].map(&:b), client.range("#{prefix}b", range_end: "#{prefix}d").map(&:value)
      assert_equal %w[c d], client.range("#{prefix}c").take_while { |r| r.key.start_with?(prefix) }.map(&:value)
    end
  end

  def test_nothing_is_fetched_until_the_enumerator_is_used
    prefix = unique_key
    with_client do |client|
      records = client.range(prefix, prefix: true)
      client.put("#{prefix}/late", "v")
      assert_equal ["#{prefix}/late".b], records.map(&:key)
    end
  end

  def test_paging_yields_every_key_exactly_once_in_order
    with_server("--max-range-page", "100") do |client|
      keys = Array.new(2_500) { |i| format("page/%05d", i) }
      keys.shuffle.each_slice(1_000) { |slice| client.batch_put(slice.to_h { |k| [k, "v#{k}"] }) }
      client.put("pagf", "after the prefix")
      # One request answers at most 100 keys, so the enumerator must page.
      one_page = client.txn(compares: [], success: [KeyValue::Op.range("page/", prefix: true)]).results.first
      assert_equal 100, one_page.size

      records = client.range("page/", prefix: true).to_a
      assert_equal keys.map(&:b), records.map(&:key)
      assert_equal keys.map { |k| "v#{k}".b }, records.map(&:value)
      assert_equal 2_500, client.count("page/", prefix: true)
      assert_equal 2_501, client.range.count
    end
  end

  def test_limit_caps_the_records_across_pages
    with_server("--max-range-page", "100") do |client|
      keys = Array.new(250) { |i| format("k%03d", i).b }
      client.batch_put(keys.product([""]).to_h)
      assert_equal keys.first(150), client.range(limit: 150).map(&:key)
      assert_equal keys.first(7), client.range("k", prefix: true, limit: 7).map(&:key)
      assert_equal [], client.range(limit: 0).to_a
      assert_equal keys, client.range(limit: 1_000).map(&:key)
      [-1, "3", 1.5].each { |limit| assert_argument_error("limit") { client.range(limit:) } }
    end
  end

  # Issue 18, bug 2: a limit below the page size used to fetch a whole page
  # and cut it. Each request must ask for no more than is still wanted, and
  # no more than page_size; the server answers that many.
  def test_each_page_asks_for_what_is_still_wanted_at_most_page_size
    with_server("--max-range-page", "100") do |client, server|
      keys = Array.new(250) { |i| format("k%03d", i).b }
      client.batch_put(keys.product(["v"]).to_h)
      stub = Keyvalue::V1::KV::Stub.new(server.address, :this_channel_is_insecure)
      {
        { limit: 1 } => [[1, 1]],
        { limit: 150 } => [[150, 100], [50, 50]],
        { limit: 7, page_size: 3 } => [[3, 3], [3, 3], [1, 1]],
        { page_size: 120 } => [[120, 100], [120, 100], [120, 50]],
        { limit: 2**40 } => [[0, 100], [0, 100], [0, 50]]
      }.each do |options, expected|
        pages = []
        fetch = ->(request) { stub.range(request).tap { |page| pages << [request.limit, page.kvs.size] } }
        scan = KeyValue::RangeScan.new(fetch, KeyValue::Wire.key_range("k", true, nil), options[:limit],
                                       **options.slice(:page_size))
        assert_equal keys.first(options[:limit] || 250), scan.enumerator.map(&:key), options.inspect
        assert_equal expected, pages, options.inspect
      end
    end
  end

  def test_page_size_pages_through_everything_and_must_be_positive
    prefix = "#{unique_key}/"
    with_client do |client|
      client.batch_put(Array.new(7) { |i| ["#{prefix}#{i}", i.to_s] }.to_h)
      assert_equal %w[0 1 2 3 4 5 6].map(&:b), client.range(prefix, prefix: true, page_size: 2).map(&:value)
      assert_equal %w[0 1 2].map(&:b), client.range(prefix, prefix: true, page_size: 2, limit: 3).map(&:value)
      [0, -1, 2**32, "2"].each { |page_size| assert_argument_error("page_size") { client.range(page_size:) } }
    end
  end

  def test_count_counts_without_fetching
    prefix = unique_key
    with_client do |client|
      assert_equal 0, client.count(prefix, prefix: true)
      client.batch_put(%w[a b c].to_h { |k| ["#{prefix}#{k}", k * 1_000] })
      assert_equal 3, client.count(prefix, prefix: true)
      assert_equal 2, client.count("#{prefix}a", range_end: "#{prefix}c")
      assert_operator client.count, :>=, 3
    end
  end
end
