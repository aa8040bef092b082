"""An in-process ``keyvalue.v1.KV`` server that cuts its streams with ``CANCELLED``.

kvserver never aborts a stream with ``CANCELLED``, but a server may (one
shutting down, a proxy in between): :func:`serve_cutting` stands in for such a
server. Its Snapshot sends one chunk that is not the last, its Watch one event,
then each aborts the call with ``CANCELLED`` and :data:`CUT_DETAILS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc

from keyvalue._proto import kv_pb2, kv_pb2_grpc

CUT_DETAILS = "the server is going away"
"""The status details each stream is aborted with."""

SENT_KEY = b"sent/before/the/cut"
"""The key of the snapshot's only key and of the watch's only event."""


class _CuttingKV(kv_pb2_grpc.KVServicer):
    """Snapshot and Watch send one message, then abort with ``CANCELLED``."""

    def Snapshot(
        self, request: kv_pb2.SnapshotRequest, context: grpc.ServicerContext
    ) -> Iterator[kv_pb2.SnapshotChunk]:
        yield kv_pb2.SnapshotChunk(kvs=[kv_pb2.KeyValue(key=SENT_KEY, value=b"v")], done=False)
        context.abort(grpc.StatusCode.CANCELLED, CUT_DETAILS)

    def Get(self, request: kv_pb2.GetRequest, context: grpc.ServicerContext) -> kv_pb2.GetResponse:
        """No such key, at revision 1 (where a resuming watch of one key starts from)."""
        return kv_pb2.GetResponse(header=kv_pb2.Header(revision=1))

    def Range(
        self, request: kv_pb2.RangeRequest, context: grpc.ServicerContext
    ) -> kv_pb2.RangeResponse:
        """An empty range at revision 1 (where a resuming watch of a range starts from)."""
        return kv_pb2.RangeResponse(header=kv_pb2.Header(revision=1))

    def Watch(
        self, request: kv_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[kv_pb2.WatchResponse]:
        yield kv_pb2.WatchResponse(
            events=[
                kv_pb2.Event(
                    kind=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=SENT_KEY, mod_revision=2)
                )
            ]
        )
        context.abort(grpc.StatusCode.CANCELLED, CUT_DETAILS)


def serve_cutting() -> Iterator[str]:
    """Run the cutting server on a free loopback port for a yield fixture; its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    kv_pb2_grpc.add_KVServicer_to_server(_CuttingKV(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
