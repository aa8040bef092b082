"""Regenerate the gRPC stubs in src/keyvalue/_proto from the frozen proto/api.proto.

The repository's proto/api.proto is the one source of truth for the wire
contract; the files in src/keyvalue/_proto (api_pb2.py, api_pb2.pyi,
api_pb2_grpc.py) are its compiled form and are never edited by hand. Run this
after bumping the pinned grpcio-tools in pyproject.toml:

    python scripts/generate_stubs.py            # rewrites src/keyvalue/_proto
    python scripts/generate_stubs.py --out DIR  # writes DIR/keyvalue/_proto

The proto is mapped to the virtual path keyvalue/_proto/api.proto
(``-I keyvalue/_proto=<proto dir>``), so protoc writes package-relative imports
(``from keyvalue._proto import api_pb2``) with no hand edits.
tests/test_stubs.py regenerates into a temporary directory and fails when the
committed files differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

CLIENT_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = CLIENT_ROOT.parent.parent / "proto"
PROTO_FILE = "api.proto"
# Where the generated modules live, relative to the output root (src/).
PACKAGE_DIR = Path("keyvalue") / "_proto"
DEFAULT_OUT = CLIENT_ROOT / "src"
GENERATED_FILES = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile proto/api.proto into ``out_root/keyvalue/_proto``.

    Args:
        out_root: The import root (``src`` for the committed stubs).

    Returns:
        The paths of the generated files.

    Raises:
        RuntimeError: If protoc fails.
    """
    proto = PROTO_DIR / PROTO_FILE
    if not proto.is_file():
        raise RuntimeError(f"{proto} not found")
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_DIR.as_posix()}={PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        (PACKAGE_DIR / PROTO_FILE).as_posix(),
    ]
    status: int = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}")
    return [out_root / PACKAGE_DIR / name for name in GENERATED_FILES]


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
