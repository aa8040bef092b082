"""Generated gRPC stubs for proto/api.proto (package ``simplekeyvalue``).

Everything here but this file is written by scripts/generate_stubs.py; never
edit it by hand. Import the messages as ``keyvalue._proto.api_pb2`` and the
service stub as ``keyvalue._proto.api_pb2_grpc``.
"""
