# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"
require "keyvalue/lease"
require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/record"
require "keyvalue/stream"
require "keyvalue/wire"

# Snapshot (Client#snapshot): a consistent copy of every key and lease, at one
# revision, streamed in chunks as `kv backup` reads it.
module KeyValue
  # One Snapshot call. The revision and the leases come with the first chunk,
  # read when the snapshot starts; #each then yields every key of the copy as
  # a Record, once, in key order, reading the following chunks (1000 keys
  # each) as it goes. Writes made meanwhile are not in the copy.
  #
  # - revision: the store revision the copy is at;
  # - leases: every lease of the copy, as frozen Leases (id, and ttl: the TTL
  #   it was granted with, in seconds; remaining is nil, a copy does not
  #   record it).
  #
  # The records can be read once, like an IO: an Enumerable method that stops
  # early (first(n), take(n), each with break) leaves the rest for the next.
  # A stream that ends before the server's last chunk raises
  # ServerUnavailable, so an #each that returns has yielded every key
  # (complete? is then true). #close cancels the stream; Client#snapshot with
  # a block closes it when the block ends. The stream has no deadline; it is
  # read through a Stream, on a thread of its own, so that a signal
  # interrupts a wait for the next chunk.
  class Snapshot
    include Enumerable

    attr_reader :revision, :leases

    # Starts the Snapshot call through +stub+ (a Keyvalue::V1::KV::Stub),
    # with +metadata+ (the client's token), and reads its first chunk.
    # Raises PermissionDenied for a token confined to a prefix (a copy holds
    # every key), ServerUnavailable if the server cannot be reached.
    def self.start(stub, metadata: {})
      new(Stream.new(stub.snapshot(Keyvalue::V1::SnapshotRequest.new, return_op: true, metadata:)))
    end

    # +stream+ is the Stream of the call's SnapshotChunks; see Snapshot.start.
    def initialize(stream)
      @stream = stream
      @pending = []
      @complete = false
      @closed = false
      first = first_chunk
      @revision = Wire.revision(first)
      @leases = first.leases.map { |lease| Lease.new(id: lease.id, ttl: Wire.seconds(lease.ttl_ms), remaining: nil) }
      @leases.freeze
      accept(first)
    end

    # Yields each Record of the copy not yielded yet, in key order; without a
    # block, an Enumerator. Raises a KeyValue::Error if the stream fails.
    def each
      return enum_for(:each) unless block_given?

      while (record = next_record)
        yield record
      end
      self
    end

    # Whether the server's last chunk has arrived: every key was received.
    def complete?
      @complete
    end

    # Cancels the stream (harmless once it is complete); #each then ends after
    # the records already received. Calling it again does nothing.
    def close
      return if @closed

      @closed = true
      @stream.close
    end

    def closed?
      @closed
    end

    def inspect
      state = if @complete then "complete"
              elsif @closed then "closed"
              else
                "open"
              end
      "#<#{self.class.name} revision=#{@revision} leases=#{@leases.size} #{state}>"
    end

    private

    def first_chunk
      read_chunk
    rescue StandardError
      close
      raise
    end

    # The next Record, reading chunks as needed; nil after the last one, or
    # once closed.
    def next_record
      while @pending.empty?
        return nil if @complete || @closed

        accept(read_chunk)
      end
      @pending.shift
    end

    def read_chunk
      @stream.next or raise KeyValue.error_for_status(GRPC::Core::StatusCodes::UNAVAILABLE,
                                                      "the server ended the snapshot before it was complete", api: :v1)
    end

    def accept(chunk)
      if Wire.revision(chunk) != @revision
        close
        raise KeyValue.error_for_status(GRPC::Core::StatusCodes::DATA_LOSS,
                                        "the snapshot's chunks are at different revisions " \
                                        "(#{@revision}, then #{Wire.revision(chunk)})", api: :v1)
      end
      @pending.concat(chunk.kvs.map { |kv| Record.from_proto(kv) })
      return unless chunk.done

      @complete = true
      # Nothing follows the last chunk but the status: free the call now.
      @stream.close
    end
  end
end
