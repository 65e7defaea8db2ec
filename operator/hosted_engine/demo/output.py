"""The demo's plain-text reporter: one line per event, with wall-clock time and the time since
the demo started. Colours only when the stream is a terminal and ``NO_COLOR`` is unset."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import TextIO

_COLOURS = {"ok": "32", "fail": "31", "step": "1", "note": "36", "warn": "33"}


def wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Reporter:
    """Prints timestamped lines: ``12:00:01.234  +3.2s  text``."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = wants_colour(self.stream) if colour is None else colour
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _paint(self, kind: str, text: str) -> str:
        code = _COLOURS.get(kind)
        if not self.colour or code is None:
            return text
        return f"\033[{code}m{text}\033[0m"

    def line(self, text: str, kind: str = "") -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        prefix = f"{stamp} {self.elapsed():>7.1f}s  "
        for i, part in enumerate(text.splitlines() or [""]):
            lead = prefix if i == 0 else " " * len(prefix)
            self.stream.write(lead + self._paint(kind, part) + "\n")
        self.stream.flush()

    def step(self, number: int, total: int, title: str) -> None:
        self.stream.write("\n")
        self.line(f"== step {number}/{total}: {title}", "step")

    def ok(self, text: str) -> None:
        self.line(f"OK   {text}", "ok")

    def fail(self, text: str) -> None:
        self.line(f"FAIL {text}", "fail")

    def note(self, text: str) -> None:
        self.line(f"     {text}", "note")

    def info(self, text: str) -> None:
        self.line(f"     {text}")

    def plain(self, text: str = "") -> None:
        """Unstamped text (instructions at the end)."""
        self.stream.write(text + "\n")
        self.stream.flush()
