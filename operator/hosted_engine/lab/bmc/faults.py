"""Faults of the lab's BMCs themselves (not of the machines they drive).

:class:`BmcFaults` holds, per node, whether its BMC is *down* (it stops answering: a request for
the node's system gets no answer while the fault lasts, like a BMC that hangs or lost its
network; a client gives up on its own time-out) and how *slow* it is (every answer comes that
many seconds late). The Redfish server applies them to the requests for
``/redfish/v1/Systems/<node>...`` (the service root and the collection, shared by every node,
stay as they are). A request that reaches a down BMC is lost: it is never carried out; its
connection stays silent until the BMC comes back or ``max_hold`` seconds pass, then gets a 503
(the client has given up long before).

IPMI BMCs are not affected (the chaos tests drive Redfish).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

#: Longest a down BMC holds a request before answering 503 (seconds).
DEFAULT_MAX_HOLD = 60.0

_SYSTEMS = "/redfish/v1/Systems/"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BmcFaults:
    """Down and slow BMCs, by node name (thread-safe)."""

    def __init__(self, max_hold: float = DEFAULT_MAX_HOLD) -> None:
        self.max_hold = max_hold
        self._changed = threading.Condition()
        self._down: set[str] = set()
        self._delay: dict[str, float] = {}
        self._closed = False
        #: requests that met a fault (down or slow), by node: what tests read
        self.held: dict[str, int] = {}

    def set_down(self, node: str, down: bool = True) -> None:
        with self._changed:
            if down:
                self._down.add(node)
            else:
                self._down.discard(node)
            self._changed.notify_all()

    def set_delay(self, node: str, seconds: float) -> None:
        """Every answer of ``node``'s BMC comes ``seconds`` late (0: on time)."""
        if seconds < 0:
            raise ValueError(f"a BMC delay must be >= 0, got {seconds}")
        with self._changed:
            if seconds:
                self._delay[node] = seconds
            else:
                self._delay.pop(node, None)
            self._changed.notify_all()

    def clear(self, node: str | None = None) -> None:
        """End every fault of ``node`` (of every node when None)."""
        with self._changed:
            if node is None:
                self._down.clear()
                self._delay.clear()
            else:
                self._down.discard(node)
                self._delay.pop(node, None)
            self._changed.notify_all()

    def is_down(self, node: str) -> bool:
        with self._changed:
            return node in self._down

    def delay(self, node: str) -> float:
        with self._changed:
            return self._delay.get(node, 0.0)

    def close(self) -> None:
        """Release every held request (the server is stopping); faults no longer hold."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def hold(self, node: str) -> bool:
        """Block the calling request thread as ``node``'s faults say; False when the request
        is lost (it met a down BMC) and must not be carried out."""
        with self._changed:
            if self._closed or (node not in self._down and node not in self._delay):
                return True
            self.held[node] = self.held.get(node, 0) + 1
            if node in self._down:
                # lost: no answer while the BMC is down; never carried out, even when the BMC
                # comes back (the client gave up); a 503 closes the connection at the end
                deadline = time.monotonic() + self.max_hold
                while node in self._down and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                return False
            # a slow answer: wait out the delay (cut short only by close or a cleared delay)
            until = time.monotonic() + self._delay.get(node, 0.0)
            while not self._closed and self._delay.get(node, 0.0):
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return True

    def middleware(self, app: WsgiApp) -> WsgiApp:
        """``app`` with the faults applied to ``/redfish/v1/Systems/<node>...`` requests."""

        def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            path = str(environ.get("PATH_INFO") or "")
            if path.startswith(_SYSTEMS):
                node = path[len(_SYSTEMS):].split("/", 1)[0]
                if node and not self.hold(node):
                    body = b'{"error": {"message": "the BMC does not answer"}}'
                    start_response(
                        "503 Service Unavailable",
                        [("Content-Type", "application/json"),
                         ("Content-Length", str(len(body)))],
                    )
                    return [body]
            return app(environ, start_response)

        return wrapped
