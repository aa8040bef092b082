# frozen_string_literal: true

# keyvalue: the Ruby client of kvserver.
#
# - KeyValue::Client (keyvalue/client.rb): get and set over one gRPC channel.
# - KeyValue::Error and its subclasses (keyvalue/errors.rb): every failure,
#   mapped from gRPC status codes in one table.
# - KeyValue::CLI (keyvalue/cli.rb): the kv-rb command.
# - keyvalue/proto/: stubs generated from the frozen proto/api.proto
#   (Rakefile's `stubs` task); never edited by hand.
require "keyvalue/version"
require "keyvalue/errors"
require "keyvalue/client"
