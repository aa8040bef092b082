"""Interop: stubs that anyone generates from the frozen proto work with kvserver.

The stubs are generated with stock ``grpc_tools.protoc`` straight from
proto/api.proto (plain ``-I proto``), and used by interop_client.py in a separate
process that imports nothing from the keyvalue package (its generated classes
would also clash with ours in protobuf's global descriptor pool).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kvserver_process import REPO_ROOT, KvServer

INTEROP_CLIENT = Path(__file__).resolve().parent / "interop_client.py"


def test_stock_stubs_set_and_get_against_kvserver(
    server: KvServer, key: str, tmp_path: Path
) -> None:
    protoc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "proto/api.proto",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert protoc.returncode == 0, protoc.stderr

    result = subprocess.run(
        [sys.executable, str(INTEROP_CLIENT), str(tmp_path), server.address, key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "stub_files": [str(tmp_path / "api_pb2.py"), str(tmp_path / "api_pb2_grpc.py")],
        "get": "sunny",
        "missing": {"code": "NOT_FOUND", "details": "key not found"},
        "keyvalue_imported": False,
    }
