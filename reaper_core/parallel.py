"""Threads in one process: NumPy, zlib and the C extensions release the GIL, so chunks of
patches run on every core without copies (the Dask cluster spreads whole files instead)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def compute_threads() -> int:
    """Threads for the compute stages in this process: one per available core (at most 4),
    one on a Dask worker (the cluster already runs a process per core)."""
    import os
    import sys

    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            get_worker()
            return 1
        except ValueError:
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(cores or 1), 4))


def map_chunks(fn: Callable[[Sequence], T], items: Sequence, chunk: int,
               progress: Callable[[int, int], None] | None = None) -> list[T]:
    """``fn`` of each ``chunk``-long slice of ``items``, in order, on :func:`compute_threads`
    threads (BLAS held to one thread meanwhile); ``progress(done, n)`` after each slice, the
    finished prefix only, so it never steps back."""
    n = len(items)
    starts = range(0, n, chunk)
    threads = min(compute_threads(), len(starts))
    if threads <= 1:
        out = []
        for s in starts:
            out.append(fn(items[s:s + chunk]))
            if progress:
                progress(min(s + chunk, n), n)
        return out
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(fn, items[s:s + chunk]) for s in starts]
        for s, fut in zip(starts, futures, strict=True):
            out.append(fut.result())
            if progress:
                progress(min(s + chunk, n), n)
    return out


def begin(fn: Callable[..., T], *args) -> Callable[[], T]:
    """Start ``fn(*args)`` on a thread of its own when this process has more than one compute
    thread (:func:`compute_threads`), so that it overlaps what the caller does next; returns a
    function that waits for the result and returns it (or raises what ``fn`` raised). With one
    thread (a Dask worker), ``fn`` runs when the result is asked for."""
    if compute_threads() <= 1:
        return lambda: fn(*args)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future.result
