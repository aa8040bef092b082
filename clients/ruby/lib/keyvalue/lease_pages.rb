# frozen_string_literal: true

require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/lease"
require "keyvalue/wire"

# KeyValue::LeasePages: every live lease, in id order, fetched page by page
# behind Client#lease_list.
module KeyValue
  # Yields a Lease per live lease, asking LeaseList for the next page (after
  # the last id seen) when one runs out, until the server says there are no
  # more. Each page asks for +page_size+ leases (nil: the server's page
  # size, --max-range-page, which also caps it), each with its first +keys+
  # keys (the server caps the keys of a page; more_keys says where it cut).
  class LeasePages
    # +fetch+ calls LeaseList with a request and returns its answer.
    def initialize(fetch, keys, page_size)
      @fetch = fetch
      @keys_limit = Wire.integer("keys", keys, Wire::UINT32)
      @limit = Wire.integer("page_size", page_size, 1..Wire::UINT32.end, nil_ok: true) || 0
    end

    # An Enumerator of Lease, fetching as iteration goes.
    def enumerator
      Enumerator.new { |yielder| each_lease { |lease| yielder << lease } }
    end

    private

    def each_lease
      after = nil
      loop do
        response = @fetch.call(request(after))
        response.leases.each { |lease| yield Lease.from_proto(lease) }
        break if !response.more || response.leases.empty?

        after = response.leases.last.id
      end
    end

    def request(after)
      request = Keyvalue::V1::LeaseListRequest.new(limit: @limit, keys_limit: @keys_limit)
      request.after = after unless after.nil?
      request
    end
  end
end
