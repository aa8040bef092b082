"""Checks that the committed stubs in src/keyvalue/_proto are fresh.

They must be exactly what scripts/generate_stubs.py produces today from
proto/api.proto (the frozen tutorial contract) and proto/keyvalue/v1/kv.proto
(the full API) with the pinned grpcio-tools. On failure, run
``python scripts/generate_stubs.py`` and commit the result.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

CLIENT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = CLIENT_ROOT / "scripts" / "generate_stubs.py"
COMMITTED = CLIENT_ROOT / "src" / "keyvalue" / "_proto"
GENERATED_FILES = [
    "api_pb2.py",
    "api_pb2.pyi",
    "api_pb2_grpc.py",
    "kv_pb2.py",
    "kv_pb2.pyi",
    "kv_pb2_grpc.py",
]
HAND_WRITTEN_FILES = ["__init__.py"]


def pinned_grpcio_tools() -> str:
    """The exact grpcio-tools version pinned in pyproject.toml's dev extra."""
    pyproject = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        match = re.fullmatch(r"grpcio-tools==(\S+)", requirement)
        if match:
            return match.group(1)
    raise AssertionError("pyproject.toml must pin grpcio-tools==X.Y.Z in the dev extra")


def test_installed_grpcio_tools_is_the_pinned_one() -> None:
    installed = importlib.metadata.version("grpcio-tools")
    assert installed == pinned_grpcio_tools(), (
        f"grpcio-tools {installed} is installed but {pinned_grpcio_tools()} is pinned: "
        "pip install -e 'clients/python[dev]'"
    )


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "keyvalue" / "_proto"
    assert sorted(p.name for p in fresh.iterdir()) == GENERATED_FILES
    assert sorted(p.name for p in COMMITTED.iterdir() if p.is_file()) == sorted(
        GENERATED_FILES + HAND_WRITTEN_FILES
    ), "unexpected files in src/keyvalue/_proto"
    for name in GENERATED_FILES:
        committed = (COMMITTED / name).read_text()
        regenerated = (fresh / name).read_text()
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                regenerated.splitlines(keepends=True),
                f"committed/{name}",
                f"regenerated/{name}",
            )
        )
        assert committed == regenerated, (
            f"src/keyvalue/_proto/{name} is stale; run python scripts/generate_stubs.py\n{diff}"
        )


def test_generated_stubs_import_each_other_package_relative() -> None:
    for name in ("api_pb2_grpc.py", "kv_pb2_grpc.py"):
        text = (COMMITTED / name).read_text()
        module = name.removesuffix("_grpc.py")
        assert f"from keyvalue._proto import {module} as " in text, name


def test_both_services_are_in_the_committed_stubs() -> None:
    from keyvalue._proto import api_pb2, kv_pb2

    assert api_pb2.DESCRIPTOR.package == "simplekeyvalue"
    assert set(api_pb2.DESCRIPTOR.services_by_name) == {"KeyValue"}
    assert kv_pb2.DESCRIPTOR.package == "keyvalue.v1"
    methods = {method.name for method in kv_pb2.DESCRIPTOR.services_by_name["KV"].methods}
    assert methods == {
        "Get",
        "Put",
        "Delete",
        "Range",
        "Txn",
        "BatchGet",
        "BatchPut",
        "Watch",
        "LeaseGrant",
        "LeaseKeepAlive",
        "LeaseRevoke",
        "LeaseInfo",
        "LeaseList",
        "Snapshot",
        "Compact",
    }
