# frozen_string_literal: true

# Conversions from Ruby arguments to fields of keyvalue.v1 requests: keys and
# values as bytes, TTLs in milliseconds, key ranges.
module KeyValue
  # Helpers shared by the client and the Txn builders; not part of the API.
  module Wire
    module_function

    # +string+ as bytes (ASCII-8BIT), the way a protobuf bytes field takes it;
    # nil becomes "".
    def bytes(string)
      string.to_s.b
    end

    # Seconds as whole milliseconds, rounded up so that a short TTL never
    # becomes 0 (which means no TTL on the wire).
    def ttl_ms(seconds)
      unless seconds.is_a?(Numeric) && seconds.positive?
        raise ArgumentError, "ttl must be a number above zero, got #{seconds.inspect}"
      end

      (seconds * 1000).ceil
    end

    # Milliseconds as seconds.
    def seconds(milliseconds)
      milliseconds / 1000.0
    end

    # The key, range_end and prefix fields of a Range, Delete or Watch.
    def key_range(key, prefix, range_end)
      { key: bytes(key), prefix: prefix ? true : false, range_end: bytes(range_end) }
    end

    # The range_end that makes a range of exactly one key.
    def single_key_end(key)
      "#{bytes(key)}\0".b
    end

    # The store revision an answer reflects.
    def revision(response)
      response.header&.revision.to_i
    end
  end
end
