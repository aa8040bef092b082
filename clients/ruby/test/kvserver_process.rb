# frozen_string_literal: true

require "fileutils"
require "tmpdir"

# Starts and stops real kvserver processes for the tests.
#
# The server listens on 127.0.0.1:0 (a free port) and announces its address on
# stderr with a line "listening on 127.0.0.1:PORT"; other log lines may come
# first. Its stderr goes to a file, so a chatty server never blocks on a full
# pipe, and the log can be shown when something goes wrong.
class KvServerProcess
  REPO_ROOT = File.expand_path("../../..", __dir__)
  BINARY_ENV = "KVSERVER_BIN"
  READY_PREFIX = "listening on "

  # kvserver could not be found, did not start, or did not stop cleanly.
  class Failure < StandardError; end

  attr_reader :address

  # The kvserver binary: $KVSERVER_BIN, else target/debug/kvserver in the repo.
  def self.binary
    path = ENV.fetch(BINARY_ENV, "")
    path = File.join(REPO_ROOT, "target", "debug", "kvserver") if path.empty?
    return path if File.file?(path) && File.executable?(path)

    raise Failure, "kvserver binary not found at #{path}; build it with `cargo build --bin kvserver` " \
                   "from the repo root, or set #{BINARY_ENV}"
  end

  # One server shared by every test that needs no special flags, stopped when
  # the test run ends.
  def self.shared
    @shared ||= new.tap do |server|
      server.start
      Minitest.after_run { server.stop }
    end
  end

  # +data_dir+: the disk backend in that directory (else in memory), so
  # that the data outlives a #restart; +listen+: the address to listen on
  # (a port announced by an earlier server, to come back on it).
  def initialize(extra_args = [], data_dir: nil, listen: "127.0.0.1:0")
    backend = data_dir ? ["--backend", "disk", "--data-dir", data_dir] : %w[--backend memory]
    @args = [self.class.binary, *backend, *extra_args]
    @listen = listen
    log_dir = Dir.mktmpdir("kvserver")
    # Kept for the run (a failure quotes the log), removed after it.
    Minitest.after_run { FileUtils.remove_entry(log_dir, true) }
    @log_path = File.join(log_dir, "stderr.log")
  end

  def log
    File.exist?(@log_path) ? File.read(@log_path) : ""
  end

  # Starts the server and waits until it announces its address.
  def start(timeout: 20)
    File.truncate(@log_path, 0) if File.exist?(@log_path)
    @pid = Process.spawn(*@args, "--listen", @listen, in: File::NULL, out: @log_path, err: @log_path)
    deadline = Time.now + timeout
    while Time.now < deadline
      line = log.lines.find { |l| l.start_with?(READY_PREFIX) }
      return @address = line.delete_prefix(READY_PREFIX).strip if line

      if Process.wait(@pid, Process::WNOHANG)
        raise Failure, "kvserver exited before listening: #{@args.join(' ')}\n#{log}"
      end

      sleep 0.02
    end
    kill
    raise Failure, "kvserver printed no #{READY_PREFIX.inspect} line within #{timeout}s\n#{log}"
  end

  # Sends SIGTERM and waits; returns the exit status (kvserver exits 0).
  def stop(timeout: 15)
    pid = @pid
    @pid = nil
    @address = nil
    Process.kill("TERM", pid)
    deadline = Time.now + timeout
    while Time.now < deadline
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status.exitstatus if status

      sleep 0.02
    end
    Process.kill("KILL", pid)
    Process.wait(pid)
    raise Failure, "kvserver did not exit within #{timeout}s of SIGTERM\n#{log}"
  end

  # Stops the server (SIGTERM, its graceful stop, or SIGKILL, a crash),
  # leaves it down for +down+ seconds, and starts it again on the same
  # address (and data dir).
  def restart(signal: "TERM", down: 0)
    @listen = @address
    if signal == "KILL"
      kill
    else
      stop
    end
    sleep down
    start
  end

  private

  def kill
    Process.kill("KILL", @pid)
    Process.wait(@pid)
    @pid = nil
  end
end
