# frozen_string_literal: true

require "open3"
require "fileutils"

# Generates lib/keyvalue/proto from the protos in proto/ with Debian's
# grpc_tools_ruby_protoc (`rake stubs`); test/stubs_test.rb checks that the
# committed files are fresh.
#
# - proto/api.proto, the frozen tutorial contract (simplekeyvalue.KeyValue),
#   becomes keyvalue/proto/api_pb.rb and api_services_pb.rb;
# - proto/keyvalue/v1/kv.proto, the full API (keyvalue.v1.KV), becomes
#   keyvalue/proto/keyvalue/v1/kv_pb.rb and kv_services_pb.rb.
#
# The proto directory is mapped to the virtual path keyvalue/proto
# (-Ikeyvalue/proto=<proto dir>), so the generated files require each other as
# "keyvalue/proto/api_pb" and "keyvalue/proto/keyvalue/v1/kv_pb", which resolve
# from lib/, with no hand edits.
module Stubs
  ROOT = __dir__
  PROTO_DIR = File.expand_path("../../proto", ROOT)
  PACKAGE_DIR = "keyvalue/proto"
  COMMITTED_DIR = File.join(ROOT, "lib", PACKAGE_DIR)
  # The protos compiled, relative to PROTO_DIR.
  PROTOS = %w[api.proto keyvalue/v1/kv.proto].freeze
  # What protoc writes for PROTOS, relative to COMMITTED_DIR; sorted.
  GENERATED_FILES = %w[api_pb.rb api_services_pb.rb keyvalue/v1/kv_pb.rb keyvalue/v1/kv_services_pb.rb].freeze
  PROTOC = "grpc_tools_ruby_protoc"

  # Compiles PROTOS into out_root/keyvalue/proto; returns the paths written.
  def self.generate(out_root)
    FileUtils.mkdir_p(File.join(out_root, PACKAGE_DIR))
    sources = PROTOS.map { |proto| "#{PACKAGE_DIR}/#{proto}" }
    _, stderr, status = Open3.capture3(PROTOC, "-I#{PACKAGE_DIR}=#{PROTO_DIR}", "--ruby_out=#{out_root}",
                                       "--grpc_out=#{out_root}", *sources)
    raise "#{PROTOC} failed: #{stderr}" unless status.success?

    GENERATED_FILES.map { |name| File.join(out_root, PACKAGE_DIR, name) }
  end

  # Every file under dir, relative to it, sorted.
  def self.files_under(dir)
    Dir.glob("**/*", base: dir).reject { |path| File.directory?(File.join(dir, path)) }.sort
  end
end
