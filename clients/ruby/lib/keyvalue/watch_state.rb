# frozen_string_literal: true

# KeyValue::WatchState: where a watch is in its life, and its current call,
# shared between the thread that reads its calls and the threads that wait
# on it, close it or roll it over.
module KeyValue
  # :starting until the server first registers the watch, then :registered;
  # :failed (with the error) or :closed (cancelled) at the end. Every change
  # wakes the threads waiting in #await_registered and #pause.
  class WatchState
    attr_reader :error

    def initialize
      @lock = Mutex.new
      @changed = ConditionVariable.new
      @state = :starting
      @registered = false
      @call = nil
      @rolling = false
      @closed_at = nil
    end

    # Waits until the watch left :starting, for at most +timeout+ seconds
    # (nil: no limit); whether it was registered. Raises the error of a
    # watch that failed before that.
    def await_registered(timeout)
      deadline = timeout && (monotonic + timeout)
      @lock.synchronize do
        wait_while_starting(deadline)
        raise @error if @state == :failed && !@registered

        @registered
      end
    end

    def registered?
      @registered
    end

    def closed?
      @state == :closed
    end

    # Records the server's registration (again, after a resume).
    def registered!
      change { @registered = true }
    end

    # Closes the watch, unless it failed; returns its current call, for the
    # caller to cancel.
    def close!
      change do
        @state = :closed unless @state == :failed
        @closed_at ||= monotonic
        @call
      end
    end

    # Whether the watch is open, or was closed less than +seconds+ ago (the
    # server may not have freed its slot yet).
    def recent?(seconds)
      !closed? || (!@closed_at.nil? && monotonic - @closed_at < seconds)
    end

    # Makes +call+ the watch's current one (a new call is not rolling over);
    # false if the watch is closed.
    def hold(call)
      @lock.synchronize do
        next false if @state == :closed

        @call = call
        @rolling = false
        true
      end
    end

    # Marks the current call as ending to be replaced; returns it, for the
    # caller to cancel (nil if the watch is closed).
    def roll_over!
      @lock.synchronize do
        next nil if @state == :closed

        @rolling = true
        @call
      end
    end

    # Whether the current call was cancelled to be replaced.
    def rolling?
      @rolling
    end

    # Records +error+ as the end of the watch; false if it was closed
    # already (a cancelled call ends with an error nobody waits for).
    def fail!(error)
      change do
        next false if @state == :closed

        @state = :failed
        @error = error
        true
      end
    end

    # Waits +seconds+, or less if the watch is closed meanwhile; whether it
    # is still open.
    def pause(seconds)
      @lock.synchronize do
        @changed.wait(@lock, seconds) unless @state == :closed
        @state != :closed
      end
    end

    private

    def change
      @lock.synchronize do
        result = yield
        @state = :registered if @state == :starting && @registered
        @changed.broadcast
        result
      end
    end

    # Under the lock: waits for a change until the state leaves :starting or
    # +deadline+ passes.
    def wait_while_starting(deadline)
      while @state == :starting
        left = deadline && (deadline - monotonic)
        return if left&.<= 0

        @changed.wait(@lock, left)
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
