"""What a channel to kvserver is made of: TLS credentials, options, call metadata.

:class:`~keyvalue.Client` (grpcio) and :class:`~keyvalue.AsyncClient`
(``grpc.aio``) build their channels from the same :class:`ChannelConfig`, so
the two check their arguments alike and dial alike.

The token travels as per-call metadata rather than through
``grpc.metadata_call_credentials`` (which grpcio only applies over TLS) or an
interceptor (the blocking and the asyncio APIs have different interceptor
types): tokens work over plaintext channels too, and on every kind of call.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

import grpc

from keyvalue.address import Address, parse_address

StrPath = str | os.PathLike[str]
"""A file name: ``str`` or ``pathlib.Path``."""

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # grpcio refuses replies above 4 MiB by default. The server already bounds
    # values (--max-value-bytes, which may be raised above 4 MiB), so accept
    # whatever it sends back.
    ("grpc.max_receive_message_length", -1),
    # After a lost connection grpcio waits 1 s, then up to 120 s, between
    # attempts to reconnect, failing calls fast meanwhile: a restarted server
    # would go unnoticed for minutes. Retry the connection within 2 s instead.
    # (Not grpc.min_reconnect_backoff_ms: it is also the least time a
    # connection attempt is given, 20 s by default.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

# What each kind of file must hold, as Ruby's client checks it too.
_PEM_LABELS = {"ca_file": b"CERTIFICATE", "cert_file": b"CERTIFICATE", "key_file": b"PRIVATE KEY"}


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """A checked address, credentials and call metadata.

    Attributes:
        address: Where the server is.
        credentials: TLS credentials, or ``None`` for plaintext.
        metadata: Sent with every call (the bearer token), possibly empty.
    """

    address: Address
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def build(
        cls,
        address: str,
        *,
        token: str | None,
        tls: bool,
        ca_file: StrPath | None,
        cert_file: StrPath | None,
        key_file: StrPath | None,
    ) -> ChannelConfig:
        """Check every argument; see :class:`~keyvalue.Client` for their meaning.

        Raises:
            ValueError: See :class:`~keyvalue.Client`.
        """
        parsed = parse_address(address)
        metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            _check_token(token)
            metadata = (("authorization", f"Bearer {token}"),)
        credentials = _channel_credentials(tls, ca_file, cert_file, key_file)
        return cls(address=parsed, credentials=credentials, metadata=metadata)


def _check_token(token: str) -> None:
    """Refuse a token that cannot be sent as a header value.

    Raises:
        ValueError: The token is empty, or has spaces or other characters
            outside printable ASCII.
    """
    if not token:
        raise ValueError("token must not be empty")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("token must be printable ASCII without spaces")


def _read_pem(path: StrPath, argument: str) -> bytes:
    """The contents of a PEM file holding what ``argument`` needs.

    Raises:
        ValueError: It cannot be read, holds no PEM block, or no block of the
            kind ``argument`` needs (a private key as ``ca_file``); the message
            names ``argument`` and the file.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"cannot read {argument} {os.fsdecode(path)!r}: {reason}") from error
    if b"-----BEGIN " not in data:
        raise ValueError(f"{argument} {os.fsdecode(path)!r} is not a PEM file")
    label = _PEM_LABELS[argument]
    # "-----BEGIN CERTIFICATE-----", "-----BEGIN RSA PRIVATE KEY-----", ...
    if not any(
        line.startswith(b"-----BEGIN ") and line.rstrip().endswith(label + b"-----")
        for line in data.splitlines()
    ):
        kind = label.decode().lower()
        raise ValueError(f"{argument} {os.fsdecode(path)!r} holds no {kind} (PEM {label.decode()})")
    return data


def _channel_credentials(
    tls: bool, ca_file: StrPath | None, cert_file: StrPath | None, key_file: StrPath | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials from the files, or ``None`` for a plaintext channel.

    Raises:
        ValueError: See :class:`~keyvalue.Client`.
    """
    if (cert_file is None) != (key_file is None):
        given, missing = ("cert_file", "key_file")
        if cert_file is None:
            given, missing = missing, given
        raise ValueError(f"{given} needs {missing} too (mutual TLS takes both)")
    if ca_file is None and not tls:
        if cert_file is not None:
            raise ValueError("cert_file and key_file need ca_file or tls=True (they are for TLS)")
        return None
    root = _read_pem(ca_file, "ca_file") if ca_file is not None else _system_roots()
    chain = _read_pem(cert_file, "cert_file") if cert_file is not None else None
    key = _read_pem(key_file, "key_file") if key_file is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def _system_roots() -> bytes | None:
    """The system's trusted CA certificates (``tls=True``), as OpenSSL finds them.

    ``None`` (grpcio's own bundled roots) where the system has no CA bundle file.
    """
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            with open(path, "rb") as file:
                return file.read()
    return None
