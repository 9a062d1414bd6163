"""`lucidgrant authorize` and `kubectl lucidgrant` as processes of their own (tests/prefork.py),
against the Lucid emulator's automatic consent and the emulated Kubernetes API (through a
kubeconfig, as on a laptop)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from lucidgrant_testbed.lucid import LucidEmulator
from tests.prefork import popen, run

from .harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    ROOT,
    SCOPES,
    Cluster,
    free_port,
    grant_spec,
    leaked,
    wait_for,
)

PLUGIN = [sys.executable, "-m", "lucidgrant.cli.kubectl"]
CLI = [sys.executable, "-m", "lucidgrant"]


def env_for(kubeconfig: Path, lucid: LucidEmulator, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "LUCIDGRANT_LUCID_APP_URL": lucid.url,
        "LUCIDGRANT_LUCID_API_URL": lucid.url,
        "LUCIDGRANT_TEST_BROWSER": "httpx",
        **extra,
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def no_leaks(lucid: LucidEmulator, *texts: str) -> None:
    assert not leaked(lucid.all_issued_secrets() | {CLIENT_SECRET}, list(texts))


def client_secret(cluster: Cluster) -> None:
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


def account_grant_without_authorization(cluster: Cluster) -> None:
    """Grant `acct` (an account token) and its client Secret, with no spec.authorization."""
    client_secret(cluster)
    spec = grant_spec(tokenKind="account")
    del spec["authorization"]
    assert cluster.create_grant("acct", spec).status_code == 201


def test_authorize_writes_the_bootstrap_and_the_operator_adopts_it(
    cluster, lucid, admin_kubeconfig, start_operator
):
    client_secret(cluster)
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "ReauthorizationRequired"), what="awaiting")

    port = free_port()
    env = env_for(admin_kubeconfig, lucid)
    done = run([*CLI, "authorize", "reporting", "-n", "default", "--port", str(port)], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Secret default/lucid-bootstrap key refresh_token" in done.stderr
    assert lucid.calls[("authorize", 302)] == 1 and lucid.calls[("token_code", 200)] == 1
    assert (cluster.secret("lucid-bootstrap") or {}).get("refresh_token", "").startswith("lrt_")

    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
    (grant,) = lucid.grant_infos()
    assert grant.scopes == tuple(SCOPES)
    wait_for(
        lambda: (
            (cluster.secret("reporting-lucidgrant-state") or {}).get("refresh_token")
            == lucid.grant_info(grant.id).refresh_token
        ),
        what="the adopted grant stored",
    )
    no_leaks(lucid, done.stdout, done.stderr)


def test_dry_run_prints_the_manifest_and_writes_nothing(cluster, lucid, admin_kubeconfig):
    client_secret(cluster)
    redirect = "https://ops.example.com/lucidgrant/callback"
    spec = grant_spec(redirectUri=redirect, authorization={"codeSecretRef": {"name": "code"}})
    assert cluster.create_grant("reporting", spec).status_code == 201
    before = cluster.grant("reporting")

    env = env_for(admin_kubeconfig, lucid)
    done = run([*CLI, "authorize", "reporting", "--dry-run", "--port", str(free_port())], env)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(done.stdout)
    assert manifest["kind"] == "Secret"
    assert manifest["metadata"] == {
        "name": "reporting-bootstrap",
        "namespace": "default",
        "labels": {"lucidgrant.dev/role": "client"},
    }
    (token,) = manifest["stringData"].values()
    assert token in lucid.live_refresh_tokens()
    assert "WARNING" in done.stderr and "--patch-grant" in done.stderr
    no_leaks(lucid, done.stderr)
    assert cluster.secret("reporting-bootstrap") is None
    assert cluster.grant("reporting") == before


def test_kubectl_authorize_patches_a_grant_without_bootstrap(
    cluster, lucid, admin_kubeconfig, start_operator
):
    account_grant_without_authorization(cluster)
    env = env_for(admin_kubeconfig, lucid)
    args = ["authorize", "acct", "--patch-grant", "--port", str(free_port())]
    done = run([*PLUGIN, *args], env)
    assert done.returncode == 0, done.stderr
    authorization = (cluster.grant("acct") or {})["spec"]["authorization"]
    assert authorization == {
        "refreshTokenSecretRef": {"name": "acct-bootstrap", "key": "refresh_token"}
    }
    start_operator()
    wait_for(lambda: cluster.is_true("acct", "Ready"), what="Ready")
    assert (cluster.grant("acct") or {})["status"]["lucidAccountId"] == "2002"
    no_leaks(lucid, done.stdout, done.stderr)


def test_the_loopback_ignores_a_foreign_state_and_waits(cluster, lucid, admin_kubeconfig):
    client_secret(cluster)
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    port = free_port()
    env = env_for(admin_kubeconfig, lucid)
    del env["LUCIDGRANT_TEST_BROWSER"]
    cmd = [*CLI, "authorize", "reporting", "--no-browser", "--port", str(port), "--timeout", "15"]
    proc = popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        while not url.startswith("http"):
            url = proc.stderr.readline().strip()
            assert url or proc.poll() is None, "the command ended without printing a URL"
        assert url.startswith(f"{lucid.url}/oauth2/authorize?")
        forged = httpx.get(f"http://127.0.0.1:{port}/callback", params={"code": "x", "state": "y"})
        assert forged.status_code == 400 and "expected state" in forged.text
        assert httpx.get(url, follow_redirects=True).status_code == 200
        assert proc.wait(15) == 0
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "lucid-bootstrap" in rest
    assert (cluster.secret("lucid-bootstrap") or {}).get("refresh_token")
    no_leaks(lucid, url, rest)


def test_kubectl_status_and_refresh(cluster, lucid, admin_kubeconfig, start_operator):
    client_secret(cluster)
    tokens = lucid.issue_grant(CLIENT_ID, SCOPES)
    cluster.put_secret("lucid-bootstrap", {"refresh_token": tokens["refresh_token"]})
    grant_id = str(lucid.grant_of(tokens["refresh_token"]))
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    env = env_for(admin_kubeconfig, lucid)

    shown = run([*PLUGIN, "status", "-n", "default"], env)
    assert shown.returncode == 0, shown.stderr
    header, line = shown.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "READY",
        "REASON",
        "ACCESS",
        "EXPIRES",
        "IN",
        "REFRESH",
        "EXPIRES",
        "IN",
        "AGE",
    ]
    cells = line.split()
    assert cells[:3] == ["reporting", "True", "Refreshed"]
    assert cells[3].endswith("s") and cells[4].endswith(("d", "m", "s"))
    everywhere = run([*PLUGIN, "status", "-A"], env)
    assert everywhere.stdout.splitlines()[1].split()[:2] == ["default", "reporting"]

    rotations = lucid.grant_info(grant_id).rotations
    refreshed = run([*PLUGIN, "refresh", "reporting", "--timeout", "15"], env)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "refreshed at" in refreshed.stdout
    assert lucid.grant_info(grant_id).rotations > rotations
    annotations: dict[str, Any] = (cluster.grant("reporting") or {})["metadata"].get(
        "annotations"
    ) or {}
    assert "lucidgrant.dev/refresh-now" not in annotations

    # A revoked grant: the forced refresh finds out, and the command says what to do.
    lucid.revoke_grant_of(tokens["access_token"])
    dead = run([*PLUGIN, "refresh", "reporting", "--timeout", "10"], env)
    assert dead.returncode == 1, dead.stderr
    assert (
        "needs a person" in dead.stderr and "kubectl lucidgrant authorize reporting" in dead.stderr
    )
    assert cluster.is_true("reporting", "ReauthorizationRequired")
    assert run([*PLUGIN, "status"], env).stdout.splitlines()[1].split()[1:3] == [
        "False",
        "InvalidGrant",
    ]
    started = time.monotonic()
    again = run([*PLUGIN, "refresh", "reporting", "--timeout", "60"], env, timeout=60)
    assert again.returncode == 1 and time.monotonic() - started < 30
    # The operator clears the annotation once it has acted on it (after the status it wrote).
    wait_for(
        lambda: (
            "lucidgrant.dev/refresh-now"
            not in ((cluster.grant("reporting") or {})["metadata"].get("annotations") or {})
        ),
        what="the refresh-now annotation cleared",
    )
    no_leaks(lucid, shown.stdout, refreshed.stdout, refreshed.stderr, dead.stderr)
