"""The operator's HTTP endpoints: /healthz (liveness), /readyz (readiness), /metrics, and the
authorization flow's /authorize and /callback when LUCIDGRANT_EXTERNAL_URL is set."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lucidgrant.authflow import add_routes as add_authflow_routes

if TYPE_CHECKING:
    from lucidgrant.runtime import Runtime

# The work queue is stuck if work has been overdue this long with nothing completing.
STALL_AFTER = 300.0


def make_app(runtime: Runtime) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        stalled = runtime.stalled_for(time.time())
        if stalled > STALL_AFTER:
            return web.Response(status=503, text=f"refreshes stalled for {stalled:.0f}s\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not runtime.started:
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ready\n")

    async def metrics(_: web.Request) -> web.Response:
        runtime.refresh_grant_counts()
        body = generate_latest(runtime.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if runtime.settings.external_url:
        add_authflow_routes(app, runtime)
    return app
