"""`lucidgrant` as a person runs it: --version, help texts, one-line fatal errors, the log
formats and the start-up summary, as subprocesses against the emulated API."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

from lucidgrant import __version__
from lucidgrant.cli import cli
from lucidgrant.cli.kubectl import cli as plugin
from lucidgrant.config import ENVIRONMENT
from tests.prefork import run

from .harness import ROOT, wait_for
from .test_cli_authorize import CLI, PLUGIN

PACKAGE = ROOT / "operator" / "lucidgrant"
# Read by the command-line tools on a laptop, not by the operator.
CLI_ONLY = {"LUCIDGRANT_CLIENT_SECRET", "LUCIDGRANT_TEST_BROWSER"}


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **extra}
    return env


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in done.stdout
    return lines[0]


def test_version_and_help_are_whole(tmp_path):
    env = base_env(tmp_path)
    # A real interpreter's start, where every other test forks one (tests/prefork.py).
    version = subprocess.run([*CLI, "--version"], env=env, capture_output=True, text=True)
    assert version.stdout == f"lucidgrant {__version__}\n"
    for program, group in ((CLI, cli), (PLUGIN, plugin)):
        top = run([*program, "--help"], env)
        assert top.returncode == 0, top.stderr
        listing = " ".join(top.stdout.partition("Commands:")[2].split())
        for name, command in group.commands.items():
            first = " ".join((command.help or "").split("\n\n")[0].split())
            assert f"{name} {first}" in listing, (name, listing)


def test_run_help_lists_every_variable_the_operator_reads(tmp_path):
    shown = run([*CLI, "run", "--help"], base_env(tmp_path)).stdout
    listed = set(re.findall(r"^\s+(LUCIDGRANT_\w+)\s", shown, re.M))
    assert listed == {var.name for var in ENVIRONMENT}
    assert re.search(r"LUCIDGRANT_HTTP_PORT\s+.*\[8080\]", shown)
    # The list is the code's: a variable read anywhere in the operator must be in it.
    read = {
        name
        for path in PACKAGE.rglob("*.py")
        if "testbed" not in path.parts
        for name in re.findall(r"\"(LUCIDGRANT_[A-Z_]+)\"", path.read_text())
    }
    assert read - CLI_ONLY <= listed, read - CLI_ONLY - listed


def test_fatal_start_up_errors_are_one_line_and_quick(tmp_path, kube_api):
    missing = run([*CLI, "run", "-A"], base_env(tmp_path, KUBECONFIG=str(tmp_path / "none")))
    one_line_error(missing, 1, "no kubeconfig at", "KUBECONFIG")

    # In a pod without its service account token (automountServiceAccountToken: false).
    pod = base_env(tmp_path, KUBERNETES_SERVICE_HOST="10.0.0.1", KUBERNETES_SERVICE_PORT="443")
    one_line_error(run([*CLI, "run", "-A"], pod), 1, "in-cluster configuration")

    bad_flag = run([*CLI, "run", "--namespaces", "x"], base_env(tmp_path))
    one_line_error(bad_flag, 2, "--namespaces", "lucidgrant run --help")
    neither = run([*CLI, "run"], base_env(tmp_path))
    one_line_error(neither, 2, "--all-namespaces")

    bad_env = run([*CLI, "run", "-A"], base_env(tmp_path, LUCIDGRANT_LEASE_DURATION="soon"))
    one_line_error(bad_env, 1, "LUCIDGRANT_LEASE_DURATION='soon'", "seconds")

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = base_env(
            tmp_path,
            KUBECONFIG=str(kube_api[1]),
            LUCIDGRANT_HTTP_HOST="127.0.0.1",
            LUCIDGRANT_HTTP_PORT=str(port),
        )
        started = time.monotonic()
        busy = run([*CLI, "run", "-A"], env)
        # At once: kopf's start-up handler would retry after a minute.
        assert time.monotonic() - started < 15
    one_line_error(busy, 1, f"127.0.0.1:{port}", "LUCIDGRANT_HTTP_PORT")


def test_json_logs_and_the_start_up_summary(cluster, start_operator):
    operator = start_operator("--namespace", "default", "--log-format", "json")
    wait_for(lambda: "kopf.activities.startup" in operator.logs(), what="kopf's startup log")
    entries = [json.loads(line) for line in operator.logs().splitlines()]
    assert entries and all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", e["time"]) for e in entries
    )
    loggers = {e["logger"] for e in entries}
    assert "kopf.activities.startup" in loggers and "kopf.activities.star" not in loggers
    (summary,) = [e["message"] for e in entries if " starting: " in e["message"]]
    assert summary.startswith(f"lucidgrant {__version__} starting: namespaces default; Lucid http")
    assert f"HTTP 127.0.0.1:{operator.port}" in summary
    assert "leader election off" in summary and "identity " in summary


def test_text_logs_keep_whole_logger_names(cluster, start_operator):
    operator = start_operator(
        "-A", LUCIDGRANT_LEADER_ELECTION="true", LUCIDGRANT_POD_NAMESPACE="default"
    )
    wait_for(lambda: "kopf.activities.startup" in operator.logs(), what="kopf's startup log")
    (summary,) = [line for line in operator.logs().splitlines() if " starting: " in line]
    assert " INFO lucidgrant.cli.run: lucidgrant " in summary
    assert (
        "namespaces all;" in summary
        and "leader election on (Lease default/lucidgrant-leader)" in summary
    )
