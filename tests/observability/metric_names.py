"""Shared helpers for the observability tests: the metric names the operator exports, and the
metric names a PromQL expression (an alert rule or a Grafana query) refers to."""

from __future__ import annotations

import re
from pathlib import Path

from lucidgrant.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "lucidgrant-dashboard.json"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "observability").glob("*.yaml"))

# Series that Prometheus itself makes for every target, allowed in expressions.
PROMETHEUS_SERIES = frozenset({"up"})

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "info": ("_info",),
    "gauge": ("",),
}


def exported_metric_names() -> frozenset[str]:
    """The series names a fresh `Metrics()` exposes, by metric family and type.

    Counters are exposed as `<name>_total`, histograms as `_bucket`, `_sum` and `_count`, an
    Info as `<name>_info`, gauges under their own name.
    """
    names: set[str] = set()
    for family in Metrics().registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return frozenset(names)


# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = frozenset(
    {
        # binary and set operators, modifiers
        "and",
        "or",
        "unless",
        "bool",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "by",
        "without",
        "offset",
        "atstart",
        "inf",
        "nan",
        # aggregation operators (they may be followed by `by (...)` before their parenthesis)
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def metric_names_in(expr: str) -> set[str]:
    """Metric names referred to by a PromQL expression (or a Grafana query using variables)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("1m", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*?)(?:,\s*\w+\s*)?\)\s*$", re.S)


def metric_names_in_grafana_query(query: str) -> set[str]:
    """Like metric_names_in, but also reads Grafana's `label_values(<series>, <label>)`."""
    match = _LABEL_VALUES.match(query)
    if match:
        return metric_names_in(match.group(1))
    return metric_names_in(query)
