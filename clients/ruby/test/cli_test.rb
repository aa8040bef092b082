# frozen_string_literal: true

require "open3"
require "test_helper"
require "test_certs"

# The kv-rb executable, run as a separate process against a real kvserver.
class CLITest < Minitest::Test
  include TestHelpers

  EXE = File.expand_path("../exe/kv-rb", __dir__)
  # No KV_* setting of the environment the tests run in leaks into kv-rb.
  CLEAN_ENV = { "KV_ADDR" => nil, "KV_TOKEN" => nil, "KV_CA_FILE" => nil, "KV_CERT" => nil, "KV_KEY" => nil }.freeze
  TOKEN = "cli-#{SecureRandom.hex(8)}".freeze
  READ_TOKEN = "cli-read-#{SecureRandom.hex(8)}".freeze

  def setup
    @server = KvServerProcess.shared
  end

  # Runs kv-rb; returns [stdout, stderr, exit code].
  def kv_rb(*args, env: {}, address: @server.address)
    args = ["--addr", address, *args] if address
    stdout, stderr, status = Open3.capture3(CLEAN_ENV.merge(env), RbConfig.ruby, EXE, *args)
    [stdout, stderr, status.exitstatus]
  end

  def test_a_reader_that_goes_away_ends_kv_rb_quietly
    key = unique_key
    # More output than a pipe holds (64 KiB), as under `kv-rb KEY KEY | head -c 10`.
    _, set_errors, code = kv_rb("#{key}=#{'x' * 100_000}")
    assert_equal [0, ""], [code, set_errors]
    env = CLEAN_ENV.merge("KV_ADDR" => @server.address)
    Open3.popen3(env, RbConfig.ruby, EXE, key, key, key) do |stdin, stdout, stderr, waiter|
      stdin.close
      assert_equal "x" * 10, stdout.read(10)
      stdout.close
      assert_equal [0, ""], [waiter.value.exitstatus, stderr.read]
    end
  end

  def test_sets_print_nothing_and_gets_print_each_value_on_its_own_line
    first = unique_key
    second = unique_key
    assert_equal ["", "", 0], kv_rb("#{first}=sunny", "#{second}=rain")
    assert_equal ["sunny\nrain\nsunny\n", "", 0], kv_rb(first, second, first)
  end

  def test_arguments_run_in_order_and_split_on_the_first_equals_only
    key = unique_key
    assert_equal ["b=c\n", "", 0], kv_rb("#{key}=b=c", key)
    assert_equal ["\n", "", 0], kv_rb("#{key}=", key)
  end

  def test_a_missing_key_is_one_line_and_exit_1_and_the_rest_still_runs
    missing = unique_key("missing")
    present = unique_key
    kv_rb("#{present}=here")
    stdout, stderr, code = kv_rb(missing, present)
    assert_equal "here\n", stdout
    assert_equal "key #{missing.inspect} not found\n", stderr
    assert_equal 1, code
  end

  def test_a_refused_request_exits_4_with_the_servers_reason
    stdout, stderr, code = kv_rb("=value")
    assert_equal "", stdout
    assert_equal "server refused the request (INVALID_ARGUMENT): key is empty\n", stderr
    assert_equal 4, code
  end

  def test_an_argument_that_is_not_utf8_is_a_usage_error_before_anything_runs
    key = unique_key
    stdout, stderr, code = kv_rb("#{key}=ok", "#{key}=\xff".b, key)
    assert_equal "", stdout
    assert_equal 1, stderr.lines.size
    assert stderr.start_with?("kv-rb: KEY[=VALUE] argument 2 must be valid UTF-8 text"), stderr
    assert_equal 2, code
    assert_equal ["", "key #{key.inspect} not found\n", 1], kv_rb(key)
    assert_equal ["\u00e9\n", "", 0], kv_rb("#{key}=\u00e9".b, key)
  end

  def test_the_first_failure_decides_the_exit_code
    _, stderr, code = kv_rb(unique_key("missing"), "=value")
    assert_equal 2, stderr.lines.size
    assert_equal 1, code
  end

  def test_an_unreachable_server_exits_3_with_one_line
    address = unused_address
    stdout, stderr, code = kv_rb("--timeout", "2", "weather", address:)
    assert_equal "", stdout
    assert_equal 1, stderr.lines.size
    assert stderr.start_with?("cannot reach kvserver at #{address}: "), stderr
    assert_equal 3, code
  end

  def test_the_address_can_come_from_kv_addr
    key = unique_key
    kv_rb("#{key}=from-env")
    assert_equal ["from-env\n", "", 0], kv_rb(key, env: { "KV_ADDR" => @server.address }, address: nil)
  end

  def test_a_key_starting_with_a_dash_goes_after_double_dash
    key = "-#{unique_key}"
    assert_equal ["", "", 0], kv_rb("--", "#{key}=dash")
    assert_equal ["dash\n", "", 0], kv_rb("--", key)
  end

  def test_help_describes_the_arguments_options_and_exit_codes
    stdout, stderr, code = kv_rb("--help", address: nil)
    assert_equal 0, code
    assert_equal "", stderr
    ["KEY[=VALUE]", "--addr", "KV_ADDR", "--timeout", "--version", "3 server unreachable", "--token", "KV_TOKEN",
     "--ca-file", "KV_CA_FILE", "--cert", "KV_CERT", "--key", "KV_KEY"].each do |text|
      assert_includes stdout, text
    end
  end

  def test_version_prints_the_gem_version
    assert_equal ["kv-rb #{KeyValue::VERSION}\n", "", 0], kv_rb("--version", address: nil)
  end

  def test_a_bad_timeout_is_a_usage_error_naming_the_flag
    ["0", "-1", "1e12"].each do |timeout|
      _, stderr, code = kv_rb("--timeout", timeout, "k")
      assert_equal 2, code
      assert stderr.start_with?("kv-rb: --timeout must be a number of seconds above zero, at most "), stderr
    end
  end

  def test_usage_errors_exit_2_with_one_line
    [[], ["--timeout", "0", "k"], ["--timeout", "soon", "k"], ["--bogus", "k"], ["--addr", " ", "k"]].each do |args|
      stdout, stderr, code = kv_rb(*args, address: nil)
      assert_equal 2, code, args.inspect
      assert_equal "", stdout
      assert_equal 1, stderr.lines.size, stderr
      assert_includes stderr, "kv-rb --help"
    end
  end

  # A kvserver wanting mutual TLS and a token, and the kv-rb flags that get in.
  def secure_server
    certs = TestCerts.files
    shared_server("--tls-cert", certs[:server_cert], "--tls-key", certs[:server_key], "--tls-client-ca", certs[:ca],
                  "--auth-token-file", self.class.token_file)
  end

  def self.token_file
    @token_file ||= begin
      dir = Dir.mktmpdir("kv-cli-tokens")
      Minitest.after_run { FileUtils.rm_rf(dir) }
      File.join(dir, "tokens").tap { |path| File.write(path, "#{TOKEN} readwrite\n#{READ_TOKEN} read\n") }
    end
  end

  def secure_flags(token: TOKEN)
    certs = TestCerts.files
    ["--ca-file", certs[:ca], "--cert", certs[:client_cert], "--key", certs[:client_key], "--token", token]
  end

  def test_tls_and_token_flags
    address = secure_server.address
    key = unique_key
    assert_equal ["", "", 0], kv_rb(*secure_flags, "#{key}=locked", address:)
    assert_equal ["locked\n", "", 0], kv_rb(*secure_flags, key, address:)
  end

  def test_tls_and_token_from_the_environment
    certs = TestCerts.files
    env = { "KV_ADDR" => secure_server.address, "KV_TOKEN" => TOKEN, "KV_CA_FILE" => certs[:ca],
            "KV_CERT" => certs[:client_cert], "KV_KEY" => certs[:client_key] }
    key = unique_key
    assert_equal ["", "", 0], kv_rb("#{key}=from-env", env:, address: nil)
    assert_equal ["from-env\n", "", 0], kv_rb(key, env:, address: nil)
    # A flag wins over its variable.
    stdout, stderr, code = kv_rb("--token", READ_TOKEN, "#{key}=x", env:, address: nil)
    assert_equal ["", 4], [stdout, code]
    assert stderr.start_with?("server refused the request (PERMISSION_DENIED): "), stderr
  end

  def test_a_refused_token_exits_4_with_one_line
    address = secure_server.address
    key = unique_key
    [[READ_TOKEN, "#{key}=x", "PERMISSION_DENIED"], ["wrong", key, "UNAUTHENTICATED"]].each do |token, item, status|
      stdout, stderr, code = kv_rb(*secure_flags(token:), item, address:)
      assert_equal ["", 4], [stdout, code]
      assert_equal 1, stderr.lines.size, stderr
      assert stderr.start_with?("server refused the request (#{status}): "), stderr
    end
    certs = TestCerts.files
    stdout, stderr, code = kv_rb("--ca-file", certs[:ca], "--cert", certs[:client_cert], "--key", certs[:client_key],
                                 key, address:)
    assert_equal ["", 4], [stdout, code]
    assert stderr.start_with?("server refused the request (UNAUTHENTICATED): "), stderr
  end

  def test_a_tls_server_without_the_right_flags_is_unreachable
    address = secure_server.address
    stdout, stderr, code = kv_rb("--timeout", "2", "--token", TOKEN, unique_key, address:)
    assert_equal ["", 3], [stdout, code]
    assert_equal 1, stderr.lines.size, stderr
    assert stderr.start_with?("cannot reach kvserver at #{address}: "), stderr
  end

  def test_bad_security_flags_are_usage_errors
    certs = TestCerts.files
    missing = File.join(Dir.tmpdir, "#{unique_key('missing')}.pem")
    [[["--ca-file", missing, "k"], missing], [["--cert", certs[:client_cert], "k"], "key_file"],
     [["--token", "", "k"], "--token"], [["--token", "two words", "k"], "token"]].each do |args, text|
      stdout, stderr, code = kv_rb(*args)
      assert_equal ["", 2], [stdout, code], args.inspect
      assert_equal 1, stderr.lines.size, stderr
      assert_includes stderr, text
    end
  end
end
