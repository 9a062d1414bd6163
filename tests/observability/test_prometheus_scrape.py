"""A real Prometheus scrapes a registry shaped by lucidgrant.metrics.Metrics and evaluates
deploy/prometheus/rules.yaml: the re-authorization alert fires for the grant that needs a
person, and for no other; every rule evaluates without error on real data."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lucidgrant.metrics import Metrics
from tests.observability.metric_names import RULES

DEADLINE = 40.0


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if path is None:
        pytest.fail(
            "the prometheus binary is not installed: install Debian's `prometheus` package "
            "(CI does); this test must not be skipped"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def grant_metrics(now: float) -> Metrics:
    metrics = Metrics()
    metrics.set_grant(
        "analytics",
        "reporting",
        access_expires_at=now + 1800,
        refresh_expires_at=now + 150 * 86400,
        last_refresh_at=now - 1800,
        ready=True,
        reauth_reason="InvalidGrant",
        failures=1,
        suspended=False,
    )
    metrics.set_grant(
        "analytics",
        "billing",
        access_expires_at=now + 3000,
        refresh_expires_at=now + 180 * 86400,
        last_refresh_at=now - 600,
        ready=True,
        reauth_reason=None,
        failures=0,
        suspended=False,
    )
    metrics.refreshes.labels("success").inc(3)
    metrics.refreshes.labels("invalid_grant").inc()
    metrics.observe_lucid("token_refresh", 200, 0.2)
    metrics.observe_lucid("token_refresh", 400, 0.1)
    metrics.grants.labels("ready").set(1)
    metrics.grants.labels("reauthorization_required").set(1)
    return metrics


@pytest.fixture
def exporter() -> Iterator[tuple[int, Metrics]]:
    metrics = grant_metrics(time.time())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(metrics.registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def prometheus(tmp_path: Path, exporter: tuple[int, Metrics]) -> Iterator[str]:
    binary = prometheus_binary()
    exporter_port, _ = exporter
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "lucidgrant",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        print(log.read_text())


def query(client: httpx.Client, base: str, expr: str) -> list[dict[str, Any]]:
    answer = client.get(f"{base}/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_real_prometheus_scrapes_and_fires_reauthorization(prometheus: str) -> None:
    started = time.monotonic()
    ready: list[dict[str, Any]] = []
    firing: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - started < DEADLINE:
            try:
                ready = query(client, prometheus, "lucidgrant_ready")
                alerts = client.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
                groups = client.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
            except (httpx.TransportError, ValueError):  # not listening, or not serving its API yet
                time.sleep(0.3)
                continue
            firing = [a for a in alerts if a["state"] == "firing"]
            rules = [rule for group in groups for rule in group["rules"]]
            if len(ready) == 2 and firing and rules and all(r["health"] == "ok" for r in rules):
                break
            time.sleep(0.3)
        else:
            pytest.fail(
                f"no firing alert within {DEADLINE}s: ready={ready} firing={firing} rules={rules}"
            )
        elapsed = time.monotonic() - started

        assert {(s["metric"]["namespace"], s["metric"]["name"]) for s in ready} == {
            ("analytics", "reporting"),
            ("analytics", "billing"),
        }
        assert all(s["metric"]["job"] == "lucidgrant" for s in ready)
        assert [
            (a["labels"]["alertname"], a["labels"].get("namespace"), a["labels"].get("name"))
            for a in firing
        ] == [("LucidGrantReauthorizationRequired", "analytics", "reporting")]
        (alert,) = firing
        assert alert["labels"]["reason"] == "InvalidGrant"
        assert alert["labels"]["severity"] == "critical"
        assert (
            "kubectl lucidgrant authorize reporting -n analytics"
            in (alert["annotations"]["description"])
        )
        # Every rule of the file was loaded and evaluates cleanly against real series.
        assert {r["name"] for r in rules} == {
            rule["alert"]
            for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]
        }
        # The operator-wide series arrive with their exported names.
        assert query(client, prometheus, 'lucidgrant_refresh_total{result="invalid_grant"}')
        assert query(client, prometheus, "lucidgrant_refresh_duration_seconds_bucket")
        assert query(client, prometheus, "lucidgrant_build_info")
    print(f"alert firing after {elapsed:.1f}s")
