"""The README's Python examples run, as written, against a real kvserver.

Every fenced ``python`` block of README.md is run on its own (fresh globals),
with the address it names (``127.0.0.1:50051``) replaced by that of a
kvserver of this module. A block preceded by ``<!-- readme-test: skip
(reason) -->`` is not run; the reason must be given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvserver_process import KvServer, serve

README = Path(__file__).resolve().parents[1] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\n$")
BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[int, str, str | None]]:
    """Each python block: its line in the README, its code, why it is skipped (or None)."""
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        skipped = SKIP.search(text, 0, match.start())
        reason = skipped["reason"] if skipped and skipped.end() == match.start() else None
        found.append((line, match["code"], reason))
    return found


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def readme_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    """A kvserver of the README's own, so that its keys meet no other test's."""
    yield from serve(kvserver_bin, tmp_path_factory)


def test_the_readme_has_runnable_examples_of_each_feature() -> None:
    run = "\n".join(code for _line, code, reason in BLOCKS if reason is None)
    assert len([block for block in BLOCKS if block[2] is None]) >= 7
    for feature in (
        "timeout=",
        "RetryPolicy",
        "idempotent=True",
        "wait_for_ready",
        "lock(",
        "update(",
        "lease(",
        "AsyncClient",
        "Compacted",
        "limit=1",
        "revision=",
        "compact(",
        "FutureRevision",
    ):
        assert feature in run, f"no runnable README example uses {feature}"


@pytest.mark.parametrize(
    ("line", "code", "skipped"), BLOCKS, ids=[f"line {line}" for line, _, _ in BLOCKS]
)
def test_a_readme_example_runs(
    readme_server: KvServer, line: int, code: str, skipped: str | None
) -> None:
    if skipped is not None:
        pytest.skip(skipped)
    assert README_ADDRESS in code, "an example that talks to no server proves little"
    source = code.replace(README_ADDRESS, readme_server.address)
    exec(compile(source, f"README.md:{line}", "exec"), {"__name__": "readme"})
