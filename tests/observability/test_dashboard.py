"""The Grafana dashboard: valid JSON, every panel titled and queried, every query names metrics
the operator exports, and the per-grant variables are wired in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.observability.metric_names import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    exported_metric_names,
    metric_names_in_grafana_query,
)


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and every query variable."""
    data = dashboard()
    for panel in panels(data["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"${variable['name']}", query["query"] if isinstance(query, dict) else query


def test_dashboard_is_a_grafana_dashboard() -> None:
    data = dashboard()
    assert data["title"]
    assert data["uid"]
    assert 36 <= data["schemaVersion"] <= 41
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "grant"} <= variables.keys()
    ids = [p["id"] for p in panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_has_a_title_and_a_query() -> None:
    for panel in panels(dashboard()["panels"]):
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"empty query in {panel['title']!r}"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_query_names_exported_metrics() -> None:
    exported = exported_metric_names() | PROMETHEUS_SERIES
    used: set[str] = set()
    for where, query in queries():
        names = metric_names_in_grafana_query(query)
        assert names, f"no metric in {where}: {query}"
        unknown = names - exported
        assert not unknown, f"{where} queries metrics the operator does not export: {unknown}"
        used |= names
    # The brief's panels: both expiries, ready, re-authorization, failures, refreshes, requests,
    # duration, grants by state.
    assert {
        "lucidgrant_access_token_expiry_timestamp_seconds",
        "lucidgrant_refresh_token_expiry_timestamp_seconds",
        "lucidgrant_ready",
        "lucidgrant_reauthorization_required",
        "lucidgrant_consecutive_failures",
        "lucidgrant_refresh_total",
        "lucidgrant_lucid_requests_total",
        "lucidgrant_refresh_duration_seconds_bucket",
        "lucidgrant_grants",
    } <= used


def test_per_grant_queries_follow_the_variables() -> None:
    per_grant = [
        (where, q)
        for where, q in queries()
        if "lucidgrant_" in q and not where.startswith("$") and "namespace" in q and "name" in q
    ]
    assert per_grant
    for where, query in per_grant:
        if "by (namespace, name" in query:
            assert 'namespace=~"$namespace"' in query, where
            assert 'name=~"$grant"' in query, where


def test_the_reauthorization_panel_shows_the_reason() -> None:
    reauth = [q for _, q in queries() if "lucidgrant_reauthorization_required" in q]
    assert reauth
    assert all("reason" in q for q in reauth)
