"""Host reconciles run on their own threads: a thousand Hosts must not fill asyncio's default
executor, where every other handler's API calls (the HostedEngine's) wait their turn."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from hosted_engine.handlers import host as handler

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_reconciles_leave_the_default_executor_free() -> None:
    release = threading.Event()
    seen: list[str] = []

    def reconcile(name: str) -> str:
        seen.append(f"{threading.current_thread().name}:{VAR.get()}")
        release.wait(5)
        return name

    VAR.set("caller")
    busy = [asyncio.create_task(handler._in_reconcile_pool(reconcile, f"node-{i}"))
            for i in range(handler.RECONCILE_THREADS * 3)]
    # every reconcile thread is blocked, yet another handler's call goes through at once
    other = await asyncio.wait_for(asyncio.to_thread(threading.current_thread), 5)
    assert not other.name.startswith("host")
    release.set()
    assert await asyncio.gather(*busy) == [f"node-{i}" for i in range(len(busy))]
    assert all(s.startswith("host") and s.endswith(":caller") for s in seen)
