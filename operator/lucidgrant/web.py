"""The operator's two HTTP applications, each on its own listener (listener.py): the probes
(/healthz, /readyz) with /metrics, for the kubelet and Prometheus; and the authorization flow
(/authorize, /callback) when LUCIDGRANT_EXTERNAL_URL is set, the only one to expose publicly.
Neither serves the other's paths.

It sees the operator through `Probes`, three calls, so that it imports nothing of the runtime."""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from lucidgrant.authflow import AuthFlow, add_routes

# The work queue is stuck if work has been overdue this long with nothing completing.
STALL_AFTER = 300.0


class Probes(Protocol):
    @property
    def started(self) -> bool: ...

    def stalled_for(self, now: float) -> float:
        """Seconds the work queue has made no progress on overdue work (0: fine)."""

    def metrics_text(self) -> bytes: ...


def make_probe_app(probes: Probes) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        stalled = probes.stalled_for(time.time())
        if stalled > STALL_AFTER:
            return web.Response(status=503, text=f"refreshes stalled for {stalled:.0f}s\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not probes.started:
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ready\n")

    async def metrics(_: web.Request) -> web.Response:
        body = probes.metrics_text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def make_flow_app(flow: AuthFlow) -> web.Application:
    app = web.Application()
    add_routes(app, flow)
    return app
