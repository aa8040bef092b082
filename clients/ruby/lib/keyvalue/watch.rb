# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"
require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/record"
require "keyvalue/stream"

# Watch (Client#watch): KeyValue::Event, and the streaming call that yields
# them and is cancelled when its consumer stops.
module KeyValue
  # One change to a key:
  # - kind: :put, :delete (deleted or its lease revoked) or :expire (its
  #   lease ran out);
  # - record: for :put the key's new state; for :delete and :expire the key,
  #   an empty value, and mod_revision the revision of the deletion.
  Event = Struct.new(:kind, :record, keyword_init: true) do
    # The event of a keyvalue.v1.Event; a kind this client does not know
    # stays the Integer on the wire.
    def self.from_proto(event)
      kind = event.kind.is_a?(Symbol) ? event.kind.downcase : event.kind
      new(kind:, record: Record.from_proto(event.kv))
    end

    def key
      record.key
    end

    # The store revision of the change.
    def revision
      record.mod_revision
    end

    def initialize(...)
      super
      freeze
    end
  end

  # Runs one Watch call and yields its events in revision order. However the
  # consumer stops (break, return, an exception, Ctrl-C or another signal,
  # or the end of the stream), the call is cancelled, so the server closes
  # the watch and frees its slot (--max-watchers). The call is read through
  # a Stream, on a thread of its own, so that a signal interrupts the wait.
  module Watch
    # Yields each Event of the Watch +request+ made through +stub+ (a
    # Keyvalue::V1::KV::Stub). The stream has no deadline: it runs until the
    # consumer stops or the server goes away. +metadata+ goes with the call
    # (the client's token). Raises Compacted if the start revision is older
    # than the server's history, ResourceExhausted at --max-watchers.
    def self.each(stub, request, metadata: {})
      stream = Stream.new(stub.watch(request, return_op: true, metadata:))
      while (response = stream.next)
        response.events.each { |event| yield Event.from_proto(event) }
      end
    ensure
      stream&.close
    end
  end
end
