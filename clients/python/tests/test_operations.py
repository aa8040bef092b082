"""What operators' tools see of a real kvserver.

Reflection, as grpcurl and grpcio-reflection use it, and the metrics page,
read by Prometheus' own parser.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from kvserver_process import KvServer, serve
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from keyvalue import Client, KeyNotFound


@pytest.fixture
def metrics_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    yield from serve(kvserver_bin, tmp_path_factory, ["--metrics-listen", "127.0.0.1:0"])


def test_reflection_lists_and_describes_both_services(server: KvServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"simplekeyvalue.KeyValue", "keyvalue.v1.KV"} <= services
        kv = database.FindFileContainingSymbol("keyvalue.v1.KV")
        assert kv.package == "keyvalue.v1"
        assert "KV" in [service.name for service in kv.service]


def test_the_metrics_page_parses_and_counts_what_happened(metrics_server: KvServer) -> None:
    match = re.search(r"^metrics on (http://\S+)$", metrics_server.log(), re.MULTILINE)
    assert match, metrics_server.log()
    with Client(metrics_server.address) as client:
        client.set("weather", "sunny")
        client.set("weather", "rain")
        assert client.get("weather") == "rain"
        with pytest.raises(KeyNotFound):
            client.get("never-set")
        # Read while the client's connection is open: the only one this server has.
        page = read_page(match.group(1))
    families = metric_families(page)

    requests = {
        (sample.labels["method"], sample.labels["code"]): sample.value
        for sample in families["kv_requests"].samples
        if sample.name == "kv_requests_total"
    }
    assert requests[("/simplekeyvalue.KeyValue/Set", "OK")] == 2
    assert requests[("/simplekeyvalue.KeyValue/Get", "OK")] == 1
    assert requests[("/simplekeyvalue.KeyValue/Get", "NOT_FOUND")] == 1

    latency = families["kv_request_duration_seconds"]
    assert latency.type == "histogram"
    counts = [s for s in latency.samples if s.name.endswith("_count")]
    assert sum(s.value for s in counts) == 4
    keys = families["kv_keys"].samples[0].value
    assert keys == 1
    assert families["kv_connections_open"].samples[0].value == 1
    # Once the client is closed, the server counts its connection closed too.
    deadline = time.monotonic() + 5.0
    while connections_open(read_page(match.group(1))) != 0:
        assert time.monotonic() < deadline, "kv_connections_open stayed above 0"
        time.sleep(0.05)


def metric_families(page: str) -> dict[str, Metric]:
    """The metric families of an OpenMetrics page, by name.

    kvserver writes the OpenMetrics text format (through the Rust
    ``prometheus-client`` crate), so the OpenMetrics parser reads it.
    """
    parsed = text_string_to_metric_families(page)  # type: ignore[no-untyped-call]
    return {family.name: family for family in parsed}


def read_page(url: str) -> str:
    """The metrics page at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode()
    return text


def connections_open(page: str) -> float:
    """The value of ``kv_connections_open`` on a metrics page."""
    families = metric_families(page)
    value: float = families["kv_connections_open"].samples[0].value
    return value
