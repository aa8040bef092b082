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
  # and tries again for a short while, as Python's reference counting frees
  # a dropped watch at once.
  class WatchRegistry
    # How long a refused watch is retried after collecting abandoned ones
    # (the server frees a cancelled watch's slot shortly after it learns of
    # the cancellation), and how often.
    RECLAIM_SECONDS = 2.0
    RECLAIM_STEP = 0.02
    # How long the finalizers of collected watches get to cancel them.
    FINALIZE_SECONDS = 0.5
    private_constant :RECLAIM_SECONDS, :RECLAIM_STEP, :FINALIZE_SECONDS

    # +timeout+: seconds a new watch may take to be registered (nil: no
    # limit); +address+ names the server in errors.
    def initialize(address, timeout)
      @address = address
      @timeout = timeout
      @lock = Mutex.new
      @sessions = []
    end

    # A Watch of the session the block starts, once registered; ensures the
    # session is cancelled if it is not. Raises what its start raised.
    def start(&)
      Watch.new(register(&))
    rescue ResourceExhausted
      raise unless reclaim

      retry_refused(&)
    end

    # Cancels every watch still open (Client#close).
    def close_all
      @lock.synchronize { @sessions.dup }.each(&:cancel)
    end

    private

    # The session the block starts, once registered within the timeout
    # (its first call, or the revision read before it, timing out too).
    def register
      session = yield
      raise no_answer unless session.await_registered(@timeout)

      @lock.synchronize { @sessions = @sessions.reject(&:closed?) << session }
      session
    rescue ServerUnavailable => e
      session&.cancel
      raise e.code == GRPC::Core::StatusCodes::DEADLINE_EXCEEDED ? no_answer : e
    rescue StandardError, Interrupt
      session&.cancel
      raise
    end

    def no_answer
      KeyValue.error_for_status(GRPC::Core::StatusCodes::DEADLINE_EXCEEDED,
                                "no answer from #{@address} within #{@timeout}s to a watch", api: :v1)
    end

    # Collects the garbage if some watch of this client is still open;
    # whether that closed any.
    def reclaim
      open = @lock.synchronize do
        @sessions.reject!(&:closed?)
        @sessions.size
      end
      return false if open.zero?

      GC.start
      # Finalizers run soon after, and cancel on threads of their own.
      deadline = monotonic + FINALIZE_SECONDS
      until (closed = open_count < open) || monotonic > deadline
        sleep RECLAIM_STEP
      end
      closed
    end

    def open_count
      @lock.synchronize { @sessions.count { |session| !session.closed? } }
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def retry_refused(&)
      deadline = monotonic + RECLAIM_SECONDS
      begin
        Watch.new(register(&))
      rescue ResourceExhausted
        raise if monotonic > deadline

        sleep RECLAIM_STEP
        retry
      end
    end
  end
end
