"""Progress of long steps: a tqdm bar on a terminal, a plain periodic line otherwise.

A bar's carriage returns make a log file unreadable, and `tqdm(disable=None)` shows nothing at all
when stderr is not a terminal (a batch job, `2> log`, a pipe). `progress(...)` picks: tqdm when the
stream is a terminal, else one line every `every` seconds ("sweep: 12/40 pt (30%), 1m05s, ~2m32s
left"), and nothing for a step that ends before the first line is due. Both take the same calls
(iterate, `update`, `set_postfix`, `close`, `with`).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

if TYPE_CHECKING:
    from tqdm import tqdm

PLAIN_EVERY = 10.0   # seconds between plain lines (the longest silence a user waits through)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, every: float | None = None,
             file: TextIO | None = None) -> Progress:
    """A progress reporter over `iterable` (or driven by `update`) for `total` steps: tqdm on a
    terminal, `PlainProgress` otherwise (a line every `every` seconds, default PLAIN_EVERY),
    `Silent` when not `enabled`."""
    stream = sys.stderr if file is None else file
    every = PLAIN_EVERY if every is None else every
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if not enabled:
        return Silent(iterable)
    if _is_terminal(stream):
        from tqdm import tqdm as bar
        return bar(iterable, total=total, desc=desc, unit=unit, file=stream, leave=False,
                   dynamic_ncols=True, smoothing=0.1)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, every=every, file=stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """Seconds as a short human duration: '45s', '3m05s', '2h14m'."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Silent:
    """Progress that reports nothing (--no-progress, --json)."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print a message (tqdm's `write`: above the bar)."""
        print(text, file=sys.stderr if file is None else file, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainProgress(Silent):
    """One line per `every` seconds on a stream that is not a terminal, and a last line on
    `close` when any line was printed (so a log shows where a long step ended)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None, desc: str,
                 unit: str, every: float, file: TextIO):
        super().__init__(iterable)
        self.total, self.desc, self.unit, self.every, self.file = total, desc, unit, every, file
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.printed = 0
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in super().__iter__():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed and self.printed:
            self._line(time.monotonic(), final=True)
        self.closed = True

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and 0 < self.n < self.total and not final:
            left = f", ~{duration(elapsed * (self.total - self.n) / self.n)} left"
        tail = f", {self.postfix}" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{done} {self.unit}{pct}, {duration(elapsed)}{left}{tail}",
              file=self.file, flush=True)
        self.printed += 1


if TYPE_CHECKING:
    # What `progress` returns: a tqdm bar, a PlainProgress or a Silent (the first is a Silent).
    Progress: TypeAlias = tqdm[Any] | Silent
