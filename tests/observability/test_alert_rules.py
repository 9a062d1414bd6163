"""The alert rules: promtool accepts them and their unit tests pass, the PrometheusRule carries
the same groups, every alert is documented, and every expression names exported metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.metric_names import (
    PROMETHEUS_RULE,
    PROMETHEUS_SERIES,
    PROMTOOL_TESTS,
    ROOT,
    RULES,
    exported_metric_names,
    metric_names_in,
)

EXPECTED_ALERTS = {
    "LucidGrantReauthorizationRequired": "critical",
    "LucidGrantRefreshTokenExpiringSoon": "warning",
    "LucidGrantRefreshTokenExpiringCritical": "critical",
    "LucidGrantAccessTokenExpired": "critical",
    "LucidGrantRefreshFailing": "warning",
    "LucidGrantNotReady": "warning",
    "LucidGrantOperatorDown": "critical",
    "LucidUnavailable": "critical",
}
# Runbooks live in docs/: those of the per-grant alerts in metrics-and-alerts.md, that of
# LucidUnavailable in lucid-outages.md.
RUNBOOK_URL = re.compile(
    r"https://github\.com/lucidgrant/lucidgrant/blob/main/(?P<path>docs/[\w.-]+\.md)#(?P<anchor>[\w-]+)"
)


def runbook_text(path: str) -> str:
    """The docs page a runbook_url points at."""
    return (ROOT / path).read_text()


def promtool() -> str:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (CI does)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    print(result.stdout)
    print(result.stderr)
    return result


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_checks_the_prometheus_rule_groups(tmp_path: Path) -> None:
    extracted = tmp_path / "from-prometheusrule.yaml"
    extracted.write_text(yaml.safe_dump({"groups": load(PROMETHEUS_RULE)["spec"]["groups"]}))
    result = run("check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert PROMTOOL_TESTS, "no promtool unit test files in tests/observability"
    result = run("test", "rules", *(str(p) for p in PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def run_unit_tests_against(
    tmp_path: Path, rules: str, group: str
) -> subprocess.CompletedProcess[str]:
    """The unit-test group named `group` (it must exist) against `rules`: each group replays
    hours of samples, so a mutation is checked by the group about it, not by all of them."""
    broken = tmp_path / "rules.yaml"
    broken.write_text(rules)
    for test_file in PROMTOOL_TESTS:
        data = load(test_file)
        data["rule_files"] = [str(broken)]
        data["tests"] = [t for t in data["tests"] if t["name"] == group]
        assert data["tests"], f"no unit-test group {group!r} in {test_file.name}"
        (tmp_path / test_file.name).write_text(yaml.safe_dump(data))
    return run("test", "rules", *(str(tmp_path / p.name) for p in PROMTOOL_TESTS))


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests see the rules: with the access alert's threshold moved, they fail."""
    text = RULES.read_text()
    assert "> 600)" in text
    result = run_unit_tests_against(
        tmp_path, text.replace("> 600)", "> 6000)"), "two-hour provider outage"
    )
    assert result.returncode != 0
    assert "LucidGrantAccessTokenExpired" in result.stdout + result.stderr


def test_without_the_hold_back_an_outage_fires_per_grant(tmp_path: Path) -> None:
    """The per-grant alerts are held back by the gate series alone: without that clause, the
    fleet-outage unit test sees one alert per grant and fails."""
    hold_back = "unless on () (max(max_over_time(lucidgrant_lucid_gate_closed[10m])) == 1)"
    text = RULES.read_text()
    assert text.count(hold_back) == 2
    result = run_unit_tests_against(
        tmp_path,
        "\n".join(line for line in text.splitlines() if hold_back not in line),
        "a Lucid outage at fleet scale fires one alert, not one per grant",
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'alertname="LucidGrantAccessTokenExpired", alertstate="firing", name="crm"' in output


def test_prometheus_rule_has_the_same_groups() -> None:
    resource = load(PROMETHEUS_RULE)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["namespace"] == "lucidgrant-system"
    assert resource["metadata"]["labels"], "a Prometheus ruleSelector needs labels"
    assert resource["spec"]["groups"] == load(RULES)["groups"]


def test_the_expected_alerts_exist_with_their_severity() -> None:
    groups = load(RULES)["groups"]
    assert [g["name"] for g in groups] == ["lucidgrant"]
    assert {a["alert"]: a["labels"]["severity"] for a in alerts()} == EXPECTED_ALERTS


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_is_documented(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = alert["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{name} has no {key}"
    url = RUNBOOK_URL.fullmatch(annotations["runbook_url"])
    assert url, f"{name}: runbook_url {annotations['runbook_url']} is not a page in docs/"
    assert url.group("anchor") == f"runbook-{name.lower()}"
    # The section that the anchor points at (GitHub lowercases headings, drops ':' and turns
    # spaces into '-': "### Runbook: LucidGrantX" -> #runbook-lucidgrantx).
    assert f"### Runbook: {name}\n" in runbook_text(url.group("path"))


def test_reauthorization_alert_fires_at_once_and_says_what_to_do() -> None:
    (alert,) = [a for a in alerts() if a["alert"] == "LucidGrantReauthorizationRequired"]
    assert alert.get("for", "0m") in ("0m", "0s", "0")
    text = alert["annotations"]["description"]
    assert "kubectl lucidgrant authorize {{ $labels.name }} -n {{ $labels.namespace }}" in text
    assert "status.authorizationURL" in text
    assert "bootstrap Secret" in text


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y,z", le!="b"}[5m] offset 1h)))'
        " / on (namespace, name) group_left (reason) max without (pod) (b_seconds)"
        " > 14 * 86400 unless on () absent(c_total) or d:e:f and bool 1e3"
    )
    assert metric_names_in(expr) == {"a_bucket", "b_seconds", "c_total", "d:e:f"}
    assert "lucidgrant_refresh_total" in exported_metric_names()
    assert "lucidgrant_refresh_duration_seconds_bucket" in exported_metric_names()
    assert "lucidgrant_build_info" in exported_metric_names()
    assert "lucidgrant_refresh" not in exported_metric_names()


def test_every_metric_in_the_rules_is_exported() -> None:
    exported = exported_metric_names() | PROMETHEUS_SERIES
    used: set[str] = set()
    for alert in alerts():
        names = metric_names_in(alert["expr"])
        assert names, f"no metric found in {alert['alert']}"
        unknown = names - exported
        assert not unknown, f"{alert['alert']} uses metrics the operator does not export: {unknown}"
        used |= names
    assert {"lucidgrant_reauthorization_required", "lucidgrant_build_info", "up"} <= used


def test_promtool_tests_name_only_exported_series() -> None:
    """Input series in the unit tests are what the operator (or Prometheus) really exports."""
    exported = exported_metric_names() | PROMETHEUS_SERIES
    for test_file in PROMTOOL_TESTS:
        for case in load(test_file)["tests"]:
            for series in case.get("input_series", []):
                name = re.match(r"[\w:]+", series["series"])
                assert name and name.group(0) in exported, (test_file.name, series["series"])
