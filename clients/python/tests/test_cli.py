"""Tests of the kv-py command against a real kvserver.

Both entry points are exercised as real processes, ``python -m keyvalue`` and
the installed ``kv-py`` console script, by the tests parametrized over
ENTRY_POINTS (and the broken-pipe one). The others call the same
``keyvalue.cli.main`` in this process, with its output and environment
captured as a process's would be: each Python start-up costs a second or
more on a busy machine, and they test what the command does, not how it
starts.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from credentials import READ_TOKEN, WRITE_TOKEN, Pki
from kvserver_process import KvServer

from keyvalue import Client, InvalidArgument
from keyvalue.cli import (
    ADDRESS_ENV,
    CA_FILE_ENV,
    CERT_ENV,
    KEY_ENV,
    TOKEN_ENV,
    build_parser,
    main,
)
from keyvalue.client import DEFAULT_ADDRESS

ENTRY_POINTS = ["module", "script"]
# The variables kv-py reads; unset for each run unless the test sets them.
KV_ENV = (ADDRESS_ENV, TOKEN_ENV, CA_FILE_ENV, CERT_ENV, KEY_ENV)


def command(entry_point: str) -> list[str]:
    """The command line that starts kv-py through ``entry_point``."""
    if entry_point == "module":
        return [sys.executable, "-m", "keyvalue"]
    script = Path(sys.executable).parent / "kv-py"
    if not script.is_file():
        pytest.fail(
            f"{script} not found: install the package into this environment "
            "(pip install -e 'clients/python[dev]')",
            pytrace=False,
        )
    return [str(script)]


def kv(
    *args: str, entry_point: str = "in-process", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kv-py with ``args``; ``$KV_ADDR`` and co. are unset unless ``env`` sets them.

    ``entry_point`` is one of ENTRY_POINTS (a process), or ``in-process``.
    """
    if entry_point == "in-process":
        return _in_process(list(args), env or {})
    full_env = {name: value for name, value in os.environ.items() if name not in KV_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [*command(entry_point), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def _in_process(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``main(args)`` here, with the environment, output and exit status of a process."""
    saved = {name: os.environ.pop(name) for name in KV_ENV if name in os.environ}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(args, prog="kv-py")
            except SystemExit as exit:  # argparse's usage errors
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def test_a_reader_that_goes_away_ends_kv_py_quietly(server: KvServer, key: str) -> None:
    # More output than a pipe holds (64 KiB), as under `kv-py KEY KEY | head -c 10`.
    value = "x" * 100_000
    with Client(server.address) as client:
        client.set(key, value)
    env = {name: value for name, value in os.environ.items() if name not in KV_ENV}
    process = subprocess.Popen(
        [*command("module"), "--addr", server.address, key, key, key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.read(10) == b"server ret"
    process.stdout.close()
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_set_then_get_prints_the_tutorial_lines(
    server: KvServer, key: str, entry_point: str
) -> None:
    result = kv("--addr", server.address, f"{key}=sunny", key, entry_point=entry_point)
    assert result.stdout.splitlines() == [
        f'sent "{key}" to server',
        f'server returned value "sunny" for key "{key}"',
    ]
    assert result.stderr == ""
    assert result.returncode == 0


def test_value_is_split_on_the_first_equals_sign(server: KvServer, key: str) -> None:
    result = kv("--addr", server.address, f"{key}=b=c", key)
    assert result.stdout.splitlines() == [
        f'sent "{key}" to server',
        f'server returned value "b=c" for key "{key}"',
    ]
    assert result.returncode == 0
    with Client(server.address) as client:
        assert client.get(key) == "b=c"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_missing_key_prints_the_server_text_and_exits_1(
    server: KvServer, key: str, entry_point: str
) -> None:
    result = kv("--addr", server.address, key, entry_point=entry_point)
    assert result.stdout == ""
    assert result.stderr == "failed to get key from server: key not found\n"
    assert result.returncode == 1


def test_refused_set_prints_the_server_text_and_exits_4(server: KvServer) -> None:
    with Client(server.address) as client, pytest.raises(InvalidArgument) as refused:
        client.set("", "x")
    result = kv("--addr", server.address, "=x")
    assert result.stdout == ""
    assert result.stderr == (
        "failed to set key on server: server refused the request (INVALID_ARGUMENT): "
        f"{refused.value.message}\n"
    )
    assert result.returncode == 4


def test_every_argument_runs_in_order_and_the_first_failure_sets_the_exit_code(
    server: KvServer, key: str
) -> None:
    missing = f"{key}-missing"
    result = kv("--addr", server.address, f"{key}=1", missing, "=empty-key", key)
    assert result.stdout.splitlines() == [
        f'sent "{key}" to server',
        f'server returned value "1" for key "{key}"',
    ]
    stderr = result.stderr.splitlines()
    assert len(stderr) == 2
    assert stderr[0] == "failed to get key from server: key not found"
    assert stderr[1].startswith("failed to set key on server: server refused the request ")
    assert result.returncode == 1


def test_exit_code_is_that_of_the_first_failure_not_the_worst(server: KvServer, key: str) -> None:
    result = kv("--addr", server.address, "=empty-key", f"{key}-missing")
    assert len(result.stderr.splitlines()) == 2
    assert result.returncode == 4


def test_kv_addr_environment_variable_sets_the_address(server: KvServer, key: str) -> None:
    result = kv(f"{key}=from-env", key, env={ADDRESS_ENV: server.address})
    assert result.stdout.splitlines()[-1] == f'server returned value "from-env" for key "{key}"'
    assert result.returncode == 0


def test_addr_flag_wins_over_the_environment(
    server: KvServer, key: str, unreachable_address: str
) -> None:
    result = kv("--addr", server.address, f"{key}=v", key, env={ADDRESS_ENV: unreachable_address})
    assert result.stderr == ""
    assert result.returncode == 0


def test_address_defaults_to_port_50051(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert build_parser().parse_args(["k"]).addr == DEFAULT_ADDRESS == "127.0.0.1:50051"
    monkeypatch.setenv(ADDRESS_ENV, "10.1.2.3:4")
    assert build_parser().parse_args(["k"]).addr == "10.1.2.3:4"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("argument", "prefix"),
    [
        ("weather", "failed to get key from server: "),
        ("weather=sunny", "failed to set key on server: "),
    ],
)
def test_unreachable_server_is_one_line_and_exit_3(
    unreachable_address: str, entry_point: str, argument: str, prefix: str
) -> None:
    result = kv("--addr", unreachable_address, argument, entry_point=entry_point)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{prefix}cannot reach kvserver at {unreachable_address}: ")
    assert "Traceback" not in result.stderr
    assert result.returncode == 3


def test_silent_server_times_out_with_exit_3(silent_address: str) -> None:
    result = kv("--addr", silent_address, "--timeout", "0.5", "weather")
    assert result.stderr.startswith(
        f"failed to get key from server: cannot reach kvserver at {silent_address}: "
    )
    assert result.returncode == 3


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--timeout", "0", "k"],
        ["--addr", "", "k"],
        ["--addr", "127.0.0.1:", "k"],
        ["--no-such-flag", "k"],
    ],
    ids=["no-arguments", "zero-timeout", "empty-address", "address-without-port", "unknown-flag"],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = kv(*args)
    assert result.stdout == ""
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


# ---- TLS and tokens -------------------------------------------------------------


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_tls_and_token_flags(
    tls_token_server: KvServer, pki: Pki, key: str, entry_point: str
) -> None:
    result = kv(
        "--addr",
        tls_token_server.localhost_address,
        "--ca-file",
        str(pki.ca),
        "--token",
        WRITE_TOKEN,
        f"{key}=secure",
        key,
        entry_point=entry_point,
    )
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f'sent "{key}" to server',
        f'server returned value "secure" for key "{key}"',
    ]
    assert result.returncode == 0


def test_tls_and_token_environment_variables(
    tls_token_server: KvServer, pki: Pki, key: str
) -> None:
    env = {
        ADDRESS_ENV: tls_token_server.address,
        CA_FILE_ENV: str(pki.ca),
        TOKEN_ENV: WRITE_TOKEN,
    }
    result = kv(f"{key}=from-env", key, env=env)
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == f'server returned value "from-env" for key "{key}"'
    assert result.returncode == 0


def test_mutual_tls_flags_and_environment_variables(
    mtls_server: KvServer, pki: Pki, key: str
) -> None:
    flags = [
        "--addr",
        mtls_server.address,
        "--ca-file",
        str(pki.ca),
        "--cert",
        str(pki.client.cert),
        "--key",
        str(pki.client.key),
    ]
    assert kv(*flags, f"{key}=mutual").returncode == 0
    env = {
        ADDRESS_ENV: mtls_server.address,
        CA_FILE_ENV: str(pki.ca),
        CERT_ENV: str(pki.client.cert),
        KEY_ENV: str(pki.client.key),
    }
    result = kv(key, env=env)
    assert result.stdout == f'server returned value "mutual" for key "{key}"\n'
    assert result.returncode == 0


def test_mutual_tls_without_a_client_certificate_is_unreachable(
    mtls_server: KvServer, pki: Pki
) -> None:
    # gRPC's C core logs failed TLS handshakes to stderr itself, at import-time
    # verbosity; GRPC_VERBOSITY=NONE (documented in the README) silences it.
    result = kv(
        "--addr",
        mtls_server.address,
        "--ca-file",
        str(pki.ca),
        "--timeout",
        "3",
        "k",
        env={"GRPC_VERBOSITY": "NONE"},
    )
    assert result.stderr.startswith(
        f"failed to get key from server: cannot reach kvserver at {mtls_server.address}: "
    )
    assert result.stderr.count("\n") == 1
    assert result.returncode == 3


def test_plaintext_to_a_tls_server_is_unreachable(tls_server: KvServer) -> None:
    result = kv("--addr", tls_server.address, "--timeout", "3", "k")
    assert result.stderr.count("\n") == 1
    assert "cannot reach kvserver" in result.stderr
    assert result.returncode == 3


def test_a_missing_token_is_one_line_and_exit_4(token_server: KvServer, key: str) -> None:
    result = kv("--addr", token_server.address, key)
    assert result.stdout == ""
    assert result.stderr.startswith(
        "failed to get key from server: server refused the request (UNAUTHENTICATED): "
        "this server needs a token"
    )
    assert result.stderr.count("\n") == 1
    assert result.returncode == 4


def test_a_read_token_can_get_but_set_is_refused_with_exit_4(
    token_server: KvServer, key: str
) -> None:
    assert kv("--addr", token_server.address, "--token", WRITE_TOKEN, f"{key}=v").returncode == 0
    result = kv(f"{key}=other", key, env={ADDRESS_ENV: token_server.address, TOKEN_ENV: READ_TOKEN})
    assert result.stdout == f'server returned value "v" for key "{key}"\n'
    assert result.stderr.startswith(
        "failed to set key on server: server refused the request (PERMISSION_DENIED): "
        "the token may only read"
    )
    assert result.stderr.count("\n") == 1
    assert result.returncode == 4


def test_the_token_flag_wins_over_the_environment(token_server: KvServer, key: str) -> None:
    env = {ADDRESS_ENV: token_server.address, TOKEN_ENV: READ_TOKEN}
    result = kv("--token", WRITE_TOKEN, f"{key}=v", env=env)
    assert result.stderr == ""
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ca-file", "CA", "--cert", "CERT"], "--cert and --key go together"),
        (["--ca-file", "CA", "--key", "KEY"], "--cert and --key go together"),
        (["--cert", "CERT", "--key", "KEY"], "--cert and --key need --ca-file"),
        (["--ca-file", "/no/such/ca.pem"], "cannot read ca_file '/no/such/ca.pem'"),
        (["--token", "two words"], "token must be printable ASCII"),
    ],
    ids=["cert-without-key", "key-without-cert", "cert-without-ca", "missing-ca", "bad-token"],
)
def test_bad_security_flags_are_usage_errors(args: list[str], message: str) -> None:
    result = kv(*args, "k")
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_security_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KV_ENV:
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["k"])
    assert (args.token, args.ca_file, args.cert, args.key) == (None, None, None, None)
    monkeypatch.setenv(TOKEN_ENV, "t")
    monkeypatch.setenv(CA_FILE_ENV, "ca.pem")
    monkeypatch.setenv(CERT_ENV, "c.pem")
    monkeypatch.setenv(KEY_ENV, "")  # empty is unset
    args = build_parser().parse_args(["k"])
    assert (args.token, args.ca_file, args.cert, args.key) == ("t", "ca.pem", "c.pem", None)


def test_output_and_errors_sent_to_one_pipe_stay_in_order(server: KvServer, key: str) -> None:
    result = subprocess.run(
        [*command("module"), "--addr", server.address, f"{key}=v", f"{key}-missing", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.splitlines() == [
        f'sent "{key}" to server',
        "failed to get key from server: key not found",
        f'server returned value "v" for key "{key}"',
    ]
    assert result.returncode == 1
