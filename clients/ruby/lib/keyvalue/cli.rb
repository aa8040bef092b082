# frozen_string_literal: true

require "optparse"
require "keyvalue/client"
require "keyvalue/version"

module KeyValue
  # kv-rb's TLS and token flags, each with the environment variable that
  # supplies it when the flag is not given; they become the Client options of
  # the same names.
  module SecurityFlags
    # Client option => [flag, variable, help].
    FLAGS = {
      token: ["--token TOKEN", "KV_TOKEN", "Bearer token sent with every request"],
      ca_file: ["--ca-file FILE", "KV_CA_FILE", "PEM CA certificate(s) to verify the server with; enables TLS"],
      cert_file: ["--cert FILE", "KV_CERT", "PEM client certificate, for mutual TLS (with --key)"],
      key_file: ["--key FILE", "KV_KEY", "PEM private key of --cert"]
    }.freeze

    # The options set (non-empty) in +env+: the security options, plus those
    # of +variables+ (option => variable).
    def self.from_env(env, variables = {})
      variables = FLAGS.transform_values { |(_, variable)| variable }.merge(variables)
      variables.transform_values { |variable| env.fetch(variable, "") }.reject { |_, value| value.empty? }
    end

    # Adds the flags to the OptionParser +opts+; each stores into +options+.
    def self.define(opts, options)
      FLAGS.each do |option, (flag, variable, help)|
        opts.on(flag, "#{help} (default: $#{variable})") do |value|
          raise ArgumentError, "#{flag.split.first} must not be empty" if value.empty?

          options[option] = value
        end
      end
    end
  end

  # The kv-rb command: the tutorial's client.rb, which prints the value of each
  # key given, plus KEY=VALUE to set a key.
  #
  #   $ kv-rb weather=sunny weather
  #   sunny
  #
  # Arguments run in order over one connection, and every one runs even after a
  # failure. Values go to stdout, one per line, and nothing else does; each
  # failure is one line on stderr. The exit codes are those of the Rust `kv`
  # command; with several arguments, the code of the first failure.
  class CLI
    EXIT_OK = 0
    EXIT_KEY_NOT_FOUND = 1
    EXIT_USAGE = 2
    EXIT_UNREACHABLE = 3
    EXIT_REFUSED = 4
    EXIT_INTERRUPTED = 130

    ADDRESS_ENV = "KV_ADDR"

    EPILOG = <<~TEXT.freeze
      Exit codes: #{EXIT_OK} all ok, #{EXIT_KEY_NOT_FOUND} key not found, #{EXIT_USAGE} usage error,
      #{EXIT_UNREACHABLE} server unreachable (or no answer within --timeout),
      #{EXIT_REFUSED} request refused by the server (e.g. key empty or too long, no token or not allowed).
      With several arguments, the code of the first failure.
      A key starting with '-' goes after '--', as in: -- -key=value
    TEXT

    # Runs the command with +argv+; returns the exit code.
    def self.start(argv, out: $stdout, err: $stderr, env: ENV)
      # --help and --version end the run early by throwing :exit with the code.
      catch(:exit) { new(out:, err:, env:).run(argv) }
    end

    def initialize(out:, err:, env:)
      @out = out
      @err = err
      @options = { address: Client::DEFAULT_ADDRESS, timeout: Client::DEFAULT_TIMEOUT,
                   **SecurityFlags.from_env(env, address: ADDRESS_ENV) }
    end

    def run(argv)
      # An argument that is not valid in the locale's encoding is parsed as
      # bytes (run_items refuses it).
      items = parser.parse(argv.map { |arg| arg.valid_encoding? ? arg : arg.b })
      return usage_error("at least one KEY or KEY=VALUE is required") if items.empty?

      Client.open(@options[:address], **@options.except(:address)) { |client| run_items(client, items) }
    rescue OptionParser::ParseError, ArgumentError => e
      usage_error(e.message)
    rescue Interrupt
      EXIT_INTERRUPTED
    end

    private

    # Every argument must be UTF-8 text (as Client#set and #get send it):
    # checked before anything is sent, an ArgumentError (a usage error).
    def run_items(client, items)
      items.each.with_index(1) { |item, position| Wire.text("KEY[=VALUE] argument #{position}", item) }
      items.map { |item| run_item(client, item) }.find { |code| code != EXIT_OK } || EXIT_OK
    end

    def run_item(client, item)
      key, separator, value = item.partition("=")
      if separator.empty?
        @out.puts(client.get(key))
      else
        client.set(key, value)
      end
      @out.flush
      EXIT_OK
    rescue KeyValue::Error => e
      @err.puts(describe(e, key, client.address))
      exit_code_for(e)
    end

    # One line saying what went wrong, in the words of the Rust `kv` command.
    def describe(error, key, address)
      line = case error
             when KeyNotFound then "key #{key.inspect} not found"
             when ServerUnavailable then "cannot reach kvserver at #{address}: #{error.message}"
             else "server refused the request (#{status_name(error.code)}): #{error.message}"
             end
      line.lines.map(&:strip).join(" ")
    end

    def status_name(code)
      GRPC::Core::StatusCodes.constants.find { |name| GRPC::Core::StatusCodes.const_get(name) == code } || code
    end

    def exit_code_for(error)
      case error
      when KeyNotFound then EXIT_KEY_NOT_FOUND
      when ServerUnavailable then EXIT_UNREACHABLE
      else EXIT_REFUSED
      end
    end

    def usage_error(message)
      @err.puts("kv-rb: #{message} (see kv-rb --help)")
      EXIT_USAGE
    end

    def parser
      OptionParser.new do |opts|
        opts.banner = "Usage: kv-rb [options] KEY[=VALUE]...\n\n" \
                      "Prints the value of each KEY on its own line; KEY=VALUE sets the key\n" \
                      "(split on the first '='). Arguments run in order.\n\n"
        connection_options(opts)
        SecurityFlags.define(opts, @options)
        opts.on("-h", "--help", "Show this help") { throw_help(opts) }
        opts.on("--version", "Show the version") { throw_version }
        opts.separator("")
        opts.separator(EPILOG)
      end
    end

    def connection_options(opts)
      opts.on("--addr HOST:PORT", "Server address (default: $#{ADDRESS_ENV}, else #{Client::DEFAULT_ADDRESS})") do |a|
        raise ArgumentError, "the address must not be empty" if a.strip.empty?

        @options[:address] = a
      end
      opts.on("--timeout SECONDS", Float, "Seconds each request may take (default: #{Client::DEFAULT_TIMEOUT})") do |t|
        @options[:timeout] = Wire.duration("--timeout", t, Client::MAX_TIMEOUT)
      end
    end

    def throw_help(opts)
      @out.puts(opts.help)
      throw :exit, EXIT_OK
    end

    def throw_version
      @out.puts("kv-rb #{KeyValue::VERSION}")
      throw :exit, EXIT_OK
    end
  end
end
