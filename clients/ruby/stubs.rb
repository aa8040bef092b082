# frozen_string_literal: true

require "open3"
require "fileutils"

# Generates lib/keyvalue/proto from the frozen proto/api.proto with Debian's
# grpc_tools_ruby_protoc (`rake stubs`); test/stubs_test.rb checks that the
# committed files are fresh.
#
# The proto is mapped to the virtual path keyvalue/proto/api.proto
# (-Ikeyvalue/proto=<proto dir>), so the generated files require each other as
# "keyvalue/proto/api_pb", with no hand edits.
module Stubs
  ROOT = __dir__
  PROTO_DIR = File.expand_path("../../proto", ROOT)
  PACKAGE_DIR = "keyvalue/proto"
  COMMITTED_DIR = File.join(ROOT, "lib", PACKAGE_DIR)
  GENERATED_FILES = %w[api_pb.rb api_services_pb.rb].freeze
  PROTOC = "grpc_tools_ruby_protoc"

  # Compiles proto/api.proto into out_root/keyvalue/proto; returns the paths.
  def self.generate(out_root)
    FileUtils.mkdir_p(File.join(out_root, PACKAGE_DIR))
    _, stderr, status = Open3.capture3(PROTOC, "-I#{PACKAGE_DIR}=#{PROTO_DIR}", "--ruby_out=#{out_root}",
                                       "--grpc_out=#{out_root}", "#{PACKAGE_DIR}/api.proto")
    raise "#{PROTOC} failed: #{stderr}" unless status.success?

    GENERATED_FILES.map { |name| File.join(out_root, PACKAGE_DIR, name) }
  end
end
