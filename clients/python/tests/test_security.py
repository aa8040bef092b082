"""TLS, mutual TLS and bearer tokens in the library, against real kvservers.

Certificates are generated per session (tests/credentials.py): a CA, a server
certificate for ``localhost`` and ``127.0.0.1``, a client certificate from the
same CA, and a second, unrelated CA with a client certificate of its own. The
servers are conftest.py's ``tls_server``, ``mtls_server``, ``token_server``
and ``tls_token_server``. The kv-py flags are tested in test_cli.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from credentials import READ_TOKEN, SCOPE, SCOPED_TOKEN, WRITE_TOKEN, Pki
from kvserver_process import KvServer
from watch_helpers import take

from keyvalue import (
    Client,
    Compare,
    KeyValueError,
    Op,
    PermissionDenied,
    ServerUnavailable,
    Unauthenticated,
)

# Failures to connect should come quickly, not after the default 5 s.
SHORT_TIMEOUT = 3.0


# ---- TLS ----------------------------------------------------------------------


@pytest.mark.parametrize("by_name", [False, True], ids=["ip", "localhost"])
def test_tls_set_get_with_the_ca(tls_server: KvServer, pki: Pki, key: str, by_name: bool) -> None:
    address = tls_server.localhost_address if by_name else tls_server.address
    with Client(address, ca_file=pki.ca) as client:
        assert client.tls
        client.set(key, "secret")
        assert client.get(key) == "secret"
        client.put(key, b"v1")
        kv = client.get_kv(key)
        assert kv is not None
        assert kv.value == b"v1"


def test_tls_accepts_str_paths(tls_server: KvServer, pki: Pki, key: str) -> None:
    with Client(tls_server.address, ca_file=str(pki.ca)) as client:
        client.set(key, "v")
        assert client.get(key) == "v"


def test_tls_watch(tls_server: KvServer, pki: Pki, key: str) -> None:
    with Client(tls_server.address, ca_file=pki.ca) as client, client.watch(key) as events:
        client.put(key, "x")
        assert [(event.kind, event.kv.value) for event in take(events, 1)] == [("put", b"x")]


def test_plaintext_client_to_tls_server_is_unavailable(tls_server: KvServer, key: str) -> None:
    with Client(tls_server.address, timeout=SHORT_TIMEOUT) as client:
        assert not client.tls
        with pytest.raises(ServerUnavailable):
            client.get(key)
        with pytest.raises(ServerUnavailable):
            client.get_kv(key)


def test_tls_client_that_trusts_another_ca_is_unavailable(
    tls_server: KvServer, pki: Pki, key: str
) -> None:
    with (
        Client(tls_server.address, timeout=SHORT_TIMEOUT, ca_file=pki.other_ca) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.get(key)


def test_tls_client_to_plaintext_server_is_unavailable(
    server: KvServer, pki: Pki, key: str
) -> None:
    with (
        Client(server.address, timeout=SHORT_TIMEOUT, ca_file=pki.ca) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.get(key)


# ---- mutual TLS -------------------------------------------------------------------


def test_mtls_with_a_client_certificate_from_the_ca_works(
    mtls_server: KvServer, pki: Pki, key: str
) -> None:
    with Client(
        mtls_server.address,
        ca_file=pki.ca,
        cert_file=pki.client.cert,
        key_file=pki.client.key,
    ) as client:
        client.set(key, "mutual")
        assert client.get(key) == "mutual"
        assert client.count(key, prefix=True) == 1


def test_mtls_without_a_client_certificate_fails(mtls_server: KvServer, pki: Pki, key: str) -> None:
    with (
        Client(mtls_server.address, timeout=SHORT_TIMEOUT, ca_file=pki.ca) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.set(key, "nope")


def test_mtls_with_a_certificate_from_another_ca_fails(
    mtls_server: KvServer, pki: Pki, key: str
) -> None:
    with (
        Client(
            mtls_server.address,
            timeout=SHORT_TIMEOUT,
            ca_file=pki.ca,
            cert_file=pki.other_client.cert,
            key_file=pki.other_client.key,
        ) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.set(key, "nope")


# ---- tokens -------------------------------------------------------------------------


def test_no_token_is_unauthenticated_on_both_services(token_server: KvServer, key: str) -> None:
    with Client(token_server.address) as client:
        with pytest.raises(Unauthenticated, match="needs a token"):
            client.get(key)
        with pytest.raises(Unauthenticated):
            client.set(key, "v")
        with pytest.raises(Unauthenticated):
            client.get_kv(key)
        with pytest.raises(Unauthenticated):
            client.watch(key)


def test_an_unknown_token_is_unauthenticated(token_server: KvServer, key: str) -> None:
    with Client(token_server.address, token="no-such-token") as client:
        with pytest.raises(Unauthenticated, match="not valid"):
            client.get(key)
        with pytest.raises(Unauthenticated):
            client.put(key, "v")


def test_a_readwrite_token_works_on_both_services(token_server: KvServer, key: str) -> None:
    with Client(token_server.address, token=WRITE_TOKEN) as client:
        client.set(key, "tutorial")
        assert client.get(key) == "tutorial"
        revision = client.put(key, b"full").revision
        kv = client.get_kv(key)
        assert kv is not None
        assert kv.value == b"full"
        assert client.compare_and_set(key, "cas", expect_revision=revision).succeeded
        result = client.txn([Compare.value(key, "=", "cas")], success=[Op.put(key, "txn")])
        assert result.succeeded
        client.batch_put({f"{key}/a": "1", f"{key}/b": "2"})
        assert [kv.key for kv in client.range(f"{key}/", prefix=True)] == [
            f"{key}/a".encode(),
            f"{key}/b".encode(),
        ]
        lease = client.lease_grant(30)
        client.lease_keep_alive(lease.id)
        assert client.lease_info(lease.id).id == lease.id
        client.lease_revoke(lease.id)
        assert client.delete(key, prefix=True) == 3


def test_a_readwrite_token_reaches_watches(token_server: KvServer, key: str) -> None:
    with Client(token_server.address, token=WRITE_TOKEN) as client, client.watch(key) as events:
        client.put(key, "seen")
        assert [event.kv.value for event in take(events, 1)] == [b"seen"]


def test_the_token_reaches_snapshots(token_server: KvServer, key: str) -> None:
    with Client(token_server.address, token=WRITE_TOKEN) as client:
        client.put(key, "in the snapshot")
        with client.snapshot() as snapshot:
            keys = {kv.key for kv in snapshot}
            assert snapshot.complete
    assert key.encode() in keys


def test_a_read_token_reads_but_does_not_write(token_server: KvServer, key: str) -> None:
    with Client(token_server.address, token=WRITE_TOKEN) as writer:
        writer.set(key, "from the writer")
    with Client(token_server.address, token=READ_TOKEN) as client:
        assert client.get(key) == "from the writer"
        kv = client.get_kv(key)
        assert kv is not None
        assert kv.value == b"from the writer"
        assert client.count(key, prefix=True) == 1
        assert client.batch_get([key])[0] is not None
        with client.watch(key):
            pass
        writes: list[Callable[[], Any]] = [
            lambda: client.set(key, "v"),
            lambda: client.put(key, "v"),
            lambda: client.delete(key),
            lambda: client.batch_put({key: "v"}),
            lambda: client.txn([], success=[Op.put(key, "v")]),
            lambda: client.lease_grant(10),
        ]
        for write in writes:
            with pytest.raises(PermissionDenied, match="may only read"):
                write()
        assert client.get(key) == "from the writer"


def test_a_scoped_token_is_confined_to_its_prefix(token_server: KvServer) -> None:
    inside = f"{SCOPE}{uuid.uuid4().hex}"
    outside = f"elsewhere/{uuid.uuid4().hex}"
    with Client(token_server.address, token=SCOPED_TOKEN) as client:
        client.set(inside, "mine")
        assert client.get(inside) == "mine"
        client.put(inside, "still mine")
        assert client.count(SCOPE, prefix=True) >= 1
        # Watches (which pin their start to a read of what they watch), the
        # lock and the update loop stay inside the prefix too.
        with client.watch(inside) as one, client.watch(SCOPE, prefix=True) as scoped:
            revision = client.put(inside, "watched").revision
            assert [event.revision for event in take(one, 1)] == [revision]
            assert [event.revision for event in take(scoped, 1)] == [revision]
        with client.lock(f"{inside}/lock", ttl=2):
            client.update(inside, lambda value: (value or b"") + b"!")
        refused: list[Callable[[], Any]] = [
            lambda: client.set(outside, "v"),
            lambda: client.get(outside),
            lambda: client.put(outside, "v"),
            lambda: client.get_kv(outside),
            lambda: client.count(),  # every key
            lambda: client.watch(outside),
            lambda: client.snapshot(),  # every key
        ]
        for call in refused:
            with pytest.raises(PermissionDenied):
                call()


def test_refusals_are_key_value_errors_with_the_server_text(token_server: KvServer) -> None:
    with (
        Client(token_server.address, token=READ_TOKEN) as client,
        pytest.raises(KeyValueError) as refused,
    ):
        client.set("k", "v")
    assert isinstance(refused.value, PermissionDenied)
    assert refused.value.code.name == "PERMISSION_DENIED"
    assert "/simplekeyvalue.KeyValue/Set" in refused.value.message


def test_tls_and_a_token_together(tls_token_server: KvServer, pki: Pki, key: str) -> None:
    with Client(tls_token_server.localhost_address, ca_file=pki.ca, token=WRITE_TOKEN) as client:
        client.set(key, "both")
        assert client.get(key) == "both"
        with client.watch(key) as events:
            client.put(key, "watched")
            assert [event.kv.value for event in take(events, 1)] == [b"watched"]
        assert "tls token" in repr(client)
        assert WRITE_TOKEN not in repr(client)
    with (
        Client(tls_token_server.address, ca_file=pki.ca) as anonymous,
        pytest.raises(Unauthenticated),
    ):
        anonymous.get(key)
    with Client(tls_token_server.address, ca_file=pki.ca, token=READ_TOKEN) as reader:
        assert reader.get(key) == "watched"
        with pytest.raises(PermissionDenied):
            reader.set(key, "no")


# ---- argument checks ------------------------------------------------------------------


def test_a_cert_without_a_key_is_a_value_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match="cert_file needs key_file"):
        Client("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client.cert)
    with pytest.raises(ValueError, match="key_file needs cert_file"):
        Client("127.0.0.1:1", ca_file=pki.ca, key_file=pki.client.key)


def test_a_private_key_as_ca_file_is_refused_at_construction(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"ca_file .*client\.key.* holds no certificate"):
        Client("127.0.0.1:1", ca_file=pki.client.key)
    # And the other way round: a certificate where the key should be.
    with pytest.raises(ValueError, match=r"key_file .* holds no private key"):
        Client("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.ca)


def test_tls_true_trusts_the_roots_openssl_finds(
    tls_server: KvServer, pki: Pki, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE is where OpenSSL (so tls=True) looks for the system's roots.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    with Client(f"kv://{tls_server.localhost_address}", tls=True) as client:
        client.set(key, "over system-trusted TLS")
        assert client.get(key) == "over system-trusted TLS"


def test_tls_true_trusts_the_system_roots_not_a_private_ca(tls_server: KvServer, key: str) -> None:
    # The test CA is in no system store: the handshake fails, but TLS was tried.
    with Client(tls_server.localhost_address, tls=True, timeout=5) as client:
        assert client.tls
        with pytest.raises(ServerUnavailable):
            client.set(key, "v")


def test_a_client_certificate_needs_a_ca_file(pki: Pki) -> None:
    with pytest.raises(ValueError, match="need ca_file"):
        Client("127.0.0.1:1", cert_file=pki.client.cert, key_file=pki.client.key)


def test_an_unreadable_file_is_named(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ValueError, match=r"cannot read ca_file .*missing-ca\.pem"):
        Client("127.0.0.1:1", ca_file=missing)
    with pytest.raises(ValueError, match=r"cannot read key_file .*missing-ca\.pem"):
        Client("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client.cert, key_file=missing)
    with pytest.raises(ValueError, match="cannot read ca_file"):
        Client("127.0.0.1:1", ca_file=tmp_path)  # a directory


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"ca_file .*garbage\.pem.* is not a PEM file"):
        Client("127.0.0.1:1", ca_file=garbage)


@pytest.mark.parametrize("token", ["", "two words", "new\nline", "caf\u00e9"])
def test_a_token_that_cannot_be_a_header_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        Client("127.0.0.1:1", token=token)
