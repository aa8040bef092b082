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

  # A watch on a key, a prefix or a range, as Client#watch returns it: the
  # server has registered it already, so every change made after #watch
  # returned is seen. Events come in revision order through #each (an
  # Enumerable) or #next, from whichever thread reads it (one reader at a
  # time); #close cancels it, from any thread.
  #
  #   watch = client.watch("config/", prefix: true)
  #   reader = Thread.new { watch.each { |event| puts event.key } }
  #   client.put("config/a", "1")   # reader sees it
  #   watch.close                   # reader's each returns
  #
  # Leaving #each early (break, return, an exception) closes the watch, so
  # first(n) and take(n) free it. A watch that is never closed is cancelled
  # when Ruby collects it. With resume (the default), a watch that loses its
  # server (a broken connection, a restart) starts again by itself from the
  # revision after the last event it handed over, so no event is lost or
  # repeated; a server that no longer has that revision raises Compacted.
  class Watch
    include Enumerable

    # The handle of +session+ (a WatchSession), for Client#watch.
    def initialize(session)
      @session = session
      @pending = []
      ObjectSpace.define_finalizer(self, self.class.canceller(session))
    end

    # The finalizer that cancels an abandoned watch's session (a Proc that
    # holds the session, not the handle). It runs wherever the collector
    # ran, maybe inside a lock of the session: the cancel goes to a thread
    # (none at exit, when the process takes its calls down anyway).
    def self.canceller(session)
      proc do
        Thread.new { session.cancel }
      rescue ThreadError
        nil
      end
    end

    # The next Event, waiting for it. Raises StopIteration once the watch
    # is closed or its stream ended; Compacted, ServerUnavailable (without
    # resume) or another KeyValue::Error if the watch failed.
    def next
      @pending = @session.next_batch || raise(StopIteration, "the watch is closed") while @pending.empty?
      @pending.shift
    end

    # Yields each Event until the watch is closed (from another thread) or
    # the block leaves early, which closes it. Without a block, an
    # Enumerator.
    def each(&)
      return enum_for(:each) unless block_given?

      finished = false
      begin
        loop_events(&)
        finished = true
      ensure
        close unless finished
      end
      self
    end

    # Whether the server has registered the watch (true for any watch that
    # Client#watch returned).
    def registered?
      @session.registered?
    end

    # Cancels the watch: the server frees it, and #each and #next end.
    # Safe from any thread; calling it again does nothing.
    def close
      @session.cancel
    end
    alias cancel close

    def closed?
      @session.closed?
    end

    # The revision the watch would resume from: one after the last event
    # read from the server.
    def next_revision
      @session.next_revision
    end

    def inspect
      "#<#{self.class.name} next_revision=#{next_revision} #{closed? ? 'closed' : 'open'}>"
    end

    private

    def loop_events
      loop do
        event = begin
          self.next
        rescue StopIteration
          break
        end
        yield event
      end
    end
  end
end
