"""Progress of long work: tqdm's bar on a terminal; plain, periodic log lines elsewhere (a cluster job's
log, a pipe), where a bar's carriage returns would fill the file with one unreadable line."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm.auto import tqdm


class PlainProgress:
    """The part of tqdm's interface the trainer uses, printing one line at most every ``every_s``
    seconds and at each tenth of the work: ``meta-train maml: 1000/10000 (10%), 52.1 it/s, loss=0.61``."""

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", unit: str = "it",
                 every_s: float = 30.0, file=None):
        self.total, self.n, self.desc, self.unit, self.every_s = total, initial, desc, unit, every_s
        self.file = file or sys.stderr
        self.started, self.start_n = time.perf_counter(), initial
        self.printed_at, self.printed_tenth, self.postfix = self.started, self._tenth(), ""

    def _tenth(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        due = now - self.printed_at >= self.every_s or self._tenth() > self.printed_tenth
        if due or self.n == self.total:
            self._print(now)

    def _print(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.started, 1e-9)
        of = f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of}, {rate:.3g} {self.unit}/s{tail}", file=self.file, flush=True)
        self.printed_at, self.printed_tenth = now, self._tenth()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        pass


def progress(total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it",
             enabled: bool = True):
    """A progress reporter: tqdm on a terminal, :class:`PlainProgress` otherwise, silent if not
    ``enabled``."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial, desc, unit)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def track(items: Iterable, desc: str = "", unit: str = "it", enabled: bool = True):
    """Iterate over ``items`` reporting progress as :func:`progress` does."""
    items = list(items)
    bar = progress(len(items), desc=desc, unit=unit, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
