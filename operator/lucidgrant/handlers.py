"""The kopf handlers, kept thin: they build the Runtime at start-up, feed it watch events and
close it at shutdown. Logic lives in reconcile.py (a grant's reconcile) and workqueue.py (when)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from lucidgrant.config import Settings
from lucidgrant.kube import LIST_CHUNK, Kube, load_configuration
from lucidgrant.names import GROUP, PLURAL, SECRET_SELECTOR, VERSION
from lucidgrant.runtime import Runtime
from lucidgrant.watch_errors import survive_watch_errors

log = logging.getLogger(__name__)

SECRETS = ("", "v1", "secrets")


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches log in with the configuration the operator's own client uses
    (`load_configuration`: in-cluster in a pod, else KUBECONFIG as it is now). kopf's default
    login goes through the synchronous client, which tries in-cluster first and reads KUBECONFIG
    once, when it is imported. Called again after a 401, so that a rotated token is read anew."""
    config = await load_configuration()
    header = await config.get_api_key_with_prefix("BearerToken")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own events on transitions only; kopf would post one per log line.
    settings.posting.enabled = False
    # A watch can go silent without closing (kopf#585): make the server and the client end it.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Lists in chunks, as client-go's informers do: a cluster's every Secret is not one answer.
    settings.watching.chunk_size = LIST_CHUNK
    # A real API server's 5xx and in-stream errors must not stop the operator.
    survive_watch_errors(settings)
    # Only Secrets labelled for lucidgrant, selected by the API server: the cluster's other
    # Secrets (Helm releases can be megabytes each) never reach the process.
    settings.watching.label_selectors[SECRETS] = SECRET_SELECTOR
    runtime = Runtime(memo.get("settings") or Settings.from_env(), await Kube.connect())
    await runtime.start()
    memo["runtime"] = runtime


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()


# Async on purpose: kopf runs a sync handler in a thread pool, which at thousands of events a
# second cost a quarter of the CPU (bench/RESULTS.md) and touched the work queue off its loop.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def grant_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["runtime"].on_grant(event.get("type") or "ADDED", dict(event["object"]))


@kopf.on.event(*SECRETS)
async def secret_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo["runtime"].on_secret(event.get("type") or "ADDED", dict(event["object"]))
