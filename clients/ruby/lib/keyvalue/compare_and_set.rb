# frozen_string_literal: true

require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/record"
require "keyvalue/wire"

# KeyValue::CompareAndSetResult, and the conditional Put behind
# Client#compare_and_set.
module KeyValue
  # - succeeded?: whether the key was still at the expected revision, and so
  #   was written;
  # - revision: the store revision of the write, or the store revision the
  #   failed answer was read at;
  # - current: the key's state after the call: the Record just written on
  #   success; on failure the Record that made it fail (nil: the key does not
  #   exist).
  #
  # A failed condition is an answer, not an error.
  CompareAndSetResult = Struct.new(:succeeded, :revision, :current, keyword_init: true) do
    alias_method :succeeded?, :succeeded

    # The PutRequest that stores +value+ under +key+ only if the key's
    # mod_revision is +expect_revision+ (0: only if the key does not exist).
    def self.request(key, value, expect_revision)
      condition = Keyvalue::V1::Condition.new(mod_revision: Wire.integer("expect_revision", expect_revision))
      Keyvalue::V1::PutRequest.new(key: Wire.bytes(key), value: Wire.bytes(value), prev_kv: true, condition:)
    end

    # The result of the answer to +request+.
    def self.from_proto(request, response)
      revision = Wire.revision(response)
      previous = Record.from_proto(response.prev_kv)
      return new(succeeded: false, revision:, current: previous) unless response.succeeded

      written = Record.new(key: request.key, value: request.value, mod_revision: revision, lease: 0,
                           create_revision: previous&.create_revision || revision,
                           version: (previous&.version || 0) + 1)
      new(succeeded: true, revision:, current: written)
    end

    def initialize(...)
      super
      freeze
    end
  end
end
