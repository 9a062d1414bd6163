"""`kubectl lucidgrant check`: is the CRD installed, is the operator running and leading, and
does it reach Lucid? Each answer is one line, OK, WARN or FAIL, with what to do.

Whether Lucid is reachable is read from the grants' status, which the operator writes after
every refresh: a cluster user can read it, unlike the operator's metrics port. A grant that
reports ProviderUnavailable or ClientRejected is a FAIL; a recent refresh is an OK; with no
refresh yet there is no evidence either way, and the line says so (WARN)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import click

from lucidgrant.cli.common import current_namespace, human, parse_time
from lucidgrant.kube import Kube, KubeConfigError, KubeError
from lucidgrant.names import GROUP, PLURAL, READY, VERSION, Reason, grants_path, lease_path
from lucidgrant.status import condition_of

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
APP_LABEL = "app.kubernetes.io/name=lucidgrant"
# Lucid's access tokens live an hour: a running operator refreshes each grant within it.
STALE_AFTER = 2 * 3600.0
UNREACHABLE = (Reason.PROVIDER_UNAVAILABLE, Reason.CLIENT_REJECTED)


@dataclass(frozen=True)
class Finding:
    state: str  # OK, WARN or FAIL
    text: str

    def line(self) -> str:
        return f"{self.state:<4}  {self.text}"


def _ago(seconds: float) -> str:
    return f"{human(seconds)} ago"


def crd_finding(crd: Mapping[str, Any] | None) -> Finding:
    if crd is None:
        return Finding(
            "FAIL", f"CRD {CRD_NAME} is not installed: kubectl apply -f crds/ (or -k deploy/)"
        )
    versions = (crd.get("spec") or {}).get("versions") or []
    served = [str(v.get("name")) for v in versions if v.get("served")]
    if VERSION not in served:
        return Finding(
            "FAIL",
            f"CRD {CRD_NAME} does not serve {VERSION} (it serves {', '.join(served) or 'none'}):"
            " apply this version's CRD, kubectl apply -f crds/",
        )
    return Finding("OK", f"CRD {CRD_NAME} is installed and serves {VERSION}")


def operator_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The literal environment of the Deployment's containers (how the operator is set up)."""
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {
        str(e.get("name")): str(e.get("value"))
        for c in template.get("containers") or []
        for e in c.get("env") or []
        if "value" in e
    }


def deployment_finding(namespace: str, name: str, deployment: Mapping[str, Any] | None) -> Finding:
    if deployment is None:
        return Finding(
            "FAIL",
            f"Deployment {namespace}/{name} not found: install the operator (kubectl apply -k "
            "deploy/), or give --operator-namespace and --deployment",
        )
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    text = f"Deployment {namespace}/{name}: {ready}/{wanted} replicas ready"
    if ready < 1:
        return Finding(
            "FAIL",
            f"{text}: see kubectl -n {namespace} get pods -l {APP_LABEL}; "
            f"kubectl -n {namespace} logs deploy/{name}",
        )
    return Finding("OK" if ready >= wanted else "WARN", text)


def lease_name(deployment: Mapping[str, Any] | None) -> str | None:
    """The Lease the operator takes; None when its Deployment turns leader election off."""
    env = operator_env(deployment or {})
    if deployment is not None and env.get("LUCIDGRANT_LEADER_ELECTION", "false") != "true":
        return None
    return env.get("LUCIDGRANT_LEASE_NAME", "lucidgrant-leader")


def lease_finding(
    namespace: str, name: str | None, lease: Mapping[str, Any] | None, now: float
) -> Finding:
    if name is None:
        return Finding("OK", "leader election is off in the Deployment: one replica refreshes")
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return Finding(
            "FAIL",
            f"no replica holds Lease {namespace}/{name}: no operator with leader election is "
            f"running; see kubectl -n {namespace} get pods -l {APP_LABEL}",
        )
    renewed = parse_time(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 15)
    if renewed is None or renewed + duration < now:
        since = "never renewed" if renewed is None else f"last renewed {_ago(now - renewed)}"
        return Finding(
            "FAIL",
            f"Lease {namespace}/{name} held by {holder} has lapsed ({since}): the leader "
            f"stopped; see kubectl -n {namespace} logs deploy/lucidgrant",
        )
    return Finding(
        "OK", f"Lease {namespace}/{name} held by {holder}, renewed {_ago(now - renewed)}"
    )


def lucid_finding(grants: Sequence[Mapping[str, Any]], now: float) -> Finding:
    failing = []
    newest: tuple[float, str] | None = None
    for grant in grants:
        meta = grant.get("metadata") or {}
        label = f"{meta.get('namespace')}/{meta.get('name')}"
        status = grant.get("status") or {}
        ready: Mapping[str, Any] = condition_of(status, READY) or {}
        if ready.get("status") == "False" and Reason.of(str(ready.get("reason"))) in UNREACHABLE:
            failing.append((label, ready))
        at = parse_time(status.get("lastRefreshTime"))
        if at is not None and (newest is None or at > newest[0]):
            newest = (at, label)
    if failing:
        label, ready = failing[0]
        return Finding(
            "FAIL",
            f"Lucid: {len(failing)} grant(s) cannot refresh, e.g. {label}: {ready.get('reason')}: "
            f"{ready.get('message')}",
        )
    if newest is None:
        return Finding(
            "WARN",
            f"Lucid: no grant has refreshed yet ({len(grants)} grant(s)), so nothing shows "
            "whether the operator reaches Lucid; authorize one: kubectl lucidgrant authorize NAME",
        )
    at, label = newest
    if now - at > STALE_AFTER:
        return Finding(
            "WARN",
            f"Lucid: the newest refresh ({label}) was {_ago(now - at)}: is the operator "
            "refreshing? Check its logs",
        )
    return Finding("OK", f"Lucid: last successful refresh {_ago(now - at)} ({label})")


async def _grants(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    try:
        return await kube.list(grants_path(None))
    except KubeError as exc:
        if exc.status != 403:
            raise
        return await kube.list(grants_path(namespace))


async def _crd(kube: Kube, namespace: str) -> Finding:
    try:
        return crd_finding(await kube.get(CRD_PATH))
    except KubeError as exc:
        if exc.status != 403:
            raise
    # No right to read CRDs: the API answering for LucidGrants is proof enough.
    await kube.request("GET", grants_path(namespace))
    return Finding("OK", f"the LucidGrant API is served (not allowed to read CRD {CRD_NAME})")


async def findings(
    kubeconfig: str | None, context: str | None, operator_namespace: str, deployment_name: str
) -> list[Finding]:
    try:
        kube = await Kube.connect(kubeconfig, context)
    except KubeConfigError as exc:
        return [Finding("FAIL", f"no cluster: {exc}")]
    namespace = current_namespace(kubeconfig, context)
    ns = quote(operator_namespace)
    result: list[Finding] = []
    try:
        result.append(await _crd(kube, namespace))
        deployment = await kube.get(
            f"/apis/apps/v1/namespaces/{ns}/deployments/{quote(deployment_name)}"
        )
        result.append(deployment_finding(operator_namespace, deployment_name, deployment))
        lease = lease_name(deployment)
        held = None if lease is None else await kube.get(lease_path(operator_namespace, lease))
        result.append(lease_finding(operator_namespace, lease, held, time.time()))
        if result[0].state == "OK":
            result.append(lucid_finding(await _grants(kube, namespace), time.time()))
    except (KubeError, OSError) as exc:
        result.append(Finding("FAIL", f"Kubernetes API: {exc}"))
    finally:
        await kube.close()
    return result


def run_check(
    kubeconfig: str | None, context: str | None, operator_namespace: str, deployment: str
) -> int:
    results = asyncio.run(findings(kubeconfig, context, operator_namespace, deployment))
    for finding in results:
        click.echo(finding.line())
    return 1 if any(f.state == "FAIL" for f in results) else 0
