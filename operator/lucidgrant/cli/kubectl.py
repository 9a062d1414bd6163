"""`kubectl lucidgrant` (the `kubectl-lucidgrant` console script on PATH): status, refresh and
authorize for people, through the current kubeconfig."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import click

from lucidgrant.cli.authorize import authorize_options, current_namespace, run_authorize
from lucidgrant.kube import Kube, KubeError
from lucidgrant.names import READY, REAUTH, REFRESH_NOW, Reason, grant_path, grants_path
from lucidgrant.status import condition_of

COLUMNS = ("NAMESPACE", "NAME", "READY", "REAUTH", "ACCESS-LEFT", "REFRESH-LEFT", "LAST-REFRESH")


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def human(seconds: float) -> str:
    """kubectl-style durations: 45s, 12m, 3h20m, 179d."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    return f"{hours // 24}d"


def time_left(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    return "expired" if at <= now else human(at - now)


def row(grant: Mapping[str, Any], now: float) -> tuple[str, ...]:
    meta = grant.get("metadata") or {}
    status = grant.get("status") or {}
    ready = condition_of(status, READY) or {}
    reauth = condition_of(status, REAUTH) or {}
    last = parse_time(status.get("lastRefreshTime"))
    return (
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        str(ready.get("status") or "Unknown"),
        str(reauth.get("reason") or "yes") if reauth.get("status") == "True" else "-",
        time_left(parse_time(status.get("accessTokenExpiresAt")), now),
        time_left(parse_time(status.get("refreshTokenExpiresAt")), now),
        "-" if last is None else f"{human(max(0.0, now - last))} ago",
    )


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [COLUMNS, *rows]
    )


async def list_grants(namespace: str | None) -> list[dict[str, Any]]:
    kube = await Kube.connect()
    try:
        items = (await kube.request("GET", grants_path(namespace))).get("items") or []
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
    return (
        f"LucidGrant {namespace}/{name} needs a person: {reauth.get('message')} "
        f"Run: kubectl lucidgrant authorize {name} -n {namespace}"
    )


async def refresh_grant(namespace: str, name: str, timeout: float) -> tuple[bool, str]:
    """Ask the operator for a refresh now and wait for its result: (ok, message)."""
    kube = await Kube.connect()
    try:
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
        # lastRefreshTime has whole seconds: start in a later second than the last refresh so
        # that a new one shows as a change.
        last = parse_time(before)
        if last is not None and time.time() < last + 1:
            await asyncio.sleep(last + 1 - time.time())
        patch = {"metadata": {"annotations": {REFRESH_NOW: str(int(time.time()))}}}
        await kube.patch(grant_path(namespace, name), patch)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            grant = await kube.get(grant_path(namespace, name))
            if grant is None:
                return False, f"LucidGrant {namespace}/{name} was deleted"
            status = grant.get("status") or {}
            annotations = grant["metadata"].get("annotations") or {}
            waiting = _needs_person(namespace, name, status)
            if waiting:
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
        return False, f"no refresh seen within {timeout:.0f}s"
    finally:
        await kube.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kubectl lucidgrant: see and act on LucidGrants."""


@main.command()
@click.option("--namespace", "-n", help="Namespace (default: the kubeconfig's).")
@click.option("--all-namespaces", "-A", is_flag=True, help="Every namespace.")
def status(namespace: str | None, all_namespaces: bool) -> None:
    """A table of grants: ready, re-authorization, time left on both tokens, last refresh."""
    scope = None if all_namespaces else (namespace or current_namespace())
    try:
        grants = asyncio.run(list_grants(scope))
    except KubeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if not grants:
        click.echo("No LucidGrants found" + ("." if scope is None else f" in {scope}."), err=True)
        return
    now = time.time()
    click.echo(table([row(g, now) for g in grants]))


@main.command()
@click.argument("name")
@click.option("--namespace", "-n", help="Namespace (default: the kubeconfig's).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def refresh(name: str, namespace: str | None, timeout: float) -> None:
    """Refresh NAME now (the refresh-now annotation) and wait for the result."""
    try:
        ok, message = asyncio.run(refresh_grant(namespace or current_namespace(), name, timeout))
    except KubeError as exc:
        ok, message = False, f"Kubernetes API: {exc}"
    click.echo(message if ok else f"error: {message}", err=not ok)
    sys.exit(0 if ok else 1)


@main.command(name="authorize")
@authorize_options
def authorize_command(**options: Any) -> None:
    """Authorize NAME in a browser and write its bootstrap Secret (as `lucidgrant authorize`)."""
    run_authorize(**options)


if __name__ == "__main__":
    main()
