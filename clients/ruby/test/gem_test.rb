# frozen_string_literal: true

require "open3"
require "rubygems/package"
require "tmpdir"
require "test_helper"

# keyvalue.gemspec builds a gem holding the library and kv-rb.
class GemTest < Minitest::Test
  ROOT = File.expand_path("..", __dir__)

  def test_gem_build_packs_the_library_and_the_command
    Dir.mktmpdir("kv-gem") do |dir|
      path = File.join(dir, "keyvalue.gem")
      output, status = Open3.capture2e("gem", "build", "keyvalue.gemspec", "-o", path, chdir: ROOT)
      assert status.success?, output
      assert File.file?(path), output
      spec = Gem::Package.new(path).spec
      assert_equal ["keyvalue", KeyValue::VERSION], [spec.name, spec.version.to_s]
      assert_equal ["kv-rb"], spec.executables
      expected = %w[lib/keyvalue.rb lib/keyvalue/client.rb lib/keyvalue/credentials.rb lib/keyvalue/errors.rb
                    lib/keyvalue/cli.rb lib/keyvalue/proto/keyvalue/v1/kv_services_pb.rb exe/kv-rb README.md
                    sig/keyvalue.rbs]
      assert_empty expected - spec.files
      assert_equal Dir.glob("lib/**/*.rb", base: ROOT).sort, spec.files.grep(%r{\Alib/}).sort
    end
  end

  # RubyGems warns of (and gem push refuses) what it cannot check: every
  # license must be an SPDX identifier, and a gem needs a homepage.
  def test_the_gemspec_has_valid_licenses_and_a_homepage_and_builds_without_warnings
    Dir.mktmpdir("kv-gem") do |dir|
      output, status = Open3.capture2e("gem", "build", "keyvalue.gemspec", "-o", File.join(dir, "k.gem"), chdir: ROOT)
      assert status.success?, output
      refute_match(/WARNING/, output)
      spec = Gem::Package.new(File.join(dir, "k.gem")).spec
      assert_equal %w[MIT Apache-2.0], spec.licenses
      assert(spec.licenses.all? { |license| Gem::Licenses.match?(license) }, spec.licenses.inspect)
      assert_match(%r{\Ahttps://}, spec.homepage.to_s)
    end
  end
end
