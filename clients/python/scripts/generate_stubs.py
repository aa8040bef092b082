"""Regenerate the gRPC stubs in src/keyvalue/_proto from the repository's protos.

Two protos are compiled, each into ``src/keyvalue/_proto``:

* ``proto/api.proto``, the frozen tutorial contract (package ``simplekeyvalue``):
  ``api_pb2.py``, ``api_pb2.pyi``, ``api_pb2_grpc.py``;
* ``proto/keyvalue/v1/kv.proto``, the full API (package ``keyvalue.v1``):
  ``kv_pb2.py``, ``kv_pb2.pyi``, ``kv_pb2_grpc.py``.

The protos are the one source of truth for the wire contract; the generated
files are their compiled form and are never edited by hand. Run this after
changing a proto or bumping the pinned grpcio-tools in pyproject.toml:

    python scripts/generate_stubs.py            # rewrites src/keyvalue/_proto
    python scripts/generate_stubs.py --out DIR  # writes DIR/keyvalue/_proto

Each proto's directory is mapped to the virtual directory keyvalue/_proto
(``-I keyvalue/_proto=<proto dir>``), so protoc writes package-relative imports
(``from keyvalue._proto import kv_pb2``) with no hand edits.
tests/test_stubs.py regenerates into a temporary directory and fails when the
committed files differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

CLIENT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = CLIENT_ROOT.parent.parent / "proto"
# Each proto, relative to PROTO_ROOT.
PROTO_FILES = (Path("api.proto"), Path("keyvalue") / "v1" / "kv.proto")
# Where the generated modules live, relative to the output root (src/).
PACKAGE_DIR = Path("keyvalue") / "_proto"
DEFAULT_OUT = CLIENT_ROOT / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files() -> list[str]:
    """The names of every generated file in ``keyvalue/_proto``, sorted."""
    return sorted(f"{proto.stem}{suffix}" for proto in PROTO_FILES for suffix in GENERATED_SUFFIXES)


def _compile(proto: Path, out_root: Path) -> None:
    """Compile one proto (relative to PROTO_ROOT) into ``out_root/keyvalue/_proto``."""
    source = PROTO_ROOT / proto
    if not source.is_file():
        raise RuntimeError(f"{source} not found")
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_DIR.as_posix()}={source.parent}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        (PACKAGE_DIR / proto.name).as_posix(),
    ]
    status: int = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed on {proto} with exit status {status}")


def generate(out_root: Path) -> list[Path]:
    """Compile every proto into ``out_root/keyvalue/_proto``.

    Args:
        out_root: The import root (``src`` for the committed stubs).

    Returns:
        The paths of the generated files.

    Raises:
        RuntimeError: If a proto is missing or protoc fails.
    """
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    for proto in PROTO_FILES:
        _compile(proto, out_root)
    return [out_root / PACKAGE_DIR / name for name in generated_files()]


def main() -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="import root to write keyvalue/_proto/ into (default: %(default)s)",
    )
    args = parser.parse_args()
    try:
        paths = generate(args.out)
    except RuntimeError as error:
        print(f"generate_stubs: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
