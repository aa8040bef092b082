# frozen_string_literal: true

require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/put_result"
require "keyvalue/record"
require "keyvalue/wire"

# Transactions (Client#txn): the Compare and Op builders, and TxnResult.
#
#   client.txn(compares: [KeyValue::Compare.mod_revision("config", :==, 7)],
#              success: [KeyValue::Op.put("config", "new"), KeyValue::Op.get("config")],
#              failure: [KeyValue::Op.get("config")])
module KeyValue
  # Conditions of a transaction, on one key each. +operator+ is one of :==, :!=,
  # :< and :>. A key that does not exist has version, mod_revision and
  # create_revision 0 (and no value: a value compare on it fails).
  module Compare
    OPERATORS = {
      :== => :EQUAL,
      :!= => :NOT_EQUAL,
      :< => :LESS,
      :> => :GREATER
    }.freeze

    module_function

    def value(key, operator, value)
      build(key, operator, value: Wire.bytes(value))
    end

    def mod_revision(key, operator, revision)
      build(key, operator, mod_revision: Wire.integer("mod_revision", revision))
    end

    def create_revision(key, operator, revision)
      build(key, operator, create_revision: Wire.integer("create_revision", revision))
    end

    def version(key, operator, version)
      build(key, operator, version: Wire.integer("version", version))
    end

    # The key exists.
    def exists(key)
      version(key, :>, 0)
    end

    # The key does not exist.
    def absent(key)
      version(key, :==, 0)
    end

    def build(key, operator, target)
      wire_op = OPERATORS.fetch(operator) do
        raise ArgumentError, "compare operator must be one of #{OPERATORS.keys.join(' ')}, got #{operator.inspect}"
      end
      Keyvalue::V1::Compare.new(key: Wire.bytes(key), op: wire_op, **target)
    end
    private_class_method :build
  end

  # One operation of a transaction: the request, and how to read its answer.
  # Build them with Op.get, Op.range, Op.put and Op.delete.
  class Op
    attr_reader :proto

    # Reads one key; its result is a Record, or nil if the key does not exist.
    def self.get(key)
      request = Keyvalue::V1::RangeRequest.new(key: Wire.bytes(key), range_end: Wire.single_key_end(key))
      new(Keyvalue::V1::Op.new(range: request)) { |response| Record.from_proto(response.range.kvs.first) }
    end

    # Reads a range or prefix (one page: at most +limit+ keys, or the server's
    # --max-range-page); its result is an Array of Records.
    def self.range(key = "", prefix: false, range_end: nil, keys_only: false, limit: nil)
      limit = Wire.integer("limit", limit, Wire::UINT32, nil_ok: true).to_i
      request = Keyvalue::V1::RangeRequest.new(**Wire.key_range(key, prefix, range_end), keys_only:, limit:)
      new(Keyvalue::V1::Op.new(range: request)) { |response| response.range.kvs.map { |kv| Record.from_proto(kv) } }
    end

    # Stores a value; its result is a PutResult.
    def self.put(key, value, lease: 0, prev: false)
      request = Keyvalue::V1::PutRequest.new(key: Wire.bytes(key), value: Wire.bytes(value), prev_kv: prev,
                                             lease: Wire.lease_id("lease", lease))
      new(Keyvalue::V1::Op.new(put: request)) { |response| PutResult.from_proto(response.put, lease:) }
    end

    # Deletes a key, a range or a prefix; its result is the number of keys
    # deleted.
    def self.delete(key, prefix: false, range_end: nil)
      request = Keyvalue::V1::DeleteRequest.new(**Wire.key_range(key, prefix, range_end))
      new(Keyvalue::V1::Op.new(delete: request)) { |response| response.delete.deleted }
    end

    def initialize(proto, &result)
      @proto = proto
      @result = result
    end

    # The result of this operation, from its keyvalue.v1.OpResponse.
    def result(response)
      @result.call(response)
    end

    def inspect
      "#<#{self.class.name} #{@proto.op} #{@proto.public_send(@proto.op).to_h}>"
    end
  end

  # What Client#txn answers:
  # - succeeded?: whether every compare held (the success branch ran);
  # - revision: the store revision after the transaction;
  # - results: one per operation of the branch that ran, in order (see Op).
  TxnResult = Struct.new(:succeeded, :revision, :results, keyword_init: true) do
    alias_method :succeeded?, :succeeded

    # The TxnRequest of +compares+ (Compare) and the Op lists.
    def self.request(compares, success, failure)
      Keyvalue::V1::TxnRequest.new(compare: compares, success: success.map(&:proto),
                                   failure: failure.map(&:proto))
    end

    # The result of a TxnResponse to a request with +success+ and +failure+.
    def self.from_proto(response, success, failure)
      ops = response.succeeded ? success : failure
      results = ops.zip(response.responses).map { |op, op_response| op.result(op_response) }
      new(succeeded: response.succeeded, revision: Wire.revision(response), results:)
    end

    def initialize(...)
      super
      freeze
    end
  end
end
