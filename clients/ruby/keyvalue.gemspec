# frozen_string_literal: true

require_relative "lib/keyvalue/version"

Gem::Specification.new do |spec|
  spec.name = "keyvalue"
  spec.version = KeyValue::VERSION
  spec.summary = "Ruby client and kv-rb command for the keyvalue gRPC service"
  spec.description = "Get and set keys on a kvserver over its simplekeyvalue.KeyValue gRPC API, and the full " \
                     "keyvalue.v1.KV API: revisions, ranges, compare-and-set, transactions, watch, leases."
  spec.authors = ["The keyvalue developers"]
  # The project is MIT OR Apache-2.0, at the user's choice. RubyGems checks
  # each entry against SPDX identifiers and takes no "OR" expression; a list
  # of several licenses is how a gemspec says the gem is under either.
  spec.licenses = ["MIT", "Apache-2.0"]
  # Where the project is published (its README is the gem's too). A
  # placeholder until the project has a public home: change it here only.
  spec.homepage = "https://github.com/keyvalue/keyvalue"
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir["lib/**/*.rb", "sig/**/*.rbs", "exe/*", "README.md"]
  spec.bindir = "exe"
  spec.executables = ["kv-rb"]
  spec.require_paths = ["lib"]

  # The committed stubs were generated for these (Debian bookworm's packages).
  spec.add_dependency "google-protobuf", ">= 3.21", "< 4"
  spec.add_dependency "grpc", ">= 1.51", "< 2"
  spec.metadata["rubygems_mfa_required"] = "true"
  spec.metadata["source_code_uri"] = "#{spec.homepage}/tree/main/clients/ruby"
end
