# frozen_string_literal: true

# Conversions from Ruby arguments to fields of requests: keys and values as
# bytes (keyvalue.v1) or UTF-8 text (the tutorial's simplekeyvalue), TTLs in
# milliseconds, key ranges.
module KeyValue
  # Helpers shared by the client and the Txn builders; not part of the API.
  module Wire
    module_function

    # +string+ as bytes (ASCII-8BIT), the way a protobuf bytes field takes it;
    # nil becomes "".
    def bytes(string)
      string.to_s.b
    end

    # +string+ as UTF-8 text, the way a protobuf string field takes it (nil
    # becomes ""): a String in another encoding is transcoded, and a binary
    # (ASCII-8BIT) one holding valid UTF-8 is taken as UTF-8. Anything that is
    # not valid text raises ArgumentError naming +name+, before it is sent
    # (the server would refuse the whole message).
    def text(name, string)
      string = string.to_s
      utf8 = begin
        string.encoding == Encoding::BINARY ? string.dup.force_encoding(Encoding::UTF_8) : string.encode("UTF-8")
      rescue EncodingError # not valid in its own encoding, or with no UTF-8 form
        nil
      end
      return utf8 if utf8&.valid_encoding?

      raise ArgumentError, "#{name} must be valid UTF-8 text, got a String (encoding #{string.encoding}) that is " \
                           "not: the tutorial's get and set send protobuf strings (put and get_record take any bytes)"
    end

    # The longest timeout: a year (the grpc gem cannot take deadlines much
    # further off; nil is no deadline at all).
    MAX_TIMEOUT = 365 * 24 * 3600

    # What an unsigned field (a revision, a version) can hold.
    UINT64 = (0..((2**64) - 1))
    # What a Range's limit can hold.
    UINT32 = (0..((2**32) - 1))
    # Lease ids: positive int64s, and 0 for none.
    LEASE_IDS = (0..((2**63) - 1))
    # The longest TTL whose milliseconds fit the uint64 field (the server
    # allows a year: it refuses longer ones with InvalidArgument).
    MAX_TTL_SECONDS = UINT64.end / 1000

    # +value+ if it is an Integer in +range+ (or nil, with nil_ok); else
    # ArgumentError naming +name+.
    def integer(name, value, range = UINT64, nil_ok: false)
      check(name, value, nil_ok, "an Integer from #{range.begin} to #{range.end}") do
        value.is_a?(Integer) && range.cover?(value)
      end
    end

    # +value+ if it is a lease id (0: none); else ArgumentError naming +name+.
    def lease_id(name, value)
      integer(name, value, LEASE_IDS)
    end

    # +value+ if it is a number of seconds above zero and at most +max+ (so
    # neither infinite nor NaN), or nil with nil_ok; else ArgumentError naming
    # +name+.
    def duration(name, value, max, nil_ok: false)
      check(name, value, nil_ok, "a number of seconds above zero, at most #{max}") do
        value.is_a?(Numeric) && value.real? && value.positive? && value <= max
      end
    end

    # +value+ if the block holds for it (or it is nil, with nil_ok); else
    # ArgumentError naming +name+ and saying it must be +allowed+.
    def check(name, value, nil_ok, allowed)
      return value if (nil_ok && value.nil?) || yield

      raise ArgumentError, "#{name} must be #{'nil or ' if nil_ok}#{allowed}, got #{value.inspect}"
    end
    private_class_method :check

    # Seconds as whole milliseconds, rounded up so that a short TTL never
    # becomes 0 (which means no TTL on the wire).
    def ttl_ms(seconds)
      (duration("ttl", seconds, MAX_TTL_SECONDS) * 1000).ceil
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
