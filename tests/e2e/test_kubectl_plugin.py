"""`kubectl lucidgrant` status, authorize and check as a person runs them: subprocesses
against the emulated API (through a kubeconfig) and the Lucid emulator."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prefork import run

from .harness import CLIENT_ID, CLIENT_SECRET, ROOT, Cluster, free_port, grant_spec, wait_for
from .test_cli_authorize import (
    CLI,
    PLUGIN,
    account_grant_without_authorization,
    client_secret,
    env_for,
    no_leaks,
)
from .test_operator import authorized_grants

COLUMNS = ["NAME", "READY", "REASON", "ACCESS EXPIRES IN", "REFRESH EXPIRES IN", "AGE"]
WIDE = ["LAST REFRESH", "NEXT REFRESH", "FAILURES", "MESSAGE"]


def cells(line: str) -> list[str]:
    """A kubectl table line's cells: columns are three or more spaces apart."""
    return re.split(r" {3,}", line.strip())


def table(text: str) -> list[list[str]]:
    return [cells(line) for line in text.splitlines()]


def namespace(cluster: Cluster, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    assert cluster.http.post("/api/v1/namespaces", json=body).status_code == 201


def two_contexts(kubeconfig: Path, path: Path) -> Path:
    """The emulator's kubeconfig, with a dead cluster as the current context and the emulator
    as context `emu` whose namespace is `team`."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    config["clusters"] = [
        {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}},
        {"name": "emu", "cluster": {"server": server}},
    ]
    user = config["users"][0]["name"]
    config["contexts"] = [
        {"name": "dead", "context": {"cluster": "dead", "user": user}},
        {"name": "emu", "context": {"cluster": "emu", "user": user, "namespace": "team"}},
    ]
    config["current-context"] = "dead"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("install_mode", ["cluster"])  # the operator runs with -A
def test_status_columns_outputs_and_kubeconfig_flags(
    install_mode, cluster, lucid, admin_kubeconfig, start_operator, tmp_path
):
    authorized_grants(cluster, lucid, ["alpha"])
    assert cluster.create_grant("waiting", grant_spec(authorization=None)).status_code == 201
    namespace(cluster, "team")
    cluster.put_secret(
        "lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, ns="team"
    )
    assert cluster.create_grant("beta", grant_spec(), ns="team").status_code == 201
    start_operator("-A")
    wait_for(lambda: cluster.is_true("alpha", "Ready"), what="alpha Ready")
    wait_for(lambda: cluster.is_true("waiting", "ReauthorizationRequired"), what="waiting")
    env = env_for(admin_kubeconfig, lucid)

    shown = run([*PLUGIN, "status"], env)
    assert shown.returncode == 0, shown.stderr
    header, alpha, waiting = table(shown.stdout)
    assert header == COLUMNS
    assert alpha[:3] == ["alpha", "True", "Refreshed"]
    assert re.fullmatch(r"\d+s", alpha[3]) and re.fullmatch(r"\d+m(\d+s)?|\d+s", alpha[4])
    assert re.fullmatch(r"\d+s", alpha[5])
    assert waiting[:5] == ["waiting", "False", "AwaitingAuthorization", "<none>", "<none>"]
    # Columns line up: every cell starts where its header does.
    lines = shown.stdout.splitlines()
    starts = [lines[0].index(h) for h in COLUMNS]
    for line in lines[1:]:
        assert all(line[s - 1] == " " and line[s] != " " for s in starts[1:])

    one = run([*PLUGIN, "status", "alpha", "-o", "wide"], env)
    header, alpha = table(one.stdout)
    assert header == COLUMNS + WIDE
    assert alpha[6].endswith(" ago") and alpha[7].startswith("in ") and alpha[8] == "0"

    everywhere = table(run([*PLUGIN, "status", "-A"], env).stdout)
    assert everywhere[0] == ["NAMESPACE", *COLUMNS]
    assert [row[:2] for row in everywhere[1:]] == [
        ["default", "alpha"],
        ["default", "waiting"],
        ["team", "beta"],
    ]

    as_json = json.loads(run([*PLUGIN, "status", "alpha", "-o", "json"], env).stdout)
    assert as_json["kind"] == "LucidGrant" and as_json["metadata"]["name"] == "alpha"
    as_yaml = yaml.safe_load(run([*PLUGIN, "status", "-o", "yaml"], env).stdout)
    assert as_yaml["kind"] == "List"
    assert [g["metadata"]["name"] for g in as_yaml["items"]] == ["alpha", "waiting"]

    missing = run([*PLUGIN, "status", "nope"], env)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == 'error: lucidgrants.lucidgrant.dev "nope" not found in namespace default\n'
    )
    empty = run([*PLUGIN, "status", "-n", "nowhere"], env)
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        0,
        "",
        "No resources found in nowhere namespace.\n",
    )

    # --kubeconfig wins over KUBECONFIG; --context picks a context and its namespace.
    elsewhere = {**env, "KUBECONFIG": str(tmp_path / "absent")}
    assert run([*PLUGIN, "status", "alpha"], elsewhere).returncode == 1
    by_flag = run([*PLUGIN, "status", "alpha", "--kubeconfig", str(admin_kubeconfig)], elsewhere)
    assert by_flag.returncode == 0 and table(by_flag.stdout)[1][0] == "alpha"
    contexts = two_contexts(admin_kubeconfig, tmp_path / "contexts")
    by_context = run([*PLUGIN, "status", "--kubeconfig", str(contexts), "--context", "emu"], env)
    assert by_context.returncode == 0, by_context.stderr
    assert [row[0] for row in table(by_context.stdout)[1:]] == ["beta"]
    dead = run([*PLUGIN, "status", "--kubeconfig", str(contexts)], env, timeout=60)
    assert dead.returncode == 1 and dead.stderr.startswith("error: Kubernetes API: ")
    assert len(dead.stderr.splitlines()) == 1


def patch_line(stderr: str) -> list[str]:
    (line,) = [line for line in stderr.splitlines() if line.strip().startswith("kubectl patch")]
    return shlex.split(line)


def test_authorize_prints_a_one_line_patch_that_works(
    cluster, lucid, admin_kubeconfig, start_operator
):
    account_grant_without_authorization(cluster)
    env = env_for(admin_kubeconfig, lucid)
    done = run([*CLI, "authorize", "acct", "--port", str(free_port())], env)
    assert done.returncode == 0, done.stderr
    assert "adopts" not in done.stderr and "nothing happens until" in done.stderr
    assert (cluster.secret("acct-bootstrap") or {}).get("refresh_token")
    argv = patch_line(done.stderr)
    assert argv[:7] == ["kubectl", "patch", "lucidgrant", "acct", "-n", "default", "--type"]
    assert argv[7:9] == ["merge", "-p"] and len(argv) == 10
    cluster.patch_grant("acct", json.loads(argv[9]))
    authorization = (cluster.grant("acct") or {})["spec"]["authorization"]
    assert authorization == {
        "refreshTokenSecretRef": {"name": "acct-bootstrap", "key": "refresh_token"}
    }
    start_operator()
    wait_for(lambda: cluster.is_true("acct", "Ready"), what="Ready after the printed patch")
    no_leaks(lucid, done.stdout, done.stderr)


def test_authorize_never_writes_a_secret_another_grant_uses(cluster, lucid, admin_kubeconfig):
    client_secret(cluster)
    for name in ("one", "two"):
        assert cluster.create_grant(name, grant_spec()).status_code == 201
    odd = grant_spec(authorization={"refreshTokenSecretRef": {"name": "lucid-client"}})
    assert cluster.create_grant("odd", odd).status_code == 201
    env = env_for(admin_kubeconfig, lucid)

    refused = run([*PLUGIN, "authorize", "one", "--port", str(free_port())], env)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert "Secret default/lucid-bootstrap is also used by LucidGrant two" in line
    assert "--patch-grant" in line
    own = run([*PLUGIN, "authorize", "odd", "--port", str(free_port())], env)
    assert own.returncode == 1 and "spec.clientSecretRef" in own.stderr
    # Refused before anyone was sent to Lucid, and nothing was written.
    assert lucid.calls[("authorize", 302)] == 0
    assert cluster.secret("lucid-bootstrap") is None

    moved = run([*PLUGIN, "authorize", "one", "--patch-grant", "--port", str(free_port())], env)
    assert moved.returncode == 0, moved.stderr
    assert (cluster.secret("one-bootstrap") or {}).get("refresh_token")
    assert (cluster.grant("one") or {})["spec"]["authorization"] == {
        "refreshTokenSecretRef": {"name": "one-bootstrap", "key": "refresh_token"}
    }
    assert (cluster.grant("two") or {})["spec"]["authorization"] == {
        "refreshTokenSecretRef": {"name": "lucid-bootstrap", "key": "refresh_token"}
    }
    assert "adopts it" in moved.stderr
    no_leaks(lucid, moved.stdout, moved.stderr)


def test_the_client_secret_never_comes_from_a_flag(cluster, lucid, admin_kubeconfig, tmp_path):
    """No client Secret readable: --client-id, and the secret from a file, the environment or a
    prompt; a --client-secret flag would show in `ps`."""
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    env = env_for(admin_kubeconfig, lucid)
    base = [*CLI, "authorize", "reporting", "--client-id", CLIENT_ID]

    flag = run([*base, "--client-secret", CLIENT_SECRET, "--port", str(free_port())], env)
    assert flag.returncode == 2 and "No such option '--client-secret'" in flag.stderr
    assert lucid.calls[("authorize", 302)] == 0

    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    from_file = run(
        [*base, "--client-secret-file", str(secret_file), "--port", str(free_port())], env
    )
    assert from_file.returncode == 0, from_file.stderr
    from_env = run(
        [*base, "--port", str(free_port())], {**env, "LUCIDGRANT_CLIENT_SECRET": CLIENT_SECRET}
    )
    assert from_env.returncode == 0, from_env.stderr
    # No terminal (a new session): getpass falls back to stdin, as on a pipe.
    prompted = subprocess.run(
        [*base, "--port", str(free_port())],
        input=CLIENT_SECRET + "\n",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    assert prompted.returncode == 0, prompted.stderr
    assert "Lucid client secret:" in prompted.stderr
    assert lucid.calls[("token_code", 200)] == 3
    no_leaks(lucid, *(p.stdout + p.stderr for p in (flag, from_file, from_env, prompted)))


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_loopback_refuses_a_port_taken_on_either_address(
    cluster, lucid, admin_kubeconfig, family, host
):
    client_secret(cluster)
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    with socket.socket(family) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            [*CLI, "authorize", "reporting", "--port", str(port)], env_for(admin_kubeconfig, lucid)
        )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"cannot listen on [{host}]:{port}" in line and "--port" in line
    assert lucid.calls[("authorize", 302)] == 0


def check_lines(done: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    return [(line[:4].strip(), line[6:]) for line in done.stdout.splitlines()]


def test_check_tells_what_runs_and_what_to_do(cluster, lucid, admin_kubeconfig, start_operator):
    env = env_for(admin_kubeconfig, lucid)
    alone = run([*PLUGIN, "check"], env)
    assert alone.returncode == 1
    (crd, deployment, lease, reach) = check_lines(alone)
    assert crd == ("OK", "CRD lucidgrants.lucidgrant.dev is installed and serves v1alpha1")
    assert (
        deployment[0] == "FAIL"
        and "Deployment lucidgrant-system/lucidgrant not found" in deployment[1]
    )
    assert (
        lease[0] == "FAIL"
        and "no replica holds Lease lucidgrant-system/lucidgrant-leader" in lease[1]
    )
    assert reach[0] == "WARN" and "no grant has refreshed yet" in reach[1]

    authorized_grants(cluster, lucid, ["alpha"])
    # The operator's namespace, where deploy/'s Role lets it hold the Lease.
    operator = start_operator(
        LUCIDGRANT_LEADER_ELECTION="true", LUCIDGRANT_POD_NAMESPACE="lucidgrant-system"
    )
    wait_for(lambda: cluster.is_true("alpha", "Ready"), what="Ready")
    running = check_lines(run([*PLUGIN, "check"], env))
    assert (
        running[2][0] == "OK"
        and "Lease lucidgrant-system/lucidgrant-leader held by " in running[2][1]
    )
    identity = running[2][1].split(" held by ")[1].split(",")[0]
    assert identity in operator.logs()
    assert running[3][0] == "OK" and "(default/alpha)" in running[3][1]

    lucid.faults.outage(600)
    cluster.patch_grant("alpha", {"metadata": {"annotations": {"lucidgrant.dev/refresh-now": "1"}}})
    wait_for(
        lambda: (cluster.condition("alpha", "Ready") or {}).get("reason") == "ProviderUnavailable",
        what="ProviderUnavailable",
    )
    down = run([*PLUGIN, "check"], env)
    assert down.returncode == 1
    reach = check_lines(down)[3]
    assert reach[0] == "FAIL" and "default/alpha: ProviderUnavailable" in reach[1]
    lucid.faults.outage(0)


def test_check_without_the_crd(kube_api, admin_kubeconfig, lucid):
    env = env_for(admin_kubeconfig, lucid)
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lucidgrants.lucidgrant.dev"
    assert Cluster(kube_api[0].url).http.delete(crd).status_code == 200
    done = run([*PLUGIN, "check"], env)
    assert done.returncode == 1
    lines: list[Any] = check_lines(done)
    assert lines[0] == (
        "FAIL",
        "CRD lucidgrants.lucidgrant.dev is not installed: kubectl apply -f crds/ (or -k deploy/)",
    )
    assert len(lines) == 3  # no Lucid line: without the CRD there are no grants to read
