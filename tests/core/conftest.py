"""The in-process world, shared by the reconcile and condition tests."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator

import pytest

from .world import World


@pytest.fixture
async def world(caplog: pytest.LogCaptureFixture) -> AsyncIterator[World]:
    """A world; afterwards, no token or client secret may be in a log line, event or status."""
    caplog.set_level(logging.DEBUG)
    w = World()
    yield w
    await w.http.aclose()
    statuses = [o.get("status") for p, o in w.kube.objects.items() if "/lucidgrants/" in p]
    logged = [r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase)]
    texts = [*logged, json.dumps(w.kube.events()), json.dumps(statuses)]
    secrets = w.lucid.issued | {w.lucid.client_secret}
    leaked = [s for s in secrets for t in texts if re.search(rf"(?<![\w-]){s}(?!\w)", t)]
    assert not leaked, leaked
