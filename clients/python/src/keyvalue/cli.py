"""The ``kv-py`` command (also ``python -m keyvalue``): the tutorial's client, fixed.

Each positional argument is either ``key`` (get it) or ``key=value`` (set it;
split on the first ``=``, so ``a=b=c`` sets ``a`` to ``b=c``). They run in
order over one connection, and every one runs even after a failure::

    $ kv-py weather=sunny weather
    sent "weather" to server
    server returned value "sunny" for key "weather"

Success lines go to stdout, failure lines to stderr, one line each, each
written at once (stdout is flushed per line, as kv-rb does), so that the two
stay in order when both go to one file or pipe. The exit
codes are shared with the Rust ``kv`` command; with several arguments the
command exits with the code of the first failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from keyvalue.address import parse_address
from keyvalue.client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client
from keyvalue.errors import KeyNotFound, KeyValueError, ServerUnavailable

EXIT_OK = 0
EXIT_KEY_NOT_FOUND = 1
EXIT_USAGE = 2  # what argparse exits with on bad arguments
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130

ADDRESS_ENV = "KV_ADDR"
TOKEN_ENV = "KV_TOKEN"
CA_FILE_ENV = "KV_CA_FILE"
CERT_ENV = "KV_CERT"
KEY_ENV = "KV_KEY"

_EPILOG = f"""\
exit codes: {EXIT_OK} all ok, {EXIT_KEY_NOT_FOUND} key not found, {EXIT_USAGE} usage error,
{EXIT_UNREACHABLE} server unreachable (or no answer within --timeout),
{EXIT_REFUSED} request refused by the server (e.g. key empty or too long, no or bad
token, token not allowed to do this).
With several arguments, the code of the first failure.
A key starting with '-' goes after '--', as in: -- -key=value"""


def exit_code_for(error: KeyValueError) -> int:
    """The exit code for a failed request."""
    if isinstance(error, KeyNotFound):
        return EXIT_KEY_NOT_FOUND
    if isinstance(error, ServerUnavailable):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def describe(error: KeyValueError, address: str) -> str:
    """The text after ``failed to ... on server:``, always a single line.

    A refusal is worded as the Rust ``kv`` and ``kv-rb`` word it, with the
    gRPC status's canonical name: ``server refused the request
    (PERMISSION_DENIED): MESSAGE``. A missing key is the server's own message
    (``key not found``); a server that never answered is named by its address,
    with why it could not be reached.
    """
    if isinstance(error, ServerUnavailable):
        text = f"cannot reach kvserver at {address}: {error.message}"
    elif isinstance(error, KeyNotFound):
        text = error.message
    else:
        text = f"server refused the request ({error.code.name}): {error.message}"
    return " ".join(text.splitlines())


def run(client: Client, items: Sequence[str], out: TextIO, err: TextIO) -> int:
    """Process each ``key`` / ``key=value`` item in order.

    Returns:
        ``EXIT_OK``, or the exit code of the first failed item.
    """
    status = EXIT_OK
    for item in items:
        key, is_set, value = item.partition("=")
        try:
            if is_set:
                client.set(key, value)
                print(f'sent "{key}" to server', file=out, flush=True)
            else:
                value = client.get(key)
                print(f'server returned value "{value}" for key "{key}"', file=out, flush=True)
        except KeyValueError as error:
            action = "set key on" if is_set else "get key from"
            print(f"failed to {action} server: {describe(error, client.address)}", file=err)
            if status == EXIT_OK:
                status = exit_code_for(error)
    return status


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
    return seconds


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Set and get keys on a kvserver, in the order given.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="KEY[=VALUE]",
        help="KEY gets the key; KEY=VALUE sets it (split on the first '=')",
    )
    parser.add_argument(
        "--addr",
        type=_address,
        default=os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"server address, host:port or kv://host:port "
        f"(default: ${ADDRESS_ENV}, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long each request may take (default: %(default)s)",
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--token",
        default=_env(TOKEN_ENV),
        help=f"send 'authorization: Bearer TOKEN' with every request (default: ${TOKEN_ENV})",
    )
    security.add_argument(
        "--ca-file",
        default=_env(CA_FILE_ENV),
        metavar="PEM",
        help=f"use TLS, trusting server certificates this CA signed (default: ${CA_FILE_ENV})",
    )
    security.add_argument(
        "--cert",
        default=_env(CERT_ENV),
        metavar="PEM",
        help=f"client certificate for mutual TLS, with --key and --ca-file (default: ${CERT_ENV})",
    )
    security.add_argument(
        "--key",
        default=_env(KEY_ENV),
        metavar="PEM",
        help=f"private key of --cert (default: ${KEY_ENV})",
    )
    return parser


def _env(name: str) -> str | None:
    """The environment variable's value; unset and empty are both ``None``."""
    return os.environ.get(name) or None


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``kv-py``; returns the exit code."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together (mutual TLS takes both)")
    if args.cert is not None and args.ca_file is None:
        parser.error("--cert and --key need --ca-file (they are for TLS)")
    try:
        client = Client(
            args.addr,
            timeout=args.timeout,
            token=args.token,
            ca_file=args.ca_file,
            cert_file=args.cert,
            key_file=args.key,
        )
    except ValueError as error:  # an unreadable file (named), a malformed token
        parser.error(str(error))
    try:
        with client:
            return run(client, args.items, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (kv-py KEY | head -c 10): end quietly, as kv
        # does. Python flushes stdout again at exit; let that go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
