"""The HTTP connection pools that carry calls to Lucid, made cheap per call.

Two costs of httpx's transport (httpcore 1.0) showed in a profile of the operator refreshing
1,000 grants after an outage, where a Lucid call took about a third of the operator's CPU:

- On every request httpcore runs `import sniffio` to learn which event loop it is on. Without
  sniffio installed (anyio 4 no longer needs it) that import fails and searches sys.path again
  each time, stat calls and all. Recording the absence once in `sys.modules`, which is how
  Python's import system spells "known missing", makes the same failure immediate.
- On every request httpcore looks at every pooled connection (a `getpeername` and a readiness
  check each) to find an idle one. Keeping few connections idle keeps that look short; Lucid
  gets new connections when more calls are in flight than are kept.

`python -m bench outage --grants 1000` gives the figures (docs/lucid-outages.md)."""

from __future__ import annotations

import importlib.util
import sys

import httpx

# Idle connections kept per pool: enough for the calls a recovery keeps in flight at once.
KEEP_IDLE = 8


def lucid_http(timeout: float, max_connections: int) -> httpx.AsyncClient:
    """An httpx client for Lucid: at most `max_connections` at once, KEEP_IDLE kept idle."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(KEEP_IDLE, max_connections),
    )
    return httpx.AsyncClient(timeout=timeout, limits=limits, headers={"User-Agent": "lucidgrant"})
