# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"
require "keyvalue/watch"
require "keyvalue/watch_session"

# KeyValue::WatchRegistry: the watches a Client started, so that it can wait
# for their registration, reclaim abandoned ones, and stop them all.
module KeyValue
  # A watch's slot on the server (--max-watchers) is held until its call is
  # cancelled. A Watch handle that its program dropped without closing it
  # (watch.next, then nothing) is cancelled by its finalizer, but only once
  # Ruby collects it, which may be much later. So when the server refuses a
  # watch at its limit while this client has watches open, the registry
  # runs the garbage collector (whose finalizers cancel the dropped ones)
  # and tries again for up to RECLAIM_SECONDS, as Python's reference
  # counting frees a dropped watch at once. A client whose open watches are
  # all in use waits that long before it raises ResourceExhausted.
  class WatchRegistry
    # How long a refused watch is retried after collecting abandoned ones
    # (the server frees a cancelled watch's slot shortly after it learns of
    # the cancellation), and how often.
    RECLAIM_SECONDS = 2.0
    RECLAIM_STEP = 0.05
    # How often the collector runs meanwhile (a stale reference to a
    # dropped watch on a stack may outlive one collection).
    COLLECT_EVERY = 0.25
    # How often the monitor checks whether watches are still open.
    MONITOR_STEP = 1.0
    private_constant :RECLAIM_SECONDS, :RECLAIM_STEP, :COLLECT_EVERY, :MONITOR_STEP

    # The watches of +connection+ (a Connection), whose timeout is how long
    # a new watch may take to be registered.
    def initialize(connection)
      @connection = connection
      @timeout = connection.timeout
      @lock = Mutex.new
      @sessions = []
      @monitor = nil
    end

    # A Watch of the session the block starts, once registered; ensures the
    # session is cancelled if it is not. Raises what its start raised; a
    # refusal at --max-watchers only once collecting has had its chance. The
    # start of a watch is safe to repeat: the connection's RetryPolicy
    # retries it.
    def start(&)
      @connection.with_retries(true) { start_reclaiming(&) }
    end

    # Cancels every watch still open (Client#close).
    def close_all
      @lock.synchronize { @sessions.dup }.each(&:cancel)
    end

    private

    # #start without retries.
    def start_reclaiming(&)
      deadline = nil
      collected = nil
      begin
        Watch.new(register(&))
      rescue ResourceExhausted
        # Only a client with watches open may have dropped some; one that
        # closed some just now waits for the server to free their slots.
        deadline ||= reclaimable? ? monotonic + RECLAIM_SECONDS : 0
        raise if monotonic > deadline

        collected = collect(collected)
        sleep RECLAIM_STEP
        retry
      end
    end

    # The session the block starts, once registered within the timeout
    # (its first call, or the revision read before it, timing out too).
    def register
      session = yield
      raise no_answer unless session.await_registered(@timeout)

      track(session)
    rescue ServerUnavailable => e
      session&.cancel
      raise e.code == GRPC::Core::StatusCodes::DEADLINE_EXCEEDED ? no_answer : e
    rescue StandardError, Interrupt
      session&.cancel
      raise
    end

    # Keeps +session+ among the open ones, watched by the monitor; returns it.
    def track(session)
      @lock.synchronize do
        @sessions = @sessions.select { |kept| kept.recent?(RECLAIM_SECONDS) } << session
        @monitor ||= Thread.new { monitor }
      end
      session
    end

    # DeadlineExceeded, or ServerUnavailable if there was no connection.
    def no_answer
      code = GRPC::Core::StatusCodes::DEADLINE_EXCEEDED
      return ServerUnavailable.new(code, "no connection to #{@connection.address} within #{@timeout}s") unless
        @connection.connected?

      DeadlineExceeded.new(code, "no answer from #{@connection.address} within #{@timeout}s to a watch")
    end

    # Runs the collector (whose finalizers cancel the watches their
    # programs dropped) unless it ran less than COLLECT_EVERY seconds ago
    # (at +last+); when it last ran.
    def collect(last)
      now = monotonic
      return last if last && now - last < COLLECT_EVERY

      GC.start
      now
    end

    # While watches are open: when the channel leaves READY (the server
    # sent GOAWAY, or the connection broke), rolls every watch over to a new
    # call. A server stopping gracefully keeps serving open streams for its
    # whole shutdown grace; the watches would learn of the restart only
    # when it exits.
    def monitor
      state = @connection.state
      until stop_monitor?
        @connection.await_state_change(state, MONITOR_STEP)
        now = @connection.state
        open_sessions.each(&:roll_over) if state == GRPC::Core::ConnectivityStates::READY && state != now
        state = now
      end
    rescue StandardError # the channel was closed
      @lock.synchronize { @monitor = nil }
    end

    def open_sessions
      @lock.synchronize { @sessions.reject(&:closed?) }
    end

    # Whether the monitor may end (no watch is open); forgets it if so.
    def stop_monitor?
      @lock.synchronize do
        next false if @sessions.any? { |session| !session.closed? }

        @monitor = nil
        true
      end
    end

    # Whether a refusal at --max-watchers may pass: some watch of this
    # client is open, or was closed a moment ago.
    def reclaimable?
      @lock.synchronize { @sessions.any? { |session| session.recent?(RECLAIM_SECONDS) } }
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
