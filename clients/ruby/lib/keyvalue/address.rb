# frozen_string_literal: true

# KeyValue::Address: a server address, host:port or kv://host:port, checked
# before anything is dialled.
module KeyValue
  # The grpc gem takes almost any string as a target and fails (or dials
  # port 443) only when the first call connects, so a typo such as
  # "127.0.0.1:" or a bare "localhost" would surface far from its cause.
  # Address.parse refuses those at construction, saying what is wrong.
  module Address
    # The URL form: kv://host:port (no path, no credentials).
    SCHEME = "kv://"
    # host:port, [IPv6]:port.
    PATTERN = /\A(?<host>\[[\w:.%]+\]|[^\[\]:\s]+):(?<port>\d+)\z/

    module_function

    # The "host:port" target the grpc gem dials, from +address+ given as
    # host:port, [v6addr]:port or kv://host:port (a trailing "/" allowed).
    # Raises ArgumentError naming the address and what is wrong with it.
    def parse(address)
      text = address.to_s.strip
      raise ArgumentError, "address must not be empty" if text.empty?

      text = strip_scheme(address, text)
      match = PATTERN.match(text)
      raise ArgumentError, "address #{address.inspect} must be host:port, [IPv6]:port or kv://host:port" unless match

      port = match[:port].to_i
      unless (1..65_535).cover?(port)
        raise ArgumentError,
              "address #{address.inspect}: port must be 1 to 65535, got #{port}"
      end

      "#{match[:host]}:#{port}"
    end

    def strip_scheme(address, text)
      return text unless text.include?("://")

      unless text.start_with?(SCHEME)
        raise ArgumentError, "address #{address.inspect}: unknown scheme #{text.split('://').first.inspect} " \
                             "(use kv://host:port)"
      end

      text.delete_prefix(SCHEME).chomp("/")
    end
    private_class_method :strip_scheme
  end
end
