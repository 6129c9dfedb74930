"""The engine's priority scheduler: most urgent work first across sessions, FIFO within a priority, and a real
server whose question overtakes other sessions' queued memory syncs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from serving.engines.scheduler import PriorityExecutor
from tests.support import wait_until


def test_work_runs_by_priority_then_in_order() -> None:
    ex = PriorityExecutor("test", linger_s=0.0)
    gate = threading.Event()
    ran: list[str] = []
    blocker = ex.submit(0, gate.wait)
    futures = [ex.submit(p, ran.append, name) for p, name in ((4, "sync-a"), (3, "probe"), (4, "sync-b"), (0, "q"))]
    futures.append(ex.submit(1, ran.append, "instruction"))
    gate.set()
    for f in [blocker, *futures]:
        f.result(10)
    assert ran == ["q", "instruction", "probe", "sync-a", "sync-b"]
    assert ex.stats.runs == {0: 2, 1: 1, 3: 1, 4: 2}
    ex.shutdown()


def test_cancelled_work_is_skipped_and_errors_reach_the_caller() -> None:
    async def main() -> None:
        ex = PriorityExecutor("test")
        gate = threading.Event()
        blocker = ex.submit(0, gate.wait)
        ran: list[int] = []
        task = asyncio.ensure_future(ex.run(4, ran.append, 1))
        await asyncio.sleep(0.05)
        task.cancel()
        gate.set()
        await asyncio.wrap_future(blocker)
        assert await ex.run(0, lambda: 7) == 7
        try:
            await ex.run(0, lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the error did not reach the caller")
        assert ran == []  # cancelled before it started: never run
        ex.shutdown()

    asyncio.run(main())


def test_a_question_overtakes_other_sessions_syncs_on_a_real_server(start_server: Any, tools: Any) -> None:
    server = start_server()
    executor = server.service.orchestrator.engine._executor
    with server.client() as c:
        sids = [c.post("/v1/sessions").json()["id"] for _ in range(5)]
        gate = threading.Event()
        blocker = executor.submit(0, gate.wait)  # hold the model thread, as a long piece of work would
        try:
            for sid in sids[1:]:  # four sessions complete a step each: their syncs queue behind the gate
                for i in range(2):
                    assert tools.post_frame(c, sid, tools.jpeg(i), i * 0.5).status_code == 200
            wait_until(lambda: executor.pending() >= 4, 30, what="syncs queued")
            executor.trace = []
            pending_answer = threading.Thread(
                target=lambda: c.post(
                    f"/v1/sessions/{sids[0]}/messages", params={"stream": "false"}, json={"question": "What is shown?"}
                ),
            )
            pending_answer.start()
            wait_until(lambda: executor.pending() >= 5, 30, what="question queued")
        finally:
            gate.set()
        blocker.result(30)
        pending_answer.join(60)
        trace = executor.trace
        executor.trace = None
        # the question's pieces (prefill, tokens) ran before any of the syncs that were queued before it
        assert trace[0] == 0 and 4 in trace
        assert all(p == 0 for p in trace[: trace.index(4)])
        assert trace.index(4) >= 3  # prepare, begin, at least one decode step or finish
        for sid in sids:
            c.delete(f"/v1/sessions/{sid}")
