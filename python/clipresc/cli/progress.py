"""The progress bar the ``clipresc`` command draws on stderr."""

from __future__ import annotations

import math
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units.

    >>> human_bytes(3 * 2**30), human_bytes(512)
    ('3.00 GiB', '512 B')
    """
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{int(n)} B"


class Progress:
    """A progress bar with throughput on ``stream`` (stderr): redrawn in place on a
    terminal, a line every 10 % otherwise; a summary line at the end."""

    def __init__(self, total: int, label: str, stream: TextIO, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def _rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        frac = min(self.done / self.total, 1.0)
        rate = self._rate()
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        text = (
            f"{self.label} {100 * frac:5.1f}% {human_bytes(self.done)}/"
            f"{human_bytes(self.total)} {human_bytes(rate)}/s"
            + (f" ETA {eta:.0f}s" if math.isfinite(eta) else "")
        )
        if self.tty:
            if now - self._last_draw > 0.1 or self.done >= self.total:
                width = 24
                fill = int(width * frac)
                self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {text}\x1b[K")
                self.stream.flush()
                self._last_draw = now
        else:
            decile = int(10 * frac)
            if decile != self._last_decile:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_decile = decile

    def finish(self, message: str) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.start
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(
            f"{message}: {human_bytes(self.done)} in {dt:.2f} s "
            f"({human_bytes(self.done / max(dt, 1e-9))}/s)\n"
        )
        self.stream.flush()
