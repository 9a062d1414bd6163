"""A minimal kopf operator run as a subprocess against the emulated API (test_kubeapi.py).

On create it records `status.seen`; on delete it leaves a ConfigMap as proof that it saw the
deletion (kopf then removes its finalizer so that the object goes away)."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "test.lucidgrant.dev", "v1", "gadgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 10


@kopf.on.create(GROUP, VERSION, PLURAL)
def created(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    kopf.info(body, reason="Seen", message="seen by the test operator")  # posts with generateName
    patch.status["seen"] = True
    patch.status["echo"] = spec.get("message", "")


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    kubernetes.config.load_kube_config()
    core: Any = kubernetes.client.CoreV1Api()  # its typed signature wants models, dicts work
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": f"{name}-deleted"}, "data": {"by": "kopf"}}
    )
