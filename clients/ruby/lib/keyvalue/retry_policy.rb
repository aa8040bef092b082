# frozen_string_literal: true

require "grpc"

# KeyValue::RetryPolicy: which failed calls are tried again, and how long to
# wait between tries.
module KeyValue
  # Retrying is opt-in (Client.new(address, retry_policy: RetryPolicy.new))
  # and only ever applies to calls that are safe to repeat:
  #
  # - reads (get, get_record, range, count, batch_get, lease_info, a txn
  #   whose operations are all reads, and the start of a watch or of a
  #   snapshot): repeating one changes nothing;
  # - lease_keep_alive: restarting a TTL twice is the same as once;
  # - writes the caller marks safe with idempotent: true (set, put, delete,
  #   delete_if, batch_put, txn, compare_and_set, lease_grant,
  #   lease_revoke). Writes are not retried otherwise: a write whose answer
  #   was lost may have been applied, and a second put makes a second
  #   revision (and a second watch event), a second delete reports 0 keys
  #   deleted, a second compare-and-set reports a failed condition, a second
  #   grant makes a second lease.
  #
  # Only failures that say nothing about the request itself are retried:
  # UNAVAILABLE (no connection, or it was lost) and DEADLINE_EXCEEDED (no
  # answer in time; each try gets the whole timeout). Anything else (a bad
  # argument, a refused token) would fail again and is raised at once.
  #
  # The waits grow exponentially with full jitter (each is random between 0
  # and the current backoff), so that the clients of a restarting server do
  # not all come back at once.
  class RetryPolicy
    # The status codes a safe call is retried on.
    RETRIED_CODES = [GRPC::Core::StatusCodes::UNAVAILABLE, GRPC::Core::StatusCodes::DEADLINE_EXCEEDED].freeze

    # attempts: tries in all, the first included (1: never retry);
    # initial_backoff: the most, in seconds, to wait before the second try;
    # max_backoff: the most between any two; multiplier: the backoff's growth
    # after each try.
    attr_reader :attempts, :initial_backoff, :max_backoff, :multiplier

    def initialize(attempts: 6, initial_backoff: 0.1, max_backoff: 2.0, multiplier: 2.0)
      raise ArgumentError, "attempts must be an Integer of at least 1, got #{attempts.inspect}" unless
        attempts.is_a?(Integer) && attempts >= 1

      check_backoffs(initial_backoff, max_backoff, multiplier)
      @attempts = attempts
      @initial_backoff = initial_backoff
      @max_backoff = max_backoff
      @multiplier = multiplier
      freeze
    end

    # The waits before the second, third, ... try (attempts - 1 of them), as
    # an Enumerator.
    def delays
      Enumerator.new do |out|
        backoff = @initial_backoff
        (@attempts - 1).times do
          out << (rand * backoff)
          backoff = [backoff * @multiplier, @max_backoff].min
        end
      end
    end

    # Whether +error+ (a KeyValue::Error) is worth another try of a safe call.
    def retried?(error)
      RETRIED_CODES.include?(error.code)
    end

    private

    def check_backoffs(initial, max, multiplier)
      raise ArgumentError, "backoffs and multiplier must be finite numbers" unless
        [initial, max, multiplier].all? { |n| finite?(n) }

      ordered = initial.positive? && initial <= max
      raise ArgumentError, "backoffs must satisfy 0 < initial_backoff <= max_backoff" unless ordered
      raise ArgumentError, "multiplier must be at least 1, got #{multiplier}" if multiplier < 1
    end

    def finite?(number)
      number.is_a?(Numeric) && number.real? && number.finite?
    end

    public

    def inspect
      "#<#{self.class.name} attempts=#{@attempts} backoff=#{@initial_backoff}..#{@max_backoff} x#{@multiplier}>"
    end
  end
end
