"""One task that runs each grant's reconcile when it is due: a heap of due times fed by watch
events (wake now) and by each reconcile's answer (wake at T). Cheaper than a kopf daemon per
grant at 10,000 grants, and it writes nothing to the grants to do it.

A grant never runs twice at once here: a wake while it runs is kept for when it ends."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from lucidgrant.cache import Key

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(
        self,
        reconcile: Callable[[Key], Awaitable[float | None]],
        *,
        concurrency: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconcile = reconcile
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}
        self._running: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = False
        self.active = asyncio.Event()
        self.active.set()
        self.last_progress = clock()
        self.completed = 0

    def wake(self, key: Key, at: float | None = None) -> None:
        """Run `key` at `at` (now if None), unless it is already due earlier."""
        at = self._clock() if at is None else at
        if key in self._running:  # picked up when the running reconcile ends
            self._due[key] = min(at, self._due.get(key, at))
            return
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        self._wakeup.set()

    def forget(self, key: Key) -> None:
        self._due.pop(key, None)

    def due_at(self, key: Key) -> float | None:
        return self._due.get(key)

    @property
    def pending(self) -> int:
        return len(self._due)

    async def run(self) -> None:
        while not self._stopping:
            await self.active.wait()
            now = self._clock()
            while (
                self._heap
                and self._heap[0][0] <= now
                and self.active.is_set()
                and not self._stopping
            ):
                at, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != at:
                    continue  # superseded by an earlier or later wake
                if key in self._running:
                    continue
                del self._due[key]
                await self._slots.acquire()
                self._start(key)
            self._wakeup.clear()
            if self._stopping:  # stop() woke us from the wait for `active`: that wake is spent
                return
            timeout = max(0.0, self._heap[0][0] - self._clock()) if self._heap else None
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def _start(self, key: Key) -> None:
        self._running.add(key)
        task = asyncio.create_task(self._one(key), name=f"reconcile {key[0]}/{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, key: Key) -> None:
        next_at: float | None = None
        try:
            next_at = await self._reconcile(key)
        except Exception:
            # A bug must not stop the grant for good: log it (no token is in our exceptions)
            # and try again later.
            log.exception("reconcile of %s/%s failed unexpectedly", *key)
            next_at = self._clock() + 30.0
        finally:
            self._running.discard(key)
            self._slots.release()
            self.completed += 1
            self.last_progress = self._clock()
        if self._stopping:
            return
        woken = self._due.pop(key, None)
        candidates = [t for t in (next_at, woken) if t is not None]
        if candidates:
            self.wake(key, min(candidates))

    async def stop(self, timeout: float) -> int:
        """Stop starting work and wait for running reconciles (a rotated token being stored)
        to finish; return how many were still running at the deadline."""
        self._stopping = True
        self._wakeup.set()
        self.active.set()  # so that run() sees _stopping and ends
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            return len(pending)
        return 0
