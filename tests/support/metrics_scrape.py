"""Scraping the exporter over real HTTP and looking series up by name and labels."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; KeyError (listing the names' label sets) if absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        seen = [dict(k[1]) for k in samples if k[0] == name][:10]
        raise KeyError(f"{name}{labels} not exported; some exported label sets: {seen}")
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {k[0] for k in samples}


@contextmanager
def exporter(**collector_kwargs: Any) -> Iterator[Any]:
    """The real exporter HTTP server on an ephemeral loopback port; yields ``scrape()``."""
    from metrics.collector import JobsCollector
    from metrics.server import build_registry, serve

    collector = JobsCollector(**collector_kwargs)
    server, thread = serve("127.0.0.1", 0, build_registry(collector))
    port = server.server_port

    def scrape() -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            return parse(resp.read().decode())

    scrape.port = port  # type: ignore[attr-defined]
    scrape.collector = collector  # type: ignore[attr-defined]
    try:
        yield scrape
    finally:
        server.shutdown()
        server.server_close()
        collector.tenant_engines.dispose()
        thread.join(5)
