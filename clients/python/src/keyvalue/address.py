"""Server addresses: ``host:port`` or ``kv://host:port``, checked before dialing.

grpcio accepts almost any string as a target and only fails (or dials port 443)
when the first call connects, so a typo such as ``"127.0.0.1:"`` or a bare
``"localhost"`` would surface far from its cause. :func:`parse_address` refuses
those at construction, with a message saying what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

URL_SCHEME = "kv://"
"""The URL form of an address: ``kv://host:port`` (no path, no credentials)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A checked server address.

    Attributes:
        host: The host name or IP address (an IPv6 address without its brackets).
        port: The TCP port, 1 to 65535.
    """

    host: str
    port: int

    @property
    def target(self) -> str:
        """The ``host:port`` grpcio dials (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(address: str) -> Address:
    """The host and port of ``host:port``, ``[v6addr]:port`` or ``kv://host:port``.

    Raises:
        ValueError: The address is empty, has no port or a port that is not a
            number from 1 to 65535, no host, or a URL scheme other than ``kv://``.
    """
    text = address.strip()
    if not text:
        raise ValueError("address must not be empty")
    if "://" in text:
        if not text.startswith(URL_SCHEME):
            scheme = text.split("://", 1)[0]
            raise ValueError(f"address {address!r}: unknown scheme {scheme!r} (use kv://host:port)")
        text = text.removeprefix(URL_SCHEME).rstrip("/")
        if "/" in text or "@" in text:
            raise ValueError(f"address {address!r}: a kv:// URL is kv://host:port, nothing more")
    host, colon, port = text.rpartition(":")
    if not colon:
        raise ValueError(f"address {address!r} has no port: use host:port, e.g. {text}:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address!r}: put an IPv6 address in brackets, [::1]:50051")
    if not host:
        raise ValueError(f"address {address!r} has no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        what = "no port" if not port else f"port {port!r}, not a number from 1 to 65535"
        raise ValueError(f"address {address!r} has {what}: use host:port")
    return Address(host=host, port=int(port))
