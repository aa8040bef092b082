# frozen_string_literal: true

# Interop client: stock stubs (generated from proto/api.proto with plain
# `grpc_tools_ruby_protoc -I proto`) talking to kvserver, with none of our
# client code loaded. Run by interop_test.rb as a separate process:
#
#   ruby interop_client.rb STUB_DIR ADDRESS KEY
#
# Prints one JSON report of what happened on stdout.
require "json"

stub_dir, address, key = ARGV
$LOAD_PATH.unshift(stub_dir)
require "api_services_pb"

stub = Simplekeyvalue::KeyValue::Stub.new(address, :this_channel_is_insecure)
stub.set(Simplekeyvalue::SetRequest.new(key:, value: "sunny"))
got = stub.get(Simplekeyvalue::GetRequest.new(key:)).value
missing = begin
  stub.get(Simplekeyvalue::GetRequest.new(key: "#{key}-never-set"))
  nil
rescue GRPC::BadStatus => e
  { "code" => e.code, "details" => e.details }
end
puts JSON.generate("get" => got, "missing" => missing, "keyvalue_loaded" => defined?(KeyValue::Client) ? true : false)
