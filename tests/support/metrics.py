"""Prometheus text read back as a test sees it: samples by name, one value picked by labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "scrape", "value"]

#: ``{sample name: [(labels, value), ...]}``
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    """The samples of the exposition at ``url`` (blocking: call it in a thread from a loop)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels`` (fails if none or several)."""
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]
