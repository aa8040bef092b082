# frozen_string_literal: true

require "grpc"
require "keyvalue/errors"

# KeyValue::Stream: the replies of a server-streaming call (Snapshot),
# read on a thread of their own so that the caller's wait can be interrupted.
module KeyValue
  # The grpc gem's blocking read does not return for a signal: a process
  # whose main thread waits in it ignores Ctrl-C and SIGTERM until the next
  # message comes. So a thread of the Stream's own runs the call and hands
  # each reply over through a queue of one; the caller waits on the queue,
  # which signals, Thread#raise and timeouts do interrupt. #close cancels the
  # call, which ends the reading thread.
  class Stream
    # Starts reading +operation+ (a call made with return_op: true).
    def initialize(operation)
      @operation = operation
      # One reply waits at most, so a slow reader still slows the server
      # down (gRPC flow control) rather than filling memory.
      @replies = SizedQueue.new(1)
      Thread.new { read }
    end

    # The next reply; nil once the stream has ended or been closed. Raises
    # the KeyValue::Error of a failed call.
    def next
      reply = @replies.pop
      raise reply if reply.is_a?(Exception)

      reply
    end

    # Cancels the call (harmless once it has ended). Calling it again does
    # nothing.
    def close
      @replies.close
      @operation.cancel
    end

    private

    def read
      @operation.execute.each { |reply| @replies.push(reply) }
    rescue GRPC::BadStatus => e
      deliver(KeyValue.error_from_status(e, api: :v1))
    rescue StandardError => e
      deliver(e)
    ensure
      @replies.close
    end

    # Hands +error+ to the caller, unless the stream was closed meanwhile
    # (a call cancelled by #close ends with an error nobody waits for).
    def deliver(error)
      @replies.push(error)
    rescue ClosedQueueError
      nil
    end
  end
end
