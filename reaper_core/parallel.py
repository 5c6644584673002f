"""Threads in one process: NumPy, zlib and the C extensions release the GIL, so chunks of
patches run on every core without copies (the Dask cluster spreads whole files instead); a
forked child for the one C extension that holds it (:func:`begin_in_child`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

T = TypeVar("T")
U = TypeVar("U")


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

    out = []
    with own_threads(), ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(fn, items[s:s + chunk]) for s in starts]
        for s, fut in zip(starts, futures, strict=True):
            out.append(fut.result())
            if progress:
                progress(min(s + chunk, n), n)
    return out


def map_ordered(fn: Callable[[U], T], items: Iterable[U], threads: int | None = None
                ) -> Iterator[T]:
    """``fn(item)`` of each of ``items``, yielded in order, computed on ``threads`` threads
    (:func:`compute_threads` when None; BLAS held to one thread meanwhile) with no more
    results ahead of the caller than there are threads: memory is bounded by the threads, not
    by the number of items (a stack's frames). ``items`` are drawn in the calling thread —
    read files there: ``warnings.catch_warnings``, which astropy's reading and photutils'
    detection need, is not thread-safe — and ``fn`` should not change global state. In this
    thread when there is one."""
    threads = compute_threads() if threads is None else threads
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    source = iter(items)
    with own_threads(), ThreadPoolExecutor(threads) as pool:
        ahead = deque(pool.submit(fn, item) for item in islice(source, threads))
        while ahead:
            result = ahead.popleft().result()
            ahead.extend(pool.submit(fn, item) for item in islice(source, 1))
            yield result


@contextmanager
def own_threads() -> Iterator[None]:
    """BLAS held to one thread while this process runs compute stages on threads of its own
    (:func:`compute_threads` > 1); nothing changes otherwise.

    OpenBLAS's threads wait for work by spinning: started by one matrix product (the
    background mesh's up-sampling), they took a core from the patch threads for seconds
    after it (the ingest of a 2048² frame: 11.4–15.6 user CPU-s with them, 11.0 without).
    """
    if compute_threads() <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


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


def begin_in_child(fn: Callable[..., np.ndarray], *args) -> ChildWork:
    """Start ``fn(*args)``, which returns a NumPy array of numbers, in a forked child process
    when this process has more than one compute thread (:func:`compute_threads`) and runs on
    Linux; :meth:`ChildWork.result` waits for the array. For work that holds the GIL
    throughout (``sep``'s deblending): a thread would not overlap it.

    The child inherits ``args`` (nothing is copied to it) and sends the array back in NumPy's
    ``.npy`` format (no pickle). Where the child cannot start, fails or dies, ``fn`` runs in
    this process when the result is asked for (so its error, if any, is raised here). The
    child runs C code on arrays it already holds: it takes none of the locks another thread
    of this process may have held when it was forked (no import, no logging, no I/O but its
    pipe; what it runs is imported before), and ends with ``os._exit``. One that hangs is
    stopped after :data:`CHILD_TIMEOUT_S`.
    """
    import os
    import sys

    # Linux only: macOS's system libraries are not safe to use in a forked child (Python's
    # own multiprocessing stopped forking there).
    if compute_threads() <= 1 or not sys.platform.startswith("linux"):
        return ChildWork(fn, args)
    import io

    from numpy.lib import format as npy  # (imported on first use: here, not in the child)

    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return ChildWork(fn, args)
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_end)
            out = io.BytesIO()
            npy.write_array(out, np.asarray(fn(*args)), allow_pickle=False)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(out.getbuffer())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return ChildWork(fn, args, pid, read_end)


#: Seconds :meth:`ChildWork.result` waits for the child before stopping it and doing the work
#: itself (the deblending of a 2048² frame takes half a second).
CHILD_TIMEOUT_S = 120.0


class ChildWork:
    """Work begun by :func:`begin_in_child`: in child process ``pid``, which writes its array to
    the pipe ``read_end``, or (``pid`` None) to be done here when its result is asked for."""

    def __init__(self, fn: Callable[..., np.ndarray], args: tuple, pid: int | None = None,
                 read_end: int | None = None) -> None:
        self._fn, self._args, self._pid, self._read_end = fn, args, pid, read_end

    def result(self) -> np.ndarray:
        """The array: the child's, or computed here where the child failed, died or hung."""
        import io
        import os
        import select

        if self._pid is None:
            return self._fn(*self._args)
        chunks, deadline = [], time.monotonic() + CHILD_TIMEOUT_S
        with os.fdopen(self._read_end, "rb", buffering=0) as pipe:
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([pipe], [], [], left)[0]:
                    break
                chunk = pipe.read(1 << 20)
                if not chunk:  # the child is done
                    deadline = 0.0
                    break
                chunks.append(chunk)
        if deadline:  # it hung
            self._stop()
            chunks = []
        if self._reap() == 0 and chunks:
            try:
                return np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False)
            except ValueError:  # cut short
                pass
        return self._fn(*self._args)

    def cancel(self) -> None:
        """Stop the child and forget its work (the caller failed and needs it no more)."""
        import os

        if self._pid is None:
            return
        os.close(self._read_end)
        self._stop()
        self._reap()

    def _stop(self) -> None:
        import os
        import signal

        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:  # (ended meanwhile)
            pass

    def _reap(self) -> int:
        """The child's exit status once it has ended (0 where something else reaped it first,
        a SIGCHLD handler of the host: its data then decide)."""
        import os

        try:
            _, status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            status = 0
        self._pid = None
        return status


#: glibc allocator settings for processes that run the compute stages, bytes: arrays up to
#: ``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` of freed heap is kept for
#: the next file instead of being returned to the kernel. (64 and 256 MiB made Dask workers,
#: whose tasks allocate in a thread's arena, outgrow their memory limit.)
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20
_allocator_kept: list[bool | None] = [None]


def keep_freed_memory() -> bool:
    """Let this process reuse one file's large arrays' memory for the next (glibc's
    ``mallopt``); once per process. Returns whether the settings took (False where the C
    library is not glibc: its allocator is left as it is).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which hands every freed
    array back to the kernel, to be faulted in again page by page: a 2048² FFI's compute
    stages took 15–17 s on a worker with it, 11–13 s with these settings (peak 0.5 GB), and a
    1-worker ingest of 8 FFIs 126 s → 98 s (``benchmarks/scale.py``).
    """
    if _allocator_kept[0] is None:
        _allocator_kept[0] = _mallopt({-3: MMAP_THRESHOLD, -1: TRIM_THRESHOLD})
    return bool(_allocator_kept[0])


def _mallopt(settings: dict[int, int]) -> bool:
    """glibc's ``mallopt(param, value)`` for each item (M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD
    -3 in malloc.h); False when it is not there or refuses one."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(k, v) == 1 for k, v in settings.items())
