# frozen_string_literal: true

require "keyvalue/record"
require "keyvalue/wire"

# KeyValue::PutResult: what a put (on its own, or in a Txn) answers.
module KeyValue
  # - revision: the store revision of the write;
  # - prev: the key's Record before the put, if asked for with prev: true and
  #   the key existed; nil otherwise;
  # - lease: the lease the key is now attached to (0: none); with put(ttl:),
  #   the lease created for that TTL, to keep alive or revoke.
  PutResult = Struct.new(:revision, :prev, :lease, keyword_init: true) do
    # The result of a PutResponse, for a put that asked for +lease+.
    def self.from_proto(response, lease: 0)
      new(revision: Wire.revision(response), prev: Record.from_proto(response.prev_kv),
          lease: response.lease.nonzero? || lease)
    end

    def initialize(...)
      super
      freeze
    end
  end
end
