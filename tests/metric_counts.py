"""Prometheus samples of this test process, read as a scrape would read them."""

from __future__ import annotations

from prometheus_client import REGISTRY


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """Sample values before and after: `counts.delta(name, **labels)`."""

    def __init__(self):
        self.before = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in _samples()}

    def delta(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self.before.get((name, tuple(sorted(labels.items()))), 0.0)


def _samples():
    for family in REGISTRY.collect():
        yield from family.samples
