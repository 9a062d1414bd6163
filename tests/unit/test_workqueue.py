import asyncio

from lucidgrant.workqueue import WorkQueue


async def test_runs_due_work_in_order_and_never_a_grant_twice_at_once():
    running: set[tuple[str, str]] = set()
    overlaps = 0
    order: list[str] = []

    async def reconcile(key):
        nonlocal overlaps
        if key in running:
            overlaps += 1
        running.add(key)
        order.append(key[1])
        await asyncio.sleep(0.05)
        running.discard(key)
        return None

    scheduler = WorkQueue(reconcile, concurrency=4)
    task = asyncio.create_task(scheduler.run())
    loop_now = scheduler._clock()
    scheduler.wake(("ns", "late"), loop_now + 0.2)
    scheduler.wake(("ns", "soon"), loop_now + 0.05)
    scheduler.wake(("ns", "now"))
    await asyncio.sleep(0.01)
    for _ in range(5):  # wakes while running are kept, not run concurrently
        scheduler.wake(("ns", "now"))
    await asyncio.sleep(0.4)
    assert order[:1] == ["now"]
    assert order.index("soon") < order.index("late")
    assert order.count("now") == 2, "the wakes during the run collapse into one rerun"
    assert overlaps == 0
    assert await scheduler.stop(1.0) == 0
    await task


async def test_reconcile_answer_schedules_the_next_run_and_errors_retry():
    calls = 0

    async def reconcile(key):
        nonlocal calls
        calls += 1
        if calls == 1:
            return scheduler._clock() + 0.05
        raise RuntimeError("bug")

    scheduler = WorkQueue(reconcile, concurrency=1)
    task = asyncio.create_task(scheduler.run())
    scheduler.wake(("ns", "g"))
    await asyncio.sleep(0.2)
    assert calls == 2
    due = scheduler.due_at(("ns", "g"))
    assert due is not None and due > scheduler._clock() + 20, "a crash retries later, not at once"
    await scheduler.stop(1.0)
    await task


async def test_inactive_scheduler_runs_nothing_until_activated():
    seen = []

    async def reconcile(key):
        seen.append(key)

    scheduler = WorkQueue(reconcile)
    scheduler.active.clear()
    task = asyncio.create_task(scheduler.run())
    scheduler.wake(("ns", "g"))
    await asyncio.sleep(0.1)
    assert seen == []
    scheduler.active.set()
    scheduler.wake(("ns", "g"))
    await asyncio.sleep(0.1)
    assert seen == [("ns", "g")]
    await scheduler.stop(1.0)
    await task


async def test_stop_waits_for_running_work():
    finished = asyncio.Event()

    async def reconcile(key):
        await asyncio.sleep(0.2)
        finished.set()

    scheduler = WorkQueue(reconcile)
    task = asyncio.create_task(scheduler.run())
    scheduler.wake(("ns", "g"))
    await asyncio.sleep(0.05)
    assert await scheduler.stop(2.0) == 0
    assert finished.is_set()
    await task
