"""Garbage collector thresholds of the processes that run jobs (workers, `tablesync run`, the demo).

A page of a first run makes some hundred thousand tuples and lists that live until the page is
written. Under CPython's default thresholds (700, 10, 10) they set off collections of the older
generations every few thousand allocations, each walking every object the survivors joined:
measured in a 1M-row first run, 2.2 of the worker's 5.7 µs of CPU per record. With the youngest
generation collected every 50,000 allocations the same run took 3.4 µs; reference cycles are
still collected, only in fewer, larger passes (the worker's peak RSS is in docs/performance.md).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)


def tune() -> None:
    gc.set_threshold(*THRESHOLDS)
