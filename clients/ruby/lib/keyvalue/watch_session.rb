# frozen_string_literal: true

require "forwardable"
require "grpc"
require "keyvalue/errors"
require "keyvalue/watch_call"
require "keyvalue/watch_state"

# KeyValue::WatchSession: the thread behind a Watch, which reads its calls,
# hands their events over, and resumes after a disconnect.
module KeyValue
  # Runs the Watch calls of one watch on a thread of its own (the grpc gem's
  # blocking reads ignore signals; a wait on a queue or a condition does
  # not). The first call must be registered by the server (#await_registered);
  # after that, with resume, a call that ends because the connection broke or
  # the server stopped is replaced by a new one from the revision after the
  # last event handed over, with a backoff while the server is unreachable:
  # no event is lost or repeated. Any other failure (Compacted among them)
  # ends the session and is raised by #next_batch. A resumed call, once
  # registered, is kept only if the server's revision has not gone back
  # below the last event handed over (a memory server restarted without its data): it counts
  # revisions again, and watching on would skip its writes until it got
  # back there; Compacted is raised instead.
  #
  # The session holds no reference to the Watch handle, so that an abandoned
  # handle can be collected, and its finalizer can #cancel the session.
  class WatchSession
    extend Forwardable

    # Seconds between attempts to resume, doubling up to the maximum.
    FIRST_BACKOFF = 0.05
    MAX_BACKOFF = 1.0
    private_constant :FIRST_BACKOFF, :MAX_BACKOFF

    # The revision the next call starts from (0: from now, for a watch
    # without resume that has seen no event).
    attr_reader :next_revision

    # +open+ starts a WatchCall from a start revision; +now+ (with resume
    # and no start revision) answers the store's current revision, so that
    # the watch has a revision to resume from before any event came.
    def initialize(open:, start_revision:, resume:, now:)
      @open = open
      @next_revision = start_revision
      @resume = resume
      @now = now
      @state = WatchState.new
      # One batch of events waits at most: a slow reader slows the stream
      # (gRPC flow control) rather than filling memory.
      @batches = SizedQueue.new(1)
      Thread.new { run }
    end

    # Waits until the server has registered the watch: true; false if
    # +timeout+ seconds (nil: no limit) passed first. Raises the error of a
    # watch that failed to start.
    def_delegators :@state, :await_registered, :registered?, :closed?

    # Whether the watch is open, or was closed less than +seconds+ ago.
    def_delegators :@state, :recent?

    # The next Array of Events (one revision's, in order); nil once the
    # session is closed or the stream ended. Raises the error that ended it.
    def next_batch
      batch = @batches.pop
      raise batch if batch.is_a?(Exception)
      return nil if closed?

      batch
    end

    # Ends the current call so that a new one replaces it, from the revision
    # after the last event handed over (with resume only): the connection
    # is going away (the server sent GOAWAY as it stops gracefully, and
    # would keep serving this stream for its whole shutdown grace).
    def roll_over
      @state.roll_over!&.cancel if @resume
      nil
    end

    # Stops the watch: cancels its call (the server frees the watch) and
    # ends #next_batch. Harmless if done already; safe from any thread.
    def cancel
      call = @state.close!
      @batches.close
      call&.cancel
      nil
    end

    private

    def run
      catch(:closed) do
        @next_revision = @now.call + 1 if @resume && @next_revision.zero?
        resume_loop
      end
    rescue StandardError => e
      hand_over(e)
    ensure
      @batches.close
    end

    # Calls after calls, while resume asks for them: the next at once after
    # a call the server ended, after a growing backoff while it is away.
    def resume_loop
      backoff = FIRST_BACKOFF
      loop do
        attempt
        return unless @resume # the server ended the stream

        backoff = FIRST_BACKOFF
        pause(backoff)
      rescue ServerUnavailable
        raise unless @resume && registered?

        pause(backoff)
        backoff = [backoff * 2, MAX_BACKOFF].min
      rescue RequestFailed => e
        raise unless rolled_over?(e)

        pause(FIRST_BACKOFF)
      end
    end

    # Whether +error+ is the cancellation of a call that #roll_over ended.
    def rolled_over?(error)
      error.code == GRPC::Core::StatusCodes::CANCELLED && @state.rolling?
    end

    # One call, from the next revision: waits for its registration, then
    # hands its events over until it ends. Raises what ended it, unless the
    # server ended it cleanly (it is stopping).
    def attempt
      resuming = registered?
      call = @open.call(@next_revision)
      unless @state.hold(call)
        call.cancel
        throw :closed
      end
      headers = call.await_headers
      @state.registered! if headers
      check_server_revision(call) if headers && resuming
      call.each_response do |response|
        @state.registered!
        deliver(response)
      end
    end

    # Once a resumed +call+ is registered (so that a server that restarts
    # after the check ends the call, and the next resume checks again):
    # raises Compacted if the server is at a revision below the last event
    # handed over (it lost its history). The call is cancelled if it fails.
    def check_server_revision(call)
      KeyValue.check_history(@now.call, @next_revision - 1)
    rescue StandardError
      call.cancel
      raise
    end

    def deliver(response)
      events = response.events.map { |event| Event.from_proto(event) }
      return if events.empty?

      @batches.push(events)
      @next_revision = events.last.revision + 1
    rescue ClosedQueueError
      throw :closed
    end

    # Hands the error that ended the watch to its reader, unless the watch
    # was closed (a cancelled call ends with an error nobody waits for).
    def hand_over(error)
      @batches.push(error) if @state.fail!(error)
    rescue ClosedQueueError
      nil
    end

    def pause(seconds)
      throw :closed unless @state.pause(seconds)
    end
  end
end
