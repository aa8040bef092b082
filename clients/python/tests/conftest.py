"""Shared pytest fixtures: real kvserver processes, a client, unique keys, dead addresses.

Tests talk to the real kvserver binary (``$KVSERVER_BIN``, default
``<repo>/target/debug/kvserver``); a missing binary fails the tests that need
it with a message saying how to build it. Each kvserver a fixture starts is
stopped with SIGTERM when its scope ends, and must exit 0.

The secured servers (TLS, mutual TLS, tokens, TLS with tokens) use the
certificates and tokens of credentials.py. One server is not kvserver: the
in-process one of cutting_server.py, whose streams are cut with ``CANCELLED``.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from credentials import TOKEN_FILE, Pki, make_pki
from cutting_server import serve_cutting
from kvserver_process import KvServer, KvServerError, find_binary, serve

from keyvalue import Client


@pytest.fixture(scope="session")
def kvserver_bin() -> Path:
    """The kvserver executable under test."""
    try:
        return find_binary()
    except KvServerError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None


@pytest.fixture(scope="session")
def server(kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvServer]:
    """A kvserver with the default limits, shared by the whole session.

    Tests sharing it must use their own keys (the ``key`` fixture).
    """
    yield from serve(kvserver_bin, tmp_path_factory)


@pytest.fixture
def client(server: KvServer) -> Iterator[Client]:
    """A client of the shared default server."""
    with Client(server.address) as client:
        yield client


@pytest.fixture
def key() -> str:
    """A key no other test uses."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def unreachable_address() -> Iterator[str]:
    """A loopback address that refuses connections.

    The port stays bound (so nothing else can take it) but never listens, so
    every connection attempt is refused at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A loopback address that accepts TCP connections but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="session")
def cutting_address() -> Iterator[str]:
    """The address of a server whose Snapshot and Watch abort with ``CANCELLED``."""
    yield from serve_cutting()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, and an unrelated CA with a client's."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``--auth-token-file`` with the tokens of credentials.py."""
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(TOKEN_FILE)
    return path


@pytest.fixture(scope="session")
def tls_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[KvServer]:
    """A kvserver serving TLS with ``pki.server``, no client certificate needed."""
    yield from serve(kvserver_bin, tmp_path_factory, pki.server_args())


@pytest.fixture(scope="session")
def mtls_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[KvServer]:
    """A kvserver that also requires a client certificate signed by ``pki.ca``."""
    args = [*pki.server_args(), "--tls-client-ca", str(pki.ca)]
    yield from serve(kvserver_bin, tmp_path_factory, args)


@pytest.fixture(scope="session")
def token_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory, token_file: Path
) -> Iterator[KvServer]:
    """A plaintext kvserver that requires a token."""
    yield from serve(kvserver_bin, tmp_path_factory, ["--auth-token-file", str(token_file)])


@pytest.fixture(scope="session")
def tls_token_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory, pki: Pki, token_file: Path
) -> Iterator[KvServer]:
    """A kvserver serving TLS that also requires a token."""
    args = [*pki.server_args(), "--auth-token-file", str(token_file)]
    yield from serve(kvserver_bin, tmp_path_factory, args)
