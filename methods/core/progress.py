"""Progress reporting: the one place that decides how a loop shows its progress.

- disabled (`progress=false`): nothing, transformers', huggingface_hub's and datasets' own bars
  included (`library_bars`);
- stderr is a terminal: a tqdm bar;
- otherwise (a log file, a pipe): one plain line every `COMPBENCH_PROGRESS_EVERY_S` seconds
  (default 30), never a carriage return: tqdm redraws its bar with '\\r', which a file keeps as one
  endless line.

Every bar of the harness comes from `bar`; transformers' own bars come through it too, by the hook
that `library_bars` installs. This module lives in methods/core because the engine and the trainer
use it and methods/ imports nothing from eval/."""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TextIO, Union

from tqdm import tqdm

EVERY_S_ENV = "COMPBENCH_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0


def every_s() -> float:
    """Seconds between two progress lines outside a terminal ($COMPBENCH_PROGRESS_EVERY_S)."""
    raw = os.environ.get(EVERY_S_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{EVERY_S_ENV}={raw!r} is out of range: it must be a number of seconds >= 0")
    return value


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Lines:
    """tqdm's interface, as far as the harness and transformers use it, writing one line to stderr
    at most every `every` seconds and a last one at the end if it wrote any: a loop shorter than
    `every` writes nothing."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
                 initial: int = 0, every: float | None = None, file: TextIO | None = None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.n = iterable, total, desc or "progress", initial
        self.every = every_s() if every is None else every
        self.file = file or sys.stderr
        self.postfix = ""
        self.start = self._last = time.monotonic()
        self._start_n, self._wrote, self._closed = initial, False, False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # any other tqdm method a library calls (refresh, clear, unpause, ...) does nothing here
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None

    def update(self, n: float = 1) -> None:
        self.n += n
        self._tick()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in items.items()), refresh)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)
        if refresh:
            self._tick()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc
        if refresh:
            self._tick()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wrote:
            self._write(done=True)

    def line(self, done: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        count = f"{self.n:g}/{self.total}" if self.total else f"{self.n:g}"
        parts = [f"{self.desc}: {count}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{elapsed:.0f}s elapsed")
        done_here = self.n - self._start_n
        if not done and self.total and 0 < done_here and self.n < self.total:
            parts.append(f"~{elapsed * (self.total - self.n) / done_here:.0f}s left")
        if done:
            parts.append("done")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _tick(self) -> None:
        finished = self.total is not None and self.n >= self.total   # `close` says so, once
        if not self._closed and not finished and time.monotonic() - self._last >= self.every:
            self._write()

    def _write(self, done: bool = False) -> None:
        self.file.write(self.line(done) + "\n")
        self.file.flush()
        self._last, self._wrote = time.monotonic(), True


Bar = Union[tqdm, Lines]


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
        enabled: bool = True, initial: int = 0) -> Bar:
    """The progress of a loop: iterate over it, or call `update`/`set_postfix`/`close`. Disabled,
    it writes nothing; in a terminal it is a tqdm bar; elsewhere, periodic lines (`Lines`)."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if _terminal():
        return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True)
    return Lines(iterable, total=total, desc=desc, initial=initial)


def _transformers_hook(factory: Any, args: tuple, kwargs: dict) -> Any:
    """transformers' bars (loading and writing weights): its own tqdm in a terminal or when it is
    switched off, periodic lines elsewhere."""
    from transformers.utils.logging import EmptyTqdm

    if factory is EmptyTqdm or kwargs.get("disable") or _terminal():
        return factory(*args, **kwargs)
    iterable = args[0] if args else kwargs.get("iterable")
    return Lines(iterable, total=kwargs.get("total"), desc=kwargs.get("desc"), initial=kwargs.get("initial", 0))


@contextmanager
def library_bars(enabled: bool) -> Iterator[None]:
    """transformers', huggingface_hub's and datasets' own progress bars for the span of a run, set
    back as they were afterwards. Disabled: none. Enabled: transformers' go through `bar`'s choice;
    huggingface_hub's (downloads) and datasets' have no hook, so outside a terminal they are off
    rather than fill a log with carriage returns."""
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tf

    was = (tf.is_progress_bar_enabled(), hub.are_progress_bars_disabled(), datasets.are_progress_bars_disabled())
    previous_hook = tf.set_tqdm_hook(_transformers_hook)
    if not enabled:
        tf.disable_progress_bar()
        datasets.disable_progress_bars()
    elif not _terminal():
        hub.disable_progress_bars()
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        tf.set_tqdm_hook(previous_hook)
        tf_on, hub_off, ds_off = was
        if tf.is_progress_bar_enabled() != tf_on:    # this also switches huggingface_hub's
            (tf.enable_progress_bar if tf_on else tf.disable_progress_bar)()
        if hub.are_progress_bars_disabled() != hub_off:
            (hub.disable_progress_bars if hub_off else hub.enable_progress_bars)()
        if datasets.are_progress_bars_disabled() != ds_off:
            (datasets.disable_progress_bars if ds_off else datasets.enable_progress_bars)()
