"""HTTP serving of the collector."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from metrics.collector import JobsCollector

log = logging.getLogger(__name__)


def build_registry(collector: JobsCollector | None = None) -> CollectorRegistry:
    """A registry holding only the jobs collector (no process metrics of the exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or JobsCollector())
    return registry


def serve(host: str, port: int, registry: CollectorRegistry) -> Any:
    """Start the /metrics server on a daemon thread; returns (server, thread)."""
    result = start_http_server(port, addr=host, registry=registry)
    log.info("Exporter listening on http://%s:%s/metrics", host, port)
    return result
