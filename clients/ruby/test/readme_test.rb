# frozen_string_literal: true

require "open3"
require "ripper"
require "test_helper"

# Every ```ruby block of README.md runs, each in a Ruby process of its own
# against a kvserver of its own (its address put in for 127.0.0.1:50051),
# and each "expression # => value" line in it must give that value. A block
# preceded by "<!-- not run: why -->" is skipped (it needs what a test
# cannot have, such as a server at kv.example).
class ReadmeTest < Minitest::Test
  README = File.expand_path("../README.md", __dir__)
  LIB = File.expand_path("../lib", __dir__)
  BLOCK = /^(?<skip><!-- not run: [^>]*-->\n)?```ruby\n(?<code>.*?)^```\n/m
  # "expression  # => value", with an optional "(remark)" after the value.
  CHECKED = /\A(?<indent>\s*)(?<expression>\S.*?)\s+# => (?<value>.+?)(?:\s+\([^()]*\))?\z/
  # Defined before each block: compares a result with the README's.
  PRELUDE = <<~RUBY.freeze
    $LOAD_PATH.unshift(#{LIB.dump})
    require "keyvalue"
    def readme_check(got, want, line)
      return if got == want

      abort("README: `\#{line}` gave \#{got.inspect}, not \#{want.inspect}")
    end
  RUBY

  def blocks
    File.read(README).to_enum(:scan, BLOCK).map { Regexp.last_match }
  end

  # The block with each checked line turned into a check.
  def checked(code)
    code.lines.map do |line|
      match = CHECKED.match(line.chomp)
      next line unless match && Ripper.sexp(match[:value])

      "#{match[:indent]}readme_check((#{match[:expression]}), (#{match[:value]}), #{line.strip.dump})\n"
    end.join
  end

  def test_the_readme_has_runnable_blocks_with_checked_results
    runnable = blocks.reject { |block| block[:skip] }
    assert_operator runnable.size, :>=, 4
    assert_operator runnable.sum { |block| checked(block[:code]).scan("readme_check((").size }, :>=, 5
    assert(blocks.any? { |block| block[:skip] }, "the TLS example is marked as not run")
  end

  def test_every_ruby_block_of_the_readme_runs_against_a_real_server
    blocks.reject { |block| block[:skip] }.each_with_index do |block, index|
      server = KvServerProcess.new
      server.start
      begin
        script = PRELUDE + checked(block[:code]).gsub("127.0.0.1:50051", server.address)
        output, status = run_script(script)
        assert status&.success?, "README ruby block #{index + 1} failed:\n#{block[:code]}\n#{output}"
      ensure
        assert_equal 0, server.stop
      end
    end
  end

  private

  # Runs +script+ from the repository's root (the README's first block adds
  # clients/ruby/lib from there); its output and status, nil after 60 s.
  def run_script(script)
    Open3.popen2e(RbConfig.ruby, "-e", script, chdir: KvServerProcess::REPO_ROOT) do |input, output, waiter|
      input.close
      reader = Thread.new { output.read }
      status = waiter.join(60)&.value
      Process.kill("KILL", waiter.pid) unless status
      [reader.value, status]
    end
  end
end
