"""Kubernetes Events about grants: posted on transitions and failures, never per routine
refresh. Messages are built by the engine from fixed texts and names, never from tokens."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from lucidgrant.kube import Kube, KubeError
from lucidgrant.names import events_path
from lucidgrant.timing import rfc3339

log = logging.getLogger(__name__)


async def post_event(
    kube: Kube, grant: Mapping[str, Any], kind: str, reason: str, message: str, now: float
) -> None:
    meta = grant["metadata"]
    namespace = meta["namespace"]
    stamp = rfc3339(now)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": grant.get("apiVersion"),
            "kind": grant.get("kind"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "lucidgrant"},
        "reportingComponent": "lucidgrant.dev/operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await kube.create(events_path(namespace), body)
    except (KubeError, OSError) as exc:  # an event is worth a try, not a failure
        log.warning("could not post event %s for %s/%s: %s", reason, namespace, meta["name"], exc)
