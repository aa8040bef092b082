# frozen_string_literal: true

require "securerandom"
require "keyvalue/errors"
require "keyvalue/kept_lease"
require "keyvalue/txn"
require "keyvalue/wire"

# KeyValue::Recipes: a lock and an update loop built on the API (what
# python-etcd3's lock and redis-py's transaction(func) offer), mixed into
# Client.
module KeyValue
  # A held lock: its key, the lease it lives on, and the revision that
  # created it, which grows with each new holder (a fencing token: a
  # resource that remembers the highest it saw can refuse an older holder).
  Lock = Struct.new(:name, :lease, :revision, keyword_init: true) do
    def initialize(...)
      super
      freeze
    end
  end

  # Client#lease, #lock and #update; they rely on the rest of the Client.
  module Recipes
    # A lease of +ttl+ seconds kept alive in the background (a KeptLease).
    # With a block, yields it and revokes it when the block ends, however
    # it ends (deleting the keys attached to it), returning the block's
    # value; without one, returns it (close it when done).
    #
    #   client.lease(10) do |lease|
    #     client.put("service/me", "up", lease: lease.id)
    #     ... # the key lives as long as the block runs
    #   end   # revoked: the key is gone
    def lease(ttl)
      kept = KeptLease.new(self, ttl)
      return kept unless block_given?

      begin
        yield kept
      ensure
        kept.close
      end
    end

    # Holds the lock +name+ while the block runs, waiting for it first;
    # yields a Lock and returns the block's value.
    #
    #   client.lock("locks/report", ttl: 10) { ... } # no other holder meanwhile
    #
    # The lock is the key +name+, created in a transaction only if it does
    # not exist (its create_revision is 0), on a lease kept alive while the
    # block runs and revoked at its end, which releases the lock: as etcd's
    # lock, in its simplest form. A holder that dies without releasing it
    # loses it after +ttl+ seconds. Waiting holders watch the key and try
    # again once it is deleted.
    def lock(name, ttl: 10)
      key = Wire.bytes(name)
      holder = SecureRandom.hex(16)
      lease(ttl) do |kept|
        yield acquire(key, holder, kept.id)
      end
    end

    # Sets +key+ to what the block answers for its current value (nil if it
    # does not exist), atomically however many write it at once: reads the
    # key, calls the block, writes the answer with compare_and_set, and if
    # another writer changed the key meanwhile, starts over from what that
    # writer left. The block may run several times, so it should only
    # compute. Returns the successful CompareAndSetResult.
    #
    #   client.update("counter") { |value| (value.to_i + 1).to_s }
    def update(key)
      current = get_record(key)
      loop do
        result = compare_and_set(key, yield(current&.value), expect_revision: current&.mod_revision || 0)
        return result if result.succeeded?

        current = result.current
      end
    end

    private

    def acquire(key, holder, lease_id)
      loop do
        result = txn(compares: [Compare.create_revision(key, :==, 0)],
                     success: [Op.put(key, holder, lease: lease_id)], failure: [Op.get(key)])
        return Lock.new(name: key, lease: lease_id, revision: result.revision) if result.succeeded?

        await_delete(key, result.revision)
      end
    end

    # Waits until +key+, which existed at +revision+, is deleted (or
    # expires). A history too short to replay from there (Compacted) just
    # means trying again.
    def await_delete(key, revision)
      watch(key, start_revision: revision + 1) { |event| break unless event.kind == :put }
    rescue Compacted
      nil
    end
  end
end
