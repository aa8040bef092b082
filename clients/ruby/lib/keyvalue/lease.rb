# frozen_string_literal: true

require "keyvalue/wire"

# KeyValue::Lease: a TTL that keys share, as lease_grant, lease_keep_alive,
# lease_info and snapshot return it.
module KeyValue
  # - id: the lease's id, for put(lease:), lease_keep_alive and lease_revoke;
  # - ttl: the TTL it was granted with, in seconds (a Float);
  # - remaining: seconds left before it expires unless kept alive (nil in a
  #   Snapshot's leases: a copy records the TTL only);
  # - keys: from lease_info and lease_list, its first keys in key order
  #   (binary Strings; empty unless asked for with keys:), else nil;
  # - more_keys: whether it has keys beyond those (nil where keys is).
  #
  # When a lease expires or is revoked, every key attached to it is deleted.
  Lease = Struct.new(:id, :ttl, :remaining, :keys, :more_keys, keyword_init: true) do
    # The lease of a LeaseGrant, LeaseKeepAlive or LeaseInfo answer (or an
    # entry of LeaseList); without remaining_ms (grant, keep-alive), a whole
    # TTL remains.
    def self.from_proto(response)
      ttl = Wire.seconds(response.ttl_ms)
      remaining = response.respond_to?(:remaining_ms) ? Wire.seconds(response.remaining_ms) : ttl
      return new(id: response.id, ttl:, remaining:) unless response.respond_to?(:more_keys)

      new(id: response.id, ttl:, remaining:, keys: response.keys.map(&:b).freeze, more_keys: response.more_keys)
    end

    def initialize(...)
      super
      freeze
    end
  end
end
