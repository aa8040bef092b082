# frozen_string_literal: true

require "open3"
require "tmpdir"
require "test_helper"
require_relative "../stubs"

# The committed stubs in lib/keyvalue/proto must be exactly what the stubs task
# generates today from proto/api.proto and proto/keyvalue/v1/kv.proto; on
# failure run `rake stubs`.
class StubsTest < Minitest::Test
  def test_committed_stubs_match_a_fresh_generation
    Dir.mktmpdir do |dir|
      fresh = Stubs.generate(dir)
      assert_equal Stubs::GENERATED_FILES, Stubs.files_under(File.join(dir, Stubs::PACKAGE_DIR))
      assert_equal Stubs::GENERATED_FILES.size, fresh.size
      Stubs::GENERATED_FILES.each do |name|
        committed = File.read(File.join(Stubs::COMMITTED_DIR, name))
        assert_equal committed, File.read(File.join(dir, Stubs::PACKAGE_DIR, name)),
                     "lib/keyvalue/proto/#{name} is stale: run `rake stubs` and commit"
      end
    end
  end

  def test_nothing_else_lives_beside_the_generated_stubs
    assert_equal Stubs::GENERATED_FILES, Stubs.files_under(Stubs::COMMITTED_DIR)
  end

  def test_both_services_load_from_lib
    assert_equal "simplekeyvalue.KeyValue", Simplekeyvalue::KeyValue::Service.service_name
    assert_equal "keyvalue.v1.KV", Keyvalue::V1::KV::Service.service_name
  end
end
