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
        meta = {
            "name": name,
            "labels": {"lucidgrant.dev/role": "client"},
        }  # marked for lucidgrant to read
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}
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

    def row(self, started: float) -> tuple[str, bool]:
        """One table row, and whether the grant asks for a person right now."""
        status = self.grant().get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        ready = conds.get("Ready", {})
        reauth = conds.get("ReauthorizationRequired", {})
        cells = (
            f"{time.monotonic() - started:.0f}s",
            fingerprint(self.secret("lucid-token", "access_token")),
            fingerprint(self.secret("reporting-lucidgrant-state", "refresh_token")),
            ready.get("status", "-"),
            ready.get("reason", "-"),
            reauth.get("status", "-"),
            reauth.get("reason", "-"),
            str(self.lucid.refresh_count),
        )
        return format_row(cells), reauth.get("status") == "True"


# Fixed widths, so that columns stay put when a reason changes.
COLUMNS = (
    ("TIME", 5, ">"),
    ("ACCESS", 8, "<"),
    ("REFRESH", 8, "<"),
    ("READY", 5, "<"),
    ("REASON", 21, "<"),
    ("REAUTH", 6, "<"),
    ("REASON", 21, "<"),
    ("ROTATIONS", 9, ">"),
)


def format_row(cells: tuple[str, ...]) -> str:
    return "  ".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, COLUMNS, strict=True)).rstrip()


def intro(kube_url: str, lucid_url: str, kubeconfig: Path, access_ttl: float) -> str:
    plugin_dir = Path(sys.executable).parent
    return f"""\
lucidgrant demo: an emulated Kubernetes API ({kube_url}), a Lucid emulator ({lucid_url})
and the real operator, all on this machine. Access tokens live {access_ttl:.0f} s here (1 hour at
Lucid). ACCESS and REFRESH are fingerprints of the tokens in the consumer Secret lucid-token and
in the operator's state Secret; READY and REAUTH are the grant's conditions.

Try, in another terminal, while it runs (the plugin is in {plugin_dir}):
  export KUBECONFIG={kubeconfig} PATH={plugin_dir}:$PATH
  kubectl get lg
  kubectl lucidgrant status
  kubectl lucidgrant refresh reporting
"""


OUTRO = """\
You saw the access token rotate before each expiry, the refresh token rotate with it and be
stored first, a grant revoked at Lucid flagged ReauthorizationRequired, and the grant recover
once a person authorized again. Next: the README's Install and "A first grant, step by step"."""


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C, a kill or a closed terminal all end the demo the same way: the operator, in a
    session of its own, gets SIGTERM and the emulators stop."""
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--access-ttl", default=9.0, show_default=True, help="Access token lifetime (s).")
@click.option("--keep", is_flag=True, help="Keep running after the script until Ctrl-C.")
def main(duration: float, access_ttl: float, keep: bool) -> None:
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
        click.echo(intro(kube.url, lucid.url, kubeconfig, access_ttl))
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
        click.echo(format_row(tuple(name for name, _, _ in COLUMNS)))
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
            # Its own session: Ctrl-C reaches the demo only, which then stops it with SIGTERM.
            start_new_session=True,
        )
        started = time.monotonic()
        revoke_at, give_up_waiting_at = duration * 0.45, duration * 0.85
        revoked = reauthorized = False
        flagged_at: float | None = None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        try:
            while keep or time.monotonic() - started < duration:
                elapsed = time.monotonic() - started
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
                row, flagged = demo.row(started)
                if revoked and flagged and flagged_at is None:
                    flagged_at = elapsed
                # The person answers the flag after a moment, as a page would be answered.
                answer = flagged_at is not None and elapsed >= flagged_at + 2
                if revoked and not reauthorized and (answer or elapsed >= give_up_waiting_at):
                    demo.authorize()
                    click.echo(
                        ">>> A person authorizes again: a new refresh token in lucid-bootstrap."
                    )
                    reauthorized = True
                click.echo(row)
                time.sleep(1.0)
        except KeyboardInterrupt:
            click.echo("")
        finally:
            operator.send_signal(signal.SIGTERM)
            code = operator.wait(30)
            log.close()
            api.close()
        elapsed = time.monotonic() - started
        stopped = "stopped cleanly (exit 0)" if code == 0 else f"exited with {code}"
        click.echo(f"\nThe operator {stopped} after {elapsed:.0f} s.")
        click.echo(OUTRO if reauthorized else "Stopped before the demo's script had finished.")
