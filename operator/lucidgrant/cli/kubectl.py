"""`kubectl lucidgrant` (the `kubectl-lucidgrant` console script on PATH): status, refresh,
authorize and check, with kubectl's flags (-n, -A, -o, --kubeconfig, --context) and its way
of printing (tables with three spaces between columns, `<none>` for a missing value, one
`error:` line and a non-zero exit when something fails)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import click
import yaml

from lucidgrant.cli.authorize import authorize_options, run_authorize
from lucidgrant.cli.check import run_check
from lucidgrant.cli.common import (
    CONTEXT,
    Group,
    current_namespace,
    fail,
    human,
    kube_options,
    parse_time,
    run_main,
)
from lucidgrant.kube import Kube, KubeConfigError, KubeError
from lucidgrant.names import READY, REAUTH, REFRESH_NOW, Reason, grant_path, grants_path
from lucidgrant.status import authorize_command, condition_of

COLUMNS = ("NAME", "READY", "REASON", "ACCESS EXPIRES IN", "REFRESH EXPIRES IN", "AGE")
WIDE_COLUMNS = ("LAST REFRESH", "NEXT REFRESH", "FAILURES", "MESSAGE")
NONE = "<none>"


def time_left(at: float | None, now: float) -> str:
    if at is None:
        return NONE
    return "expired" if at <= now else human(at - now)


def time_since(at: float | None, now: float) -> str:
    return NONE if at is None else f"{human(now - at)} ago"


def reason_of(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The condition that says most about a grant: ReauthorizationRequired when a person must
    act, else Ready."""
    reauth = condition_of(status, REAUTH) or {}
    if reauth.get("status") == "True":
        return reauth
    return condition_of(status, READY) or {}


def row(grant: Mapping[str, Any], now: float, wide: bool, with_namespace: bool) -> list[str]:
    meta = grant.get("metadata") or {}
    status = grant.get("status") or {}
    ready = condition_of(status, READY) or {}
    why = reason_of(status)
    cells = [
        str(meta.get("name", "")),
        str(ready.get("status") or "Unknown"),
        str(why.get("reason") or NONE),
        time_left(parse_time(status.get("accessTokenExpiresAt")), now),
        time_left(parse_time(status.get("refreshTokenExpiresAt")), now),
        human(now - (parse_time(meta.get("creationTimestamp")) or now)),
    ]
    if wide:
        next_at = parse_time(status.get("nextRefreshTime"))
        cells += [
            time_since(parse_time(status.get("lastRefreshTime")), now),
            NONE
            if next_at is None
            else ("now" if next_at <= now else f"in {human(next_at - now)}"),
            str(status.get("consecutiveFailures") or 0),
            str(why.get("message") or NONE),
        ]
    return [str(meta.get("namespace", "")), *cells] if with_namespace else cells


def table(header: list[str], rows: list[list[str]]) -> str:
    """kubectl's table: columns padded to the widest cell, three spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def render(
    grants: list[dict[str, Any]], output: str | None, with_namespace: bool, single: bool
) -> str:
    if output in ("json", "yaml"):
        doc: Any = grants[0] if single else {"apiVersion": "v1", "kind": "List", "items": grants}
        if output == "json":
            return json.dumps(doc, indent=4)
        return yaml.safe_dump(doc, sort_keys=False).rstrip()
    wide = output == "wide"
    header = [*(["NAMESPACE"] if with_namespace else []), *COLUMNS, *(WIDE_COLUMNS if wide else ())]
    now = time.time()
    return table(header, [row(g, now, wide, with_namespace) for g in grants])


async def connect(kubeconfig: str | None, context: str | None) -> Kube:
    try:
        return await Kube.connect(kubeconfig, context)
    except KubeConfigError as exc:
        fail(str(exc))


async def fetch_grants(
    kubeconfig: str | None, context: str | None, namespace: str | None, name: str | None
) -> list[dict[str, Any]]:
    """The grants to show: NAME in `namespace`, or all of `namespace` (None: every namespace)."""
    kube = await connect(kubeconfig, context)
    try:
        if name is not None:
            assert namespace is not None
            grant = await kube.get(grant_path(namespace, name))
            if grant is None:
                fail(f'lucidgrants.lucidgrant.dev "{name}" not found in namespace {namespace}')
            return [grant]
        items = await kube.list(grants_path(namespace))
    finally:
        await kube.close()
    return sorted(
        (dict(i) for i in items),
        key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"].get("name", "")),
    )


def _needs_person(namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
    reauth = condition_of(status, REAUTH) or {}
    reason = Reason.of(str(reauth.get("reason")))
    if reauth.get("status") != "True" or (reason is not None and not reason.fatal):
        return None  # e.g. ScopesChanged: the grant still refreshes, with its old scopes
    message = str(reauth.get("message"))
    command = authorize_command(namespace, name)
    told = "" if command in message else f" Run: {command}"
    return f"LucidGrant {namespace}/{name} needs a person: {message}{told}"


async def refresh_grant(kube: Kube, namespace: str, name: str, timeout: float) -> tuple[bool, str]:
    """Ask the operator for a refresh now and wait for its result: (ok, message)."""
    grant = await kube.get(grant_path(namespace, name))
    if grant is None:
        return False, f"LucidGrant {namespace}/{name} not found"
    if (grant.get("spec") or {}).get("suspend"):
        return False, f"LucidGrant {namespace}/{name} is suspended; resume it first"
    waiting = _needs_person(namespace, name, grant.get("status") or {})
    if waiting:
        return False, waiting
    before = (grant.get("status") or {}).get("lastRefreshTime")
    failures_before = (grant.get("status") or {}).get("consecutiveFailures") or 0
    # lastRefreshTime has whole seconds: start in a later second than the last refresh so that
    # a new one shows as a change.
    last = parse_time(before)
    if last is not None and time.time() < last + 1:
        await asyncio.sleep(last + 1 - time.time())
    patch = {"metadata": {"annotations": {REFRESH_NOW: str(int(time.time()))}}}
    path = grant_path(namespace, name)
    await kube.patch(path, patch)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        grant = await kube.get(path)
        if grant is None:
            return False, f"LucidGrant {namespace}/{name} was deleted"
        status = grant.get("status") or {}
        annotations = grant["metadata"].get("annotations") or {}
        waiting = _needs_person(namespace, name, status)
        if waiting:
            if REFRESH_NOW in annotations:
                # The operator refreshes no dead grant, so it would never take the request
                # away: withdraw it, or it would fire at the next authorization.
                await kube.patch(path, {"metadata": {"annotations": {REFRESH_NOW: None}}})
            return False, waiting
        if REFRESH_NOW in annotations:
            continue
        if status.get("lastRefreshTime") != before:
            left = time_left(parse_time(status.get("accessTokenExpiresAt")), time.time())
            return True, (
                f"LucidGrant {namespace}/{name} refreshed at {status['lastRefreshTime']}; "
                f"the access token is valid for {left}"
            )
        if (status.get("consecutiveFailures") or 0) > failures_before:
            ready = condition_of(status, READY) or {}
            return False, f"The refresh failed: {ready.get('message') or 'see the events'}"
    return False, (
        f"no refresh seen within {timeout:.0f}s: is the operator running? "
        "(kubectl lucidgrant check)"
    )


@click.group(cls=Group, context_settings=CONTEXT)
def cli() -> None:
    """kubectl lucidgrant: see and act on LucidGrants, through your kubeconfig."""


def main() -> NoReturn:
    run_main(cli, "kubectl lucidgrant")


@cli.command()
@click.argument("name", required=False)
@kube_options
@click.option("--all-namespaces", "-A", is_flag=True, help="Grants of every namespace.")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["wide", "json", "yaml"]),
    help="wide adds last and next refresh, failures and the condition's message; json and "
    "yaml print the objects.",
)
def status(
    name: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    all_namespaces: bool,
    output: str | None,
) -> None:
    """Show grants: READY, the REASON a person reads (ReauthorizationRequired's when a person
    must act, else Ready's), time left on both tokens, and AGE."""
    if name is not None and all_namespaces:
        raise click.UsageError("a NAME and --all-namespaces do not go together")
    scope = None if all_namespaces else (namespace or current_namespace(kubeconfig, context))
    try:
        grants = asyncio.run(fetch_grants(kubeconfig, context, scope, name))
    except (KubeError, OSError) as exc:
        fail(f"Kubernetes API: {exc}")
    if not grants and output not in ("json", "yaml"):
        where = "" if scope is None else f" in {scope} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    click.echo(render(grants, output, scope is None, name is not None))


@cli.command()
@click.argument("name")
@kube_options
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def refresh(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    timeout: float,
) -> None:
    """Refresh NAME now (through the refresh-now annotation) and wait for the operator's
    result."""
    namespace = namespace or current_namespace(kubeconfig, context)

    async def go() -> tuple[bool, str]:
        kube = await connect(kubeconfig, context)
        try:
            return await refresh_grant(kube, namespace, name, timeout)
        finally:
            await kube.close()

    try:
        ok, message = asyncio.run(go())
    except (KubeError, OSError) as exc:
        ok, message = False, f"Kubernetes API: {exc}"
    if not ok:
        fail(message)
    click.echo(message)


@cli.command(name="authorize")
@authorize_options
def authorize_cli(**options: Any) -> None:
    """Authorize NAME in a browser on this machine and write the refresh token into its
    bootstrap Secret (as `lucidgrant authorize`)."""
    run_authorize(**options)


@cli.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The kubeconfig file.")
@click.option("--context", help="The kubeconfig context (default: its current one).")
@click.option(
    "--operator-namespace",
    default="lucidgrant-system",
    show_default=True,
    help="Where the operator's Deployment and Lease live.",
)
@click.option(
    "--deployment", default="lucidgrant", show_default=True, help="The operator's Deployment."
)
def check(
    kubeconfig: str | None, context: str | None, operator_namespace: str, deployment: str
) -> None:
    """Check that the CRD is installed, the operator is running and holds its Lease, and that
    it reaches Lucid: one line each, OK, WARN or FAIL, with what to do. Exits 1 on a FAIL."""
    sys.exit(run_check(kubeconfig, context, operator_namespace, deployment))


if __name__ == "__main__":
    main()
