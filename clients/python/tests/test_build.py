"""The package builds into a wheel with ``pip wheel`` (no extra build tool)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CLIENT_ROOT = Path(__file__).resolve().parent.parent


def test_pip_wheel_builds_a_wheel_with_the_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(CLIENT_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(tmp_path.glob("keyvalue-*.whl"))
    assert len(wheels) == 1, sorted(path.name for path in tmp_path.iterdir())
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert "keyvalue/client.py" in names
    assert "keyvalue/py.typed" in names
    assert "keyvalue/_proto/kv_pb2_grpc.py" in names
