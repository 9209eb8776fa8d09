"""A job's progress on stderr, in plain text: a bar redrawn in place on a terminal, one line per
change of state or message elsewhere (a log, a notebook's captured stderr)."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None):
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.last: tuple[str, int, str] | None = None

    def update(self, state: str, percent: int, message: str) -> None:
        shown = (state, percent, message)
        if shown == self.last:
            return
        percent = max(0, min(100, percent))
        filled = WIDTH * percent // 100
        bar = "#" * filled + "-" * (WIDTH - filled)
        text = f"{self.label} [{bar}] {percent:3d} % {state}" + (f": {message}" if message else "")
        if self.interactive:
            self.stream.write("\r\033[K" + text)
        elif self.last is None or shown[0::2] != self.last[0::2]:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.last = shown

    def close(self) -> None:
        if self.interactive and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()
