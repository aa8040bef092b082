"""Generated gRPC stubs for the repository's protos.

* ``proto/api.proto`` (package ``simplekeyvalue``, the frozen tutorial
  contract): messages in ``keyvalue._proto.api_pb2``, the service stub in
  ``keyvalue._proto.api_pb2_grpc``;
* ``proto/keyvalue/v1/kv.proto`` (package ``keyvalue.v1``, the full API):
  messages in ``keyvalue._proto.kv_pb2``, the service stub in
  ``keyvalue._proto.kv_pb2_grpc``.

Everything here but this file is written by scripts/generate_stubs.py; never
edit it by hand.
"""
