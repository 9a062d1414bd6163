"""The work queue under a clock that moves only when told: tests wait for events (bounded),
never for time to pass."""

import asyncio

from lucidgrant.workqueue import WorkQueue

T0 = 1_000_000.0
BOUND = 5.0  # seconds an awaited event may take before the test fails


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Work:
    """A reconcile that records its runs, can be held mid-run, and answers a chosen time."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running: set[tuple[str, str]] = set()
        self.overlaps = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.ran = asyncio.Condition()
        self.answer: float | None = None
        self.fail = False

    async def __call__(self, key: tuple[str, str]) -> float | None:
        self.overlaps += key in self.running
        self.running.add(key)
        async with self.ran:
            self.started.append(key[1])
            self.ran.notify_all()
        await self.gate.wait()
        self.running.discard(key)
        if self.fail:
            raise RuntimeError("bug")
        return self.answer

    async def until(self, count: int) -> None:
        async with self.ran:
            await asyncio.wait_for(self.ran.wait_for(lambda: len(self.started) >= count), BOUND)


async def settle(queue: WorkQueue) -> None:
    """Let the queue's task run until it waits again (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_due_work_runs_in_order_and_a_grant_never_twice_at_once():
    clock, work = Clock(), Work()
    queue = WorkQueue(work, concurrency=1, clock=clock)
    queue.wake(("ns", "late"), T0 - 1)
    queue.wake(("ns", "soon"), T0 - 2)
    queue.wake(("ns", "now"), T0 - 3)
    task = asyncio.create_task(queue.run())
    await work.until(3)
    assert work.started == ["now", "soon", "late"]

    work.gate.clear()
    queue.wake(("ns", "again"))
    await work.until(4)
    for _ in range(5):  # wakes while it runs are kept, not run concurrently
        queue.wake(("ns", "again"))
    work.gate.set()
    await work.until(5)
    await settle(queue)
    assert work.started[3:] == ["again", "again"], "the wakes during the run collapse into one"
    assert work.overlaps == 0
    assert await queue.stop(BOUND) == 0
    await task


async def test_the_reconcile_answer_schedules_the_next_run_and_a_crash_retries_later():
    clock, work = Clock(), Work()
    queue = WorkQueue(work, concurrency=1, clock=clock)
    task = asyncio.create_task(queue.run())
    work.answer = T0 + 600
    queue.wake(("ns", "g"))
    await work.until(1)
    await settle(queue)
    assert queue.due_at(("ns", "g")) == T0 + 600
    clock.now = T0 + 600
    work.fail = True
    queue.wake(("ns", "other"))  # the loop looks at the heap again
    await work.until(2)
    await settle(queue)
    due = queue.due_at(("ns", "g"))
    assert due is not None and due >= clock.now + 20, "a crash retries later, not at once"
    assert queue.completed >= 2 and queue.last_progress == clock.now
    await queue.stop(BOUND)
    await task


async def test_an_inactive_queue_runs_nothing_until_activated():
    clock, work = Clock(), Work()
    queue = WorkQueue(work, clock=clock)
    queue.active.clear()
    task = asyncio.create_task(queue.run())
    queue.wake(("ns", "g"))
    await settle(queue)
    assert work.started == []
    queue.active.set()
    await work.until(1)
    await queue.stop(BOUND)
    await task


async def test_stop_waits_for_running_work_and_forget_drops_a_wake():
    clock, work = Clock(), Work()
    queue = WorkQueue(work, clock=clock)
    task = asyncio.create_task(queue.run())
    queue.wake(("ns", "gone"), T0 + 100)
    queue.forget(("ns", "gone"))
    assert queue.pending == 0
    work.gate.clear()
    queue.wake(("ns", "g"))
    await work.until(1)
    stopping = asyncio.create_task(queue.stop(BOUND))
    await settle(queue)
    assert not stopping.done(), "a running reconcile (a token being stored) is waited for"
    work.gate.set()
    assert await asyncio.wait_for(stopping, BOUND) == 0
    await task
    assert work.started == ["g"]


async def test_a_standby_s_queue_stops_at_once():
    """A replica that never led stops without waiting out the grace: stop() wakes the queue
    from its wait for leadership, and the queue must not go back to sleep (it once cleared
    that wake-up and slept until the grace ran out)."""
    queue = WorkQueue(Work(), clock=Clock())
    queue.active.clear()
    task = asyncio.create_task(queue.run())
    await settle(queue)
    assert await queue.stop(BOUND) == 0
    await asyncio.wait_for(task, BOUND)
