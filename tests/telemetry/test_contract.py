"""docs/metrics.md is the metrics' contract: its tables list exactly the metrics the node
exports (name, type, labels), and its rejection reasons every rule the chain has."""

from __future__ import annotations

import re
from pathlib import Path

from iomtnode.admission.service import reason_name
from iomtnode.core import errors as e
from iomtnode.telemetry import METRICS

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(iomtnode_\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    return {name: (kind, tuple(re.findall(r"`(\w+)`", labels)))
            for name, kind, labels in ROW.findall(DOC.read_text())}


def test_the_tables_list_every_metric_with_its_type_and_labels():
    assert documented() == {spec.name: (spec.kind, spec.labels) for spec in METRICS}


def test_every_name_carries_the_prefix_and_a_counter_its_total():
    for spec in METRICS:
        assert re.fullmatch(r"iomtnode_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name


def rules(kind: type[e.RuleError]) -> set[type[e.RuleError]]:
    found = set()
    for sub in kind.__subclasses__():
        found |= {sub} | rules(sub)
    return found


def test_every_rule_is_a_documented_rejection_reason_with_its_code():
    text = DOC.read_text()
    for rule in rules(e.RuleError):
        assert f"`{reason_name(rule)}`" in text, rule.__name__
        assert str(rule.code) in text, rule.__name__
