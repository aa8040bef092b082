# frozen_string_literal: true

require "json"
require "open3"
require "tmpdir"
require "test_helper"

# Interop: stubs that anyone generates from the frozen proto work with kvserver.
class InteropTest < Minitest::Test
  include TestHelpers

  PROTO_DIR = File.join(KvServerProcess::REPO_ROOT, "proto")
  CLIENT = File.expand_path("interop_client.rb", __dir__)

  def test_stock_stubs_set_and_get_against_kvserver
    Dir.mktmpdir do |dir|
      _, stderr, status = Open3.capture3("grpc_tools_ruby_protoc", "-I", PROTO_DIR, "--ruby_out=#{dir}",
                                         "--grpc_out=#{dir}", File.join(PROTO_DIR, "api.proto"))
      assert status.success?, stderr
      assert_equal %w[api_pb.rb api_services_pb.rb], Dir.children(dir).sort

      stdout, stderr, status = Open3.capture3(RbConfig.ruby, CLIENT, dir, KvServerProcess.shared.address, unique_key)
      assert status.success?, stderr
      assert_equal({ "get" => "sunny",
                     "missing" => { "code" => GRPC::Core::StatusCodes::NOT_FOUND, "details" => "key not found" },
                     "keyvalue_loaded" => false }, JSON.parse(stdout))
    end
  end
end
