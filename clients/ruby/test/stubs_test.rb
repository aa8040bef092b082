# frozen_string_literal: true

require "open3"
require "tmpdir"
require "test_helper"
require_relative "../stubs"

# The committed stubs in lib/keyvalue/proto must be exactly what the stubs task
# generates today from the frozen proto/api.proto; on failure run `rake stubs`.
class StubsTest < Minitest::Test
  def test_committed_stubs_match_a_fresh_generation
    Dir.mktmpdir do |dir|
      fresh = Stubs.generate(dir)
      assert_equal Stubs::GENERATED_FILES, fresh.map { |path| File.basename(path) }.sort
      Stubs::GENERATED_FILES.each do |name|
        committed = File.read(File.join(Stubs::COMMITTED_DIR, name))
        assert_equal committed, File.read(File.join(dir, Stubs::PACKAGE_DIR, name)),
                     "lib/keyvalue/proto/#{name} is stale: run `rake stubs` and commit"
      end
    end
  end

  def test_nothing_else_lives_beside_the_generated_stubs
    assert_equal Stubs::GENERATED_FILES, Dir.children(Stubs::COMMITTED_DIR).sort
  end
end
