"""The alerting rules of docs/metrics.md, run by Prometheus' own ``promtool test rules``
(skipped where promtool is not installed: Debian's package ``prometheus`` has it): each
expression parses, and "Node behind" fires for the node that is behind, and only for it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PROMTOOL = shutil.which("promtool")
PROMTOOL_TIMEOUT_S = 60


def documented_alerts() -> dict[str, tuple[str, str]]:
    """The table's alerts: name -> (expression, its ``for`` duration or "0m")."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text[text.index("## What to alert on"):text.index("## The dashboard")]
    alerts = {}
    for row in re.findall(r"^\| ([A-Z][^|]+?) \| `(.+?)`(?: for (\w+))? \|", section, re.M):
        name, expr, duration = row
        title = "".join(word[:1].upper() + word[1:] for word in name.split())
        alerts[title] = (expr.replace(r"\|", "|"), duration or "0m")
    return alerts


def test_the_table_is_found():
    alerts = documented_alerts()
    assert {"NodeDown", "NodeBehind", "ReadingsDropped"} <= set(alerts)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_node_behind_fires_for_the_node_behind(tmp_path: Path):
    # `max(iomtnode_height) - iomtnode_height` subtracts a series with no labels from series
    # with instance and job: PromQL matches no pair, so the alert never fired
    alerts = documented_alerts()
    rules = {"groups": [{"name": "iomtnode", "rules": [
        {"alert": name, "expr": expr, "for": duration}
        for name, (expr, duration) in alerts.items()]}]}
    (tmp_path / "rules.yml").write_text(json.dumps(rules))  # JSON is YAML
    series = [{"series": f'iomtnode_height{{instance="{node}",job="iomtnode"}}',
               "values": values} for node, values in (("a", "100+10x20"), ("b", "100+10x20"),
                                                      ("c", "100x20"))]
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "1m", "alertname": "NodeBehind", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "NodeBehind",
             "exp_alerts": [{"exp_labels": {"instance": "c", "job": "iomtnode"}}]}]}]}
    (tmp_path / "tests.yml").write_text(json.dumps(tests))
    run = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
