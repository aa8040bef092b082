# frozen_string_literal: true

require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/record"
require "keyvalue/wire"

# KeyValue::RangeScan: the keys of a range or prefix, in key order, fetched
# page by page behind Client#range.
module KeyValue
  # Yields a Record per key, requesting the next page (page_token) when one
  # runs out, until the range or +limit+ is exhausted. Each page asks for no
  # more records than are still wanted (the rest of +limit+) nor than
  # +page_size+; without either it asks for the server's page size
  # (--max-range-page), and the server caps a larger one to that.
  #
  # Pages are read one at a time, every one at the first page's revision
  # (+fields+' revision, or the store's when the first page was read): the
  # server's page token carries it, so a scan is one snapshot, whatever is
  # written while it runs. Keys come in order, each once.
  class RangeScan
    # +fetch+ calls Range with a RangeRequest and returns its RangeResponse;
    # +fields+ are the request's key range, keys_only and revision; +limit+ is the most
    # records to yield and +page_size+ the most per request (nil: no limit,
    # the server's page size).
    def initialize(fetch, fields, limit, page_size: nil)
      @fetch = fetch
      @fields = fields
      @limit = Wire.integer("limit", limit, nil_ok: true)
      @page_size = Wire.integer("page_size", page_size, 1..Wire::UINT32.end, nil_ok: true)
    end

    # An Enumerator over the records; nothing is fetched before it is used.
    def enumerator
      Enumerator.new { |out| each { |record| out << record } }
    end

    def each
      yielded = 0
      token = "".b
      until full?(yielded)
        page = @fetch.call(Keyvalue::V1::RangeRequest.new(**@fields, page_token: token, limit: page_limit(yielded)))
        page.kvs.each do |kv|
          break if full?(yielded)

          yield Record.from_proto(kv)
          yielded += 1
        end
        break if !page.more || page.next_page_token.empty?

        token = page.next_page_token
      end
    end

    private

    # The limit of the next request: what is still wanted, at most a page
    # (0: the server's page size).
    def page_limit(yielded)
      wanted = [@limit && (@limit - yielded), @page_size].compact.min
      wanted.nil? || wanted > Wire::UINT32.end ? 0 : wanted
    end

    def full?(yielded)
      !@limit.nil? && yielded >= @limit
    end
  end
end
