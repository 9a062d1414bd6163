"""kopf's watches made to outlast what a real API server sends during trouble.

kopf retries a failed list or watch request 8 times (about 54 s) and then lets the watcher
fail, and it treats an `ERROR` event inside a watch stream (other than 410 Gone) as fatal; either
stops the operator, with any rotation in flight. A real API server sends both: 429 or 503 while
its watch cache initialises (storage/cacher/cacher.go) and an in-stream 500 when etcd fails
under a watch (storage/etcd3/watcher.go). Here the request backoffs never run out, and a stream
error ends that stream so that kopf lists again, as it does after 410 Gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
from kopf._cogs.clients import watching

log = logging.getLogger(__name__)

# Pause before listing again after a stream error: errors in a row must not spin.
STREAM_ERROR_PAUSE = 1.0


class EndlessBackoffs:
    """kopf's delays between attempts of an API request, then `cap` seconds for ever. Iterable
    afresh for each request, and not Sized: kopf then never escalates."""

    def __init__(self, first: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21), cap: float = 30):
        self.first = first
        self.cap = cap

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.first, itertools.repeat(self.cap))


def _relisting(original: Any) -> Any:
    async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for event in original(**kwargs):
                yield event
        except watching.WatchingError as exc:
            # The message is the server's Status: no Secret data in it.
            what = kwargs["resource"]
            log.warning("watch of %s ended with an error; listing again: %s", what, exc)
            await asyncio.sleep(STREAM_ERROR_PAUSE)

    continuous_watch.relisting = True  # type: ignore[attr-defined]
    return continuous_watch


def survive_watch_errors(settings: kopf.OperatorSettings) -> None:
    settings.networking.error_backoffs = EndlessBackoffs()
    if not getattr(watching.continuous_watch, "relisting", False):
        watching.continuous_watch = _relisting(watching.continuous_watch)
