"""`lucidgrant-demo` (what `make demo` runs): the whole system on loopback, live in the terminal.
The emulated Kubernetes API and the Lucid emulator (with short token lifetimes) run in this
process, the operator in a child process, exactly as in the end-to-end tests. Tokens are shown
only as fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx

from lucidgrant_testbed import CRDS
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.lucid import LucidEmulator
from lucidgrant_testbed.threaded import running_in_thread

CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-client-secret"
NS = "default"
GRANTS = f"/apis/lucidgrant.dev/v1alpha1/namespaces/{NS}/lucidgrants"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"


def fingerprint(value: str | None) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8] if value else "--------"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, api: httpx.Client, lucid: LucidEmulator) -> None:
        self.api = api
        self.lucid = lucid

    def put_secret(self, name: str, values: dict[str, str]) -> None:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}
        if self.api.post(SECRETS, json=body).status_code == 409:
            self.api.patch(
                f"{SECRETS}/{name}",
                json={"data": data},
                headers={"Content-Type": "application/merge-patch+json"},
            )

    def secret(self, name: str, key: str) -> str | None:
        response = self.api.get(f"{SECRETS}/{name}")
        if response.status_code != 200:
            return None
        value = (response.json().get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value else None

    def authorize(self) -> None:
        tokens = self.lucid.issue_grant(
            CLIENT_ID, ["lucidchart.document.content:readonly", "offline_access"]
        )
        self.put_secret("lucid-bootstrap", {"refresh_token": tokens["refresh_token"]})

    def grant(self) -> dict[str, Any]:
        response = self.api.get(f"{GRANTS}/reporting")
        return dict(response.json()) if response.status_code == 200 else {}

    def line(self, started: float) -> str:
        status = self.grant().get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        ready = conds.get("Ready", {})
        reauth = conds.get("ReauthorizationRequired", {})
        access = self.secret("lucid-token", "access_token")
        refresh = self.secret("reporting-lucidgrant-state", "refresh_token")
        return (
            f"{time.monotonic() - started:5.0f}s  access {fingerprint(access)}  "
            f"refresh {fingerprint(refresh)}  Ready={ready.get('status', '-'):5} "
            f"({ready.get('reason', '-')})  Reauth={reauth.get('status', '-'):5} "
            f"({reauth.get('reason', '-')})  rotations={self.lucid.refresh_count}"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--access-ttl", default=9.0, show_default=True, help="Access token lifetime (s).")
def main(duration: float, access_ttl: float) -> None:
    """Run the operator against emulators and show tokens rotating, live."""
    lucid_emulator = LucidEmulator(access_ttl=access_ttl, refresh_ttl=3600.0)
    lucid_emulator.add_client(CLIENT_ID, CLIENT_SECRET)
    with (
        tempfile.TemporaryDirectory(prefix="lucidgrant-demo-") as tmp,
        running_in_thread(KubeAPI([CRDS])) as (kube, _),
        running_in_thread(lucid_emulator) as (lucid, _),
    ):
        kubeconfig = kube.write_kubeconfig(Path(tmp) / "kubeconfig")
        api = httpx.Client(base_url=kube.url, timeout=10)
        demo = Demo(api, lucid)
        click.echo(f"Emulated Kubernetes API at {kube.url}, Lucid emulator at {lucid.url}")
        click.echo(f"Access tokens live {access_ttl:.0f}s here (1 hour at Lucid).")
        demo.put_secret(
            "lucid-oauth-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        )
        demo.authorize()
        grant = {
            "apiVersion": "lucidgrant.dev/v1alpha1",
            "kind": "LucidGrant",
            "metadata": {"name": "reporting"},
            "spec": {
                "clientSecretRef": {"name": "lucid-oauth-client"},
                "scopes": ["lucidchart.document.content:readonly"],
                "authorization": {"refreshTokenSecretRef": {"name": "lucid-bootstrap"}},
                "accessTokenSecret": {"name": "lucid-token"},
            },
        }
        api.post(GRANTS, json=grant).raise_for_status()
        click.echo("Applied LucidGrant default/reporting; starting the operator.\n")
        log = open(Path(tmp) / "operator.log", "wb")  # noqa: SIM115 - closed below
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "LUCIDGRANT_LUCID_API_URL": lucid.url,
            "LUCIDGRANT_LUCID_APP_URL": lucid.url,
            "LUCIDGRANT_HTTP_HOST": "127.0.0.1",
            "LUCIDGRANT_HTTP_PORT": str(_free_port()),
            "LUCIDGRANT_MIN_TOKEN_LIFETIME": "1",  # the emulator's tokens live seconds
        }
        operator = subprocess.Popen(
            [sys.executable, "-m", "lucidgrant", "run", "--namespace", NS],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        revoke_at, reauthorize_at = duration * 0.55, duration * 0.8
        revoked = reauthorized = False
        try:
            while (elapsed := time.monotonic() - started) < duration:
                if operator.poll() is not None:
                    raise click.ClickException(f"the operator exited ({operator.returncode})")
                if not revoked and elapsed >= revoke_at:
                    grant_id = lucid.grant_of(
                        demo.secret("reporting-lucidgrant-state", "refresh_token") or ""
                    )
                    if grant_id:
                        lucid.revoke_grant_of(lucid.grant_info(grant_id).access_token)
                    click.echo(">>> The demo revokes the grant at Lucid (as an admin would).")
                    revoked = True
                if revoked and not reauthorized and elapsed >= reauthorize_at:
                    demo.authorize()
                    click.echo(
                        ">>> A person authorizes again: a new refresh token in lucid-bootstrap."
                    )
                    reauthorized = True
                click.echo(demo.line(started))
                time.sleep(1.0)
        finally:
            operator.send_signal(signal.SIGTERM)
            code = operator.wait(30)
            log.close()
            api.close()
        click.echo(f"\nThe operator stopped cleanly (exit {code}) after {duration:.0f}s.")
