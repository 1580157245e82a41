"""The metrics record is one dataclass, and every one of its fields is documented."""

from __future__ import annotations

import dataclasses
import re

from support import REPO
from tlbench.train.protocol import CellMetrics


def test_every_metrics_field_is_documented_in_the_result_format():
    text = (REPO / "results" / "README.md").read_text()
    section = text[text.index("### `metrics`"):]
    documented = {name for row in re.findall(r"^\| ([^|]+) \|", section, re.M) for name in re.findall(r"`(\w+)`", row)}
    fields = {f.name for f in dataclasses.fields(CellMetrics)}
    assert fields - documented == set()
    assert documented - fields == set()  # nothing documented that no engine writes
