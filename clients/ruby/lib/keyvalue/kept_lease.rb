# frozen_string_literal: true

require "keyvalue/errors"

# KeyValue::KeptLease: a lease kept alive in the background while a block
# runs (Client#lease), revoked when it ends.
module KeyValue
  # Granted on creation; a thread of its own restarts its TTL three times per
  # TTL (after a failed keep-alive, the server unreachable, it tries again
  # every tenth of the TTL); #close stops that and revokes the lease, which
  # deletes the keys attached to it. If the lease is lost meanwhile (it
  # expired because the server was unreachable for a whole TTL, or someone
  # revoked it), #lost says why, and its keys are gone.
  class KeptLease
    # id: the lease id, for put(lease:), batch_put(lease:), Op.put(lease:);
    # ttl: its TTL in seconds; keep_alives: how many succeeded so far; lost:
    # the LeaseNotFound that ended it, or nil while it lives.
    attr_reader :id, :ttl, :keep_alives, :lost

    # Grants a lease of +ttl+ seconds through +client+ and starts keeping it.
    def initialize(client, ttl)
      @client = client
      lease = client.lease_grant(ttl)
      @id = lease.id
      @ttl = lease.ttl
      @keep_alives = 0
      @lost = nil
      @lock = Mutex.new
      @wake = ConditionVariable.new
      @closed = false
      @keeper = Thread.new { keep }
    end

    def lost?
      !@lost.nil?
    end

    def closed?
      @closed
    end

    # Stops keeping the lease and revokes it (unless it was lost); returns
    # how many keys that deleted. Calling it again does nothing (0).
    def close
      was_closed = @lock.synchronize do
        closed = @closed
        @closed = true
        @wake.broadcast
        closed
      end
      return 0 if was_closed

      @keeper.join
      revoke
    end

    def inspect
      "#<#{self.class.name} #{@id} ttl=#{@ttl} #{state}>"
    end

    private

    def state
      return "lost" if lost?

      @closed ? "revoked" : "kept"
    end

    def keep
      wait = @ttl / 3.0
      while pause(wait)
        wait = keep_alive_once
        break if wait.nil?
      end
    end

    # One keep-alive; the wait before the next (nil: the lease is lost).
    def keep_alive_once
      @client.lease_keep_alive(@id, timeout: @ttl / 3.0)
      @keep_alives += 1
      @ttl / 3.0
    rescue LeaseNotFound => e
      @lost = e
      nil
    rescue Error
      @ttl / 10.0
    rescue IOError # the client was closed
      nil
    end

    # Waits +seconds+ unless the lease is closed meanwhile; whether it is
    # still open.
    def pause(seconds)
      @lock.synchronize do
        @wake.wait(@lock, seconds) unless @closed
        !@closed
      end
    end

    def revoke
      return 0 if lost? || @client.closed?

      @client.lease_revoke(@id)
    rescue LeaseNotFound
      0
    end
  end
end
