"""The Grafana dashboard's queries, and the metric names they use.

:func:`series_in` reads the metric names out of a PromQL expression: strings, label
matchers (``{...}``), ranges (``[5m]``), ``by``/``without`` groupings and numbers are
removed; what is left of the identifiers, less functions (followed by ``(``), aggregation
and keyword operators, are the series the query selects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "iomtnode.json"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every query of every panel, and of every templating variable."""
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query:
            found.append(query)
    return found


def series_in(expr: str) -> set[str]:
    """The metric names ``expr`` selects (see the module doc)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges (with their $__rate_interval)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables elsewhere
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        following = text[match.end():].lstrip()[:1]
        if following == "(" or name.lower() in KEYWORDS:
            continue  # a function, an aggregation or an operator
        if match.start() and text[match.start() - 1] in "0123456789.":
            continue  # the exponent of a number (1e3)
        names.add(name)
    return names


def label_values_metric(expr: str) -> str | None:
    """The metric of a ``label_values(metric, label)`` variable query, else None."""
    match = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*\w+\s*\)\s*",
                         expr)
    return match.group(1) if match else None


def dashboard_series() -> set[str]:
    """Every series the dashboard's queries name."""
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for expr in exprs(dashboard):
        metric = label_values_metric(expr)
        names |= {metric} if metric is not None else series_in(expr)
    return names


def missing(series: set[str], exported: dict[str, str]) -> set[str]:
    """Of ``series``, those no family of ``exported`` (name as a query names it -> type:
    a counter's with ``_total``, a histogram's without suffix) provides: a histogram
    provides exactly its ``_bucket``, ``_sum`` and ``_count`` series, and only those."""
    out = set()
    for name in series:
        if exported.get(name) in ("gauge", "counter", "unknown", "info"):
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)), None)
        if base is not None and exported.get(base) == "histogram":
            continue
        out.add(name)
    return out


def exported_types(text: str) -> dict[str, str]:
    """Every metric family of an exposition, with or without samples, as a query names it
    (a counter's with ``_total``) -> its type."""
    return {f"{f.name}_total" if f.type == "counter" else f.name: f.type
            for f in text_string_to_metric_families(text)}
