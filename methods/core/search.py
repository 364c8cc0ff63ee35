"""One-dimensional searches for the setting that meets a target (a sparsity, a FLOPs budget)."""
from __future__ import annotations

from typing import Callable


def bisect(meets: Callable[[float], bool], lo: float, hi: float, iters: int) -> tuple[float, float]:
    """[lo, hi] halved `iters` times around the point where a monotone condition switches:
    `meets(hi)` holds and `meets(lo)` does not, on entry and on return."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return lo, hi


def largest_meeting(meets: Callable[[float], bool], lo: float, hi: float, iters: int) -> float:
    """The largest x in [lo, hi] with `meets(x)`, for a condition that holds up to some x: `hi`
    where it holds there, else the lower end of [lo, hi] bisected `iters` times."""
    if meets(hi):
        return hi
    return bisect(lambda x: not meets(x), lo, hi, iters)[0]


def smallest_meeting(meets: Callable[[float], bool], iters: int, cap: float) -> float:
    """The smallest x ≥ 0 with `meets(x)`, for a condition that holds from some x on: 0 where it
    holds already; else the bracket [2^(k-1), 2^k] of the first power of two that meets it (or
    reaches `cap`), bisected `iters` times, and its upper end returned (it meets the condition)."""
    if meets(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while not meets(hi) and hi < cap:
        lo, hi = hi, hi * 2
    return bisect(meets, lo, hi, iters)[1]
