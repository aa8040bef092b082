"""Start and stop real kvserver processes for the tests (fixtures: conftest.py).

The server listens on 127.0.0.1:0 (a free port) and announces its address on
stderr with a line ``listening on 127.0.0.1:PORT``; other log lines may come
first. Its stderr goes to a file, so a chatty server can never block on a full
pipe, and the log can be shown when something goes wrong.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
BINARY_ENV = "KVSERVER_BIN"
DEFAULT_BINARY = REPO_ROOT / "target" / "debug" / "kvserver"
READY_PREFIX = "listening on "


class KvServerError(Exception):
    """kvserver could not be found, did not start, or did not stop cleanly."""


def find_binary() -> Path:
    """The kvserver binary: ``$KVSERVER_BIN``, else target/debug/kvserver in the repo.

    Raises:
        KvServerError: If the path is relative, missing or not executable.
    """
    configured = os.environ.get(BINARY_ENV)
    binary = Path(configured) if configured else DEFAULT_BINARY
    source = f"${BINARY_ENV}" if configured else f"the default (${BINARY_ENV} is not set)"
    if not binary.is_absolute():
        raise KvServerError(f"{source} must be an absolute path, got {str(binary)!r}")
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise KvServerError(
            f"kvserver binary not found at {binary} ({source}); build it with "
            f"`cargo build --bin kvserver` from the repo root, or set {BINARY_ENV} "
            "to the absolute path of a built kvserver"
        )
    return binary


class KvServer:
    """One kvserver process on a free loopback port, with its log in a file.

    Args:
        binary: The kvserver executable.
        log_path: Where its stderr goes.
        extra_args: Flags added after ``--listen``/``--backend``, e.g.
            ``["--max-key-bytes", "8"]``.
        data_dir: Use the disk backend on this directory (kept across
            restarts); default: the memory backend.
    """

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        data_dir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.log_path = log_path
        backend = ["--backend", "memory"]
        if data_dir is not None:
            backend = ["--backend", "disk", "--data-dir", str(data_dir)]
        self.args = [str(binary), "--listen", "127.0.0.1:0", *backend, *extra_args]
        self._process: subprocess.Popen[bytes] | None = None
        self._address: str | None = None
        self._last_address: str | None = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop the server, then start it again on the same port (and data dir).

        With ``kill`` it is killed with SIGKILL, as a crash would end it;
        otherwise stopped with SIGTERM, as an operator would.

        Raises:
            KvServerError: It did not stop cleanly, or did not start again.
        """
        if kill:
            self.stop_abruptly()
        else:
            self.stop()
        self.start_again()

    def start_again(self) -> None:
        """Start the stopped server again on the port of its last run.

        Raises:
            KvServerError: It never ran, or did not start.
        """
        if self._last_address is None:
            raise KvServerError("kvserver never ran: nothing to start again")
        self.args[self.args.index("--listen") + 1] = self._last_address
        self.start()

    def stop_abruptly(self) -> None:
        """Kill the server with SIGKILL (no shutdown at all), as a crash would."""
        self._last_address = self._address or self._last_address
        self._address = None
        self._kill()

    @property
    def address(self) -> str:
        """The ``host:port`` the server announced."""
        if self._address is None:
            raise KvServerError("kvserver is not running")
        return self._address

    @property
    def localhost_address(self) -> str:
        """The address with the host name ``localhost`` instead of the IP address.

        A TLS client dialing it checks the certificate's DNS name, not its IP.
        """
        return "localhost:" + self.address.rpartition(":")[2]

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it announces its address.

        Raises:
            KvServerError: If it exits or stays silent for ``timeout`` seconds;
                the process is stopped before raising.
        """
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Only whole lines: the server may be half-way through writing one.
            for line in self.log().splitlines(keepends=True):
                if line.startswith(READY_PREFIX) and line.endswith("\n"):
                    self._address = line.removeprefix(READY_PREFIX).strip()
                    return
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise KvServerError(
                    f"kvserver exited with status {code} before listening: "
                    f"{' '.join(self.args)}\n{self.log()}"
                )
            time.sleep(0.02)
        self._kill()
        raise KvServerError(
            f"kvserver printed no {READY_PREFIX!r} line within {timeout}s\n{self.log()}"
        )

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGTERM and wait for the process to exit.

        Returns:
            Its exit status (kvserver exits 0 on SIGTERM).

        Raises:
            KvServerError: If it is still running after ``timeout`` seconds; it
                is killed first.
        """
        self._last_address = self._address or self._last_address
        process, self._process, self._address = self._process, None, None
        if process is None:
            raise KvServerError("kvserver is not running")
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise KvServerError(
                f"kvserver did not exit within {timeout}s of SIGTERM\n{self.log()}"
            ) from None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()


def serve(
    binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
    extra_args: Sequence[str] = (),
    *,
    disk: bool = False,
) -> Iterator[KvServer]:
    """Run a kvserver for the duration of a yield fixture, then stop it.

    With ``disk``, on the disk backend, in a data dir of its own.
    """
    directory = tmp_path_factory.mktemp("kvserver")
    log_path = directory / "stderr.log"
    server = KvServer(binary, log_path, extra_args, data_dir=directory / "data" if disk else None)
    try:
        server.start()
    except KvServerError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    yield server
    try:
        status = server.stop()
    except KvServerError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    if status != 0:
        pytest.fail(
            f"kvserver exited with status {status} on SIGTERM (expected 0)\n{server.log()}",
            pytrace=False,
        )
