# frozen_string_literal: true

# keyvalue: the Ruby client of kvserver.
#
# - KeyValue::Client (keyvalue/client.rb): the tutorial's get and set, and the
#   full keyvalue.v1 API, over one gRPC channel.
# - KeyValue::Connection (connection.rb): its gRPC channel, deadlines and
#   error mapping.
# - KeyValue::Credentials (credentials.rb): its TLS files and bearer token.
# - KeyValue::Record (record.rb), PutResult (put_result.rb),
#   CompareAndSetResult (compare_and_set.rb), Lease (lease.rb): what it answers.
# - KeyValue::RangeScan (range_scan.rb): the paging behind Client#range.
# - KeyValue::LeasePages (lease_pages.rb): the paging behind Client#lease_list.
# - KeyValue::Compare, Op and TxnResult (txn.rb): transactions.
# - KeyValue::Event and Watch (watch.rb): watching changes; behind a Watch,
#   WatchSession (watch_session.rb: the reading thread, resuming),
#   WatchState (watch_state.rb), WatchCall (watch_call.rb: one Watch RPC),
#   and the Client's WatchRegistry (watch_registry.rb).
# - KeyValue::Snapshot (snapshot.rb): a consistent copy of every key and lease.
# - KeyValue::Stream (stream.rb): the replies of a streaming call, read on a
#   thread of their own, behind Snapshot.
# - KeyValue::Error and its subclasses (errors.rb): every failure, mapped
#   from gRPC status codes in one place.
# - KeyValue::CLI (keyvalue/cli.rb): the kv-rb command.
# - keyvalue/proto/: stubs generated from proto/api.proto and
#   proto/keyvalue/v1/kv.proto (Rakefile's `stubs` task); never edited by hand.
require "keyvalue/version"
require "keyvalue/errors"
require "keyvalue/client"
