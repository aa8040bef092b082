# frozen_string_literal: true

# KeyValue::Record: one key and its state, as the full API returns it.
module KeyValue
  # A key, its value and its revisions. Keys and values are binary Strings
  # (ASCII-8BIT); compare with "text".b, or force_encoding what you stored.
  #
  # - create_revision: the store revision of the write that created the key;
  # - mod_revision: the store revision of the last write to it;
  # - version: puts since it was created (1 after the first);
  # - lease: the lease it is attached to (0: none).
  #
  # Records are frozen, like a Data value.
  Record = Struct.new(:key, :value, :create_revision, :mod_revision, :version, :lease, keyword_init: true) do
    # The record for a keyvalue.v1.KeyValue message; nil for nil.
    def self.from_proto(message)
      return nil if message.nil?

      new(key: message.key, value: message.value, create_revision: message.create_revision,
          mod_revision: message.mod_revision, version: message.version, lease: message.lease)
    end

    def initialize(...)
      super
      freeze
    end
  end
end
