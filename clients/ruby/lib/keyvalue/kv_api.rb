# frozen_string_literal: true

require "keyvalue/compare_and_set"
require "keyvalue/lease"
require "keyvalue/lease_pages"
require "keyvalue/proto/keyvalue/v1/kv_pb"
require "keyvalue/put_result"
require "keyvalue/range_scan"
require "keyvalue/record"
require "keyvalue/txn"
require "keyvalue/wire"

# KeyValue::KVAPI: the methods of KeyValue::Client that speak the full
# keyvalue.v1.KV API (client.rb holds the connection and the tutorial's get
# and set).
module KeyValue
  # Mixed into Client, whose private call_v1 (one unary call, errors mapped),
  # start_watch (a registered Watch) and start_snapshot (the Snapshot stream)
  # it relies on.
  #
  # Keys and values are binary Strings: any String is sent as its bytes, and
  # what comes back is ASCII-8BIT. A missing key is nil or an empty answer,
  # never an error.
  #
  # Every unary call takes options: timeout: seconds for this call (nil: no
  # deadline; default the client's), and, for writes, idempotent: true,
  # which lets the client's RetryPolicy repeat it (reads are always safe to
  # repeat). A call that timed out raises DeadlineExceeded: a write may
  # have happened; one that could not connect raises ServerUnavailable: it
  # did not.
  #
  # Reads take revision: N, the keyspace as it was at revision N (0, the
  # default: now). Below the compacted revision they raise Compacted (whose
  # compacted_revision is the oldest still readable); above the store's
  # revision, FutureRevision.
  module KVAPI
    # The Record of +key+, or nil if it does not exist (at +revision+, if given).
    def get_record(key, revision: 0, **options)
      request = Keyvalue::V1::GetRequest.new(key: Wire.bytes(key), revision: Wire.integer("revision", revision))
      Record.from_proto(call_v1(:get, request, options, read: true).kv)
    end

    # Stores +value+ under +key+; returns a PutResult (revision, prev, lease).
    #
    # - ttl: seconds until the key is deleted (an :expire event), on a lease
    #   of its own that PutResult#lease names (keep it alive, or revoke it);
    # - lease: attach the key to this lease instead (see lease_grant);
    # - prev: return the key's previous Record as PutResult#prev.
    #
    # Raises LeaseNotFound for an unknown lease, InvalidArgument for a bad key,
    # value or TTL.
    def put(key, value, ttl: nil, lease: 0, prev: false, **options)
      request = Keyvalue::V1::PutRequest.new(key: Wire.bytes(key), value: Wire.bytes(value), prev_kv: prev,
                                             lease: Wire.lease_id("lease", lease),
                                             ttl_ms: ttl.nil? ? 0 : Wire.ttl_ms(ttl))
      PutResult.from_proto(call_v1(:put, request, options), lease:)
    end

    # Deletes +key+; with prefix: true every key starting with +key+; with
    # range_end: the keys from +key+ (inclusive) to range_end (exclusive).
    # Returns how many keys were deleted.
    def delete(key, prefix: false, range_end: nil, **options)
      request = Keyvalue::V1::DeleteRequest.new(**Wire.key_range(key, prefix, range_end))
      call_v1(:delete, request, options).deleted
    end

    # The Records from +key+ on, in key order, as an Enumerator that fetches
    # page after page as it goes (nothing before it is used). By default to
    # the end of the keyspace; prefix: true for the keys starting with +key+;
    # range_end: up to that key (exclusive). keys_only: values come back
    # empty. limit: at most this many records (no page asks for more than
    # are still wanted). page_size: at most this many records per request
    # (default: the server's --max-range-page, which also caps it).
    # revision: the range as it was then (0: now). Every page is read at the
    # first page's revision (the server's page token carries it), so a
    # listing is one snapshot however long, whatever is written meanwhile.
    #
    #   client.range("user/", prefix: true).each { |record| ... }
    #   client.range("a", range_end: "b", keys_only: true).map(&:key)
    #   client.range("big/", prefix: true, page_size: 10).first(3)
    def range(key = "", prefix: false, range_end: nil, keys_only: false, limit: nil, page_size: nil, revision: 0,
              **options)
      fields = Wire.key_range(key, prefix, range_end).merge(keys_only:, revision: Wire.integer("revision", revision))
      fetch = ->(request) { call_v1(:range, request, options, read: true) }
      RangeScan.new(fetch, fields, limit, page_size:).enumerator
    end

    # How many keys the range (as for #range) holds, without fetching them
    # (at +revision+, if given).
    def count(key = "", prefix: false, range_end: nil, revision: 0, **options)
      revision = Wire.integer("revision", revision)
      request = Keyvalue::V1::RangeRequest.new(**Wire.key_range(key, prefix, range_end), count_only: true, revision:)
      call_v1(:range, request, options, read: true).count
    end

    # Stores +value+ under +key+ only if the key's mod_revision is still
    # +expect_revision+ (0: only if the key does not exist). Returns a
    # CompareAndSetResult (succeeded?, revision, current); a failed condition
    # is an answer, not an error.
    def compare_and_set(key, value, expect_revision:, **options)
      request = CompareAndSetResult.request(key, value, expect_revision)
      CompareAndSetResult.from_proto(request, call_v1(:put, request, options))
    end

    # Deletes +key+ only if its mod_revision is still +expect_revision+.
    # Returns a CompareAndSetResult: succeeded? (deleted), revision, and on
    # failure current, the Record that made it fail (nil: the key does not
    # exist). A failed condition is an answer, not an error.
    def delete_if(key, expect_revision:, **options)
      condition = Keyvalue::V1::Condition.new(mod_revision: Wire.integer("expect_revision", expect_revision))
      response = call_v1(:delete, Keyvalue::V1::DeleteRequest.new(key: Wire.bytes(key), condition:), options)
      current = response.succeeded ? nil : Record.from_proto(response.prev_kvs.first)
      CompareAndSetResult.new(succeeded: response.succeeded, revision: Wire.revision(response), current:)
    end

    # Atomically: if every Compare holds, the +success+ Ops, else the
    # +failure+ Ops. Returns a TxnResult (succeeded?, revision, results).
    def txn(compares:, success: [], failure: [], **options)
      read = (success + failure).all? { |op| op.proto.op == :range }
      response = call_v1(:txn, TxnResult.request(compares, success, failure), options, read:)
      TxnResult.from_proto(response, success, failure)
    end

    # The Records of +keys+ (nil for a missing key), in order, read at one
    # revision (+revision+ if given, else now). Raises InvalidArgument above
    # the server's --max-batch-keys.
    def batch_get(keys, revision: 0, **options)
      request = Keyvalue::V1::BatchGetRequest.new(keys: keys.map { |key| Wire.bytes(key) },
                                                  revision: Wire.integer("revision", revision))
      call_v1(:batch_get, request, options, read: true).results.map { |result| Record.from_proto(result.kv) }
    end

    # Stores every key => value of +hash+ atomically, at one revision, which
    # it returns; batch_put("a" => "1", "b" => "2"). lease: attach every key
    # to this lease (see lease_grant): batch_put({ "a" => "1" }, lease: id).
    # Raises InvalidArgument above the server's --max-batch-keys,
    # LeaseNotFound for an unknown lease.
    def batch_put(hash = nil, lease: 0, timeout: @timeout, idempotent: false, **pairs)
      lease = Wire.lease_id("lease", lease)
      puts = (hash || pairs).map do |key, value|
        Keyvalue::V1::PutRequest.new(key: Wire.bytes(key), value: Wire.bytes(value), lease:)
      end
      Wire.revision(call_v1(:batch_put, Keyvalue::V1::BatchPutRequest.new(puts:), { timeout:, idempotent: }))
    end

    # Watches +key+ (prefix: true: the keys starting with it; range_end: the
    # keys up to that one) and returns a Watch once the server has
    # registered it: every change made after this returns is seen, in
    # revision order. From start_revision on if given (a client that saw
    # revision N resumes from N + 1 and misses nothing); 0: from now.
    #
    # With a block, yields each Event until the block breaks (or the watch
    # is closed from another thread), then closes the watch; returns nil.
    # Without one, returns the Watch: read it with each or next, from any
    # thread, and close it when done (or leave each early, which closes it).
    # To read on another thread, start the watch first and hand it over:
    #
    #   watch = client.watch("jobs/", prefix: true)
    #   Thread.new { watch.each { |event| ... } }
    #   client.put("jobs/1", "x") # seen
    #
    # resume: true (the default) makes the watch start again by itself after
    # a broken connection or a server restart, from the revision after the
    # last event it handed over (it assumes the store outlived the restart:
    # a disk or etcd backend). resume: false ends it with ServerUnavailable.
    #
    # Raises Compacted if start_revision (or the resume point) is below the
    # compacted revision (#compact, or the server's --watch-history); ResourceExhausted at its --max-watchers
    # (after cancelling this client's watches that Ruby has collected);
    # ServerUnavailable if the server is unreachable, or does not register
    # the watch within the client's timeout (the stream itself has no
    # deadline).
    def watch(key, prefix: false, range_end: nil, start_revision: 0, resume: true, &block)
      watch = start_watch(Wire.key_range(key, prefix, range_end), Wire.integer("start_revision", start_revision),
                          resume)
      return watch unless block_given?

      begin
        watch.each(&block)
      ensure
        watch.close
      end
      nil
    end

    # Forgets the history before +revision+ (above zero): reads and watches
    # may start at it or later; every key's state at it and after is kept.
    # Returns the store's revision. Needs a token for the whole keyspace.
    # Raises Compacted at or below the compacted revision, FutureRevision
    # above the store's. idempotent: true lets the RetryPolicy repeat it (a
    # repeat of one that was applied raises Compacted).
    def compact(revision, **options)
      request = Keyvalue::V1::CompactRequest.new(revision: Wire.integer("revision", revision, 1..Wire::UINT64.end))
      Wire.revision(call_v1(:compact, request, options))
    end

    # A new lease of +ttl_seconds+ (a Lease); keys put with lease: its id are
    # deleted when it expires (nobody kept it alive for a whole TTL) or is
    # revoked.
    def lease_grant(ttl_seconds, **options)
      request = Keyvalue::V1::LeaseGrantRequest.new(ttl_ms: Wire.ttl_ms(ttl_seconds))
      Lease.from_proto(call_v1(:lease_grant, request, options))
    end

    # Restarts the lease's TTL; returns the Lease. Raises LeaseNotFound if it
    # already expired or was revoked.
    def lease_keep_alive(id, **options)
      request = Keyvalue::V1::LeaseKeepAliveRequest.new(id: Wire.lease_id("id", id))
      # Safe to repeat: restarting a TTL twice is restarting it once.
      Lease.from_proto(call_v1(:lease_keep_alive, request, options, read: true))
    end

    # Ends the lease now, deleting its keys; returns how many.
    # Raises LeaseNotFound if it already expired or was revoked.
    def lease_revoke(id, **options)
      call_v1(:lease_revoke, Keyvalue::V1::LeaseRevokeRequest.new(id: Wire.lease_id("id", id)), options).deleted
    end

    # The Lease, with its remaining time; with +keys+, its first keys in key
    # order, at most that many (keys, and more_keys: whether there are more).
    # Raises LeaseNotFound if it expired or was revoked.
    def lease_info(id, keys: 0, **options)
      request = Keyvalue::V1::LeaseInfoRequest.new(id: Wire.lease_id("id", id),
                                                   keys_limit: Wire.integer("keys", keys, Wire::UINT32))
      Lease.from_proto(call_v1(:lease_info, request, options, read: true))
    end

    # Every live lease, in id order: an Enumerator of Lease that fetches page
    # by page as iteration goes (+page_size+ leases a request; default, and
    # at most, the server's --max-range-page), each with its first +keys+
    # keys when asked (the server caps the keys of a page; more_keys says
    # where it cut, and lease_info(id, keys:) reads one lease's).
    def lease_list(keys: 0, page_size: nil, **options)
      LeasePages.new(->(request) { call_v1(:lease_list, request, options, read: true) }, keys, page_size).enumerator
    end

    # A consistent copy of every key and lease at one revision, as `kv backup`
    # takes it: a Snapshot, started (its first chunk read), with revision,
    # leases, and each / Enumerable over every key's Record, once, in key
    # order, streamed 1000 keys per chunk. Writes made meanwhile are not in
    # it. With a block, yields the Snapshot, closes it when the block ends
    # (cancelling the stream if it is not complete) and returns the block's
    # value; without one, returns it (close it if you stop early).
    #
    #   client.snapshot do |snapshot|
    #     snapshot.revision # => Integer
    #     snapshot.leases   # => [Lease(id, ttl)]
    #     snapshot.each { |record| backup << record }
    #   end
    #
    # Raises PermissionDenied for a token confined to a prefix (a copy holds
    # every key); ServerUnavailable if the connection is not ready within the
    # client's timeout (the stream itself has no deadline), or (from each) if
    # the stream ends before the copy is complete.
    def snapshot
      snapshot = start_snapshot
      return snapshot unless block_given?

      begin
        yield snapshot
      ensure
        snapshot.close
      end
    end
  end
end
