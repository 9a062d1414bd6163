"""Shared pieces of the end-to-end tests: the emulated cluster seen through plain HTTP, the real
operator as a subprocess, and polling with a deadline."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lucidgrant.wal import FILE_NAME, parse
from tests.prefork import popen

ROOT = Path(__file__).resolve().parents[2]
GRANTS = "/apis/lucidgrant.dev/v1alpha1/namespaces/{ns}/lucidgrants"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
CLIENT_ID = "client-1"
CLIENT_SECRET = "csecret-Very-Secret-1"
SCOPES = ["lucidchart.document.content:readonly", "offline_access"]

TEST_AGENT = "lucidgrant-tests"
T = TypeVar("T")


def wait_for(
    fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        result = fn()
        if result:
            return result
        last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """The emulated API server through plain HTTP, as a person's kubectl would see it."""

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.http = httpx.Client(base_url=url, timeout=10, headers={"User-Agent": TEST_AGENT})
        self.ns = namespace

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code < 300, f"{response.status_code} {response.text}"
        return dict(response.json())

    def put_secret(
        self, name: str, values: dict[str, str], ns: str | None = None, *, marked: bool = True
    ) -> dict[str, Any]:
        """Create (or update the data of) a Secret; `marked`: labelled for lucidgrant to read,
        as a person does with a client or bootstrap Secret."""
        ns = ns or self.ns
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        existing = self.http.get(f"{SECRETS.format(ns=ns)}/{name}")
        if existing.status_code == 404:
            labels = {"lucidgrant.dev/role": "client"} if marked else {}
            meta = {"name": name, "labels": labels}
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}
            return self._ok(self.http.post(SECRETS.format(ns=ns), json=body))
        return self._ok(
            self.http.patch(
                f"{SECRETS.format(ns=ns)}/{name}",
                json={"data": data},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        )

    def secret(self, name: str, ns: str | None = None) -> dict[str, str] | None:
        response = self.http.get(f"{SECRETS.format(ns=ns or self.ns)}/{name}")
        if response.status_code == 404:
            return None
        body = self._ok(response)
        return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}

    def secret_object(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        response = self.http.get(f"{SECRETS.format(ns=ns or self.ns)}/{name}")
        return None if response.status_code == 404 else self._ok(response)

    def delete_secret(self, name: str, ns: str | None = None) -> None:
        self.http.delete(f"{SECRETS.format(ns=ns or self.ns)}/{name}")

    def create_grant(
        self,
        name: str,
        spec: dict[str, Any],
        ns: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = {
            "apiVersion": "lucidgrant.dev/v1alpha1",
            "kind": "LucidGrant",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
        return self.http.post(GRANTS.format(ns=ns or self.ns), json=body)

    def grant(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        response = self.http.get(f"{GRANTS.format(ns=ns or self.ns)}/{name}")
        return None if response.status_code == 404 else self._ok(response)

    def patch_grant(
        self, name: str, patch: dict[str, Any], ns: str | None = None
    ) -> dict[str, Any]:
        return self._ok(
            self.http.patch(
                f"{GRANTS.format(ns=ns or self.ns)}/{name}",
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            )
        )

    def delete_grant(self, name: str, ns: str | None = None) -> None:
        self.http.delete(f"{GRANTS.format(ns=ns or self.ns)}/{name}")

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        grant = self.grant(name) or {}
        for cond in (grant.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return None

    def is_true(self, name: str, type_: str) -> bool:
        return (self.condition(name, type_) or {}).get("status") == "True"

    def events(self, ns: str | None = None) -> list[dict[str, Any]]:
        body = self._ok(self.http.get(f"/api/v1/namespaces/{ns or self.ns}/events"))
        return list(body.get("items") or [])

    def statuses(self, ns: str | None = None) -> list[dict[str, Any]]:
        body = self._ok(self.http.get(GRANTS.format(ns=ns or self.ns)))
        return [item.get("status") or {} for item in body.get("items") or []]


def grant_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "clientSecretRef": {"name": "lucid-client"},
        "scopes": ["lucidchart.document.content:readonly"],
        "authorization": {"refreshTokenSecretRef": {"name": "lucid-bootstrap"}},
        "accessTokenSecret": {"name": "lucid-token"},
        "refreshBefore": "10m",
    }
    spec.update(over)
    return spec


class OperatorProcess:
    """The real operator (`python -m lucidgrant run`) in a process of its own, logging to a file
    (forked from a warmed-up interpreter: tests/prefork.py)."""

    def __init__(
        self,
        kubeconfig: Path,
        lucid_url: str,
        log_path: Path,
        *,
        args: Sequence[str] = ("--namespace", "default"),
        **env: str,
    ) -> None:
        self.port = int(env.get("LUCIDGRANT_HTTP_PORT") or free_port())
        self.log_path = log_path
        wal = env.get("LUCIDGRANT_WAL_DIR")
        self.wal_dir = Path(wal) if wal else None
        full_env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "LUCIDGRANT_LUCID_API_URL": lucid_url,
            "LUCIDGRANT_LUCID_APP_URL": lucid_url,
            "LUCIDGRANT_HTTP_HOST": "127.0.0.1",
            "LUCIDGRANT_HTTP_PORT": str(self.port),
            "LUCIDGRANT_LUCID_TIMEOUT": "3",
            # The emulator's tokens live seconds; the operator's 60 s floor would outlive them.
            "LUCIDGRANT_MIN_TOKEN_LIFETIME": "1",
            **env,
        }
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = popen(
            [sys.executable, "-m", "lucidgrant", "run", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        # Bounded by a busy machine, not by the operator: start-up is mostly imports.
        try:
            wait_for(self.ready, timeout=60, what="operator /readyz")
        except AssertionError:
            self.stop(signal.SIGKILL)  # the caller never gets it to stop: no orphan
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def said(self) -> list[str]:
        """What the process leaves where people and tools look, for the leak scan: its log, and
        every file beside its write-ahead log (in the log's directory, and in the directory
        around it: the volume in deploy/). The log file, and its temporary copy while it is
        compacted, hold tokens by design (docs/wal.md) and are the only files that may."""
        texts = [self.logs()]
        if self.wal_dir is not None:
            near = [*self.wal_dir.rglob("*"), *self.wal_dir.parent.glob("*")]
            texts += [
                p.read_text(errors="replace")
                for p in sorted(set(near))
                if p.is_file() and not (p.parent == self.wal_dir and p.name.startswith(FILE_NAME))
            ]
        return texts

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


def logged_tokens(directory: Path) -> set[str]:
    """The refresh tokens a process left in its write-ahead log."""
    try:
        content = (directory / FILE_NAME).read_bytes()
    except FileNotFoundError:
        return set()
    return {r.refresh_token for r in parse(content)[0]}


def leaked(secrets: set[str], texts: list[str]) -> list[str]:
    """Which of `secrets` appear in any of `texts` (each secret shown only by its prefix)."""
    blob = "\n".join(texts)
    return sorted(s[:6] + "…" for s in secrets if s and s in blob)


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
