"""Parses Prometheus text from stdin with the official prometheus_client parser and
prints every sample as JSON (used by tests/accounting.rs)."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps(samples))
