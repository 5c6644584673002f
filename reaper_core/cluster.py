"""Ingest on a Dask cluster (``dask.distributed``): the compute stages of each file (read,
sources, cutouts, embed) run as one task on a worker; the client stores each result in one
transaction, so it is the only writer (SQLite needs that; PostgreSQL gets the same guarantee).

Files are tasks keyed by the SHA-256 of their bytes: a file already stored is never sent, a
task whose worker dies is re-run by the scheduler on another worker, and a file stored by
another process meanwhile is reported as a duplicate — nothing is stored twice or by half.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from .config import Settings
from .files import safe_filename
from .ingest import (
    FileResult,
    IngestItem,
    Prepared,
    check_new,
    failure,
    prepare,
    store_result,
)

#: Re-runs of a file's task after its worker died, before the file is reported as failed.
RETRIES = 2
_EMBEDDERS: dict = {}


def prepare_on_worker(path: str, settings: Settings, name: str, sha256: str,
                      hdu: int | None) -> Prepared | FileResult:
    """The compute stages of one file, run on a worker (the embedder is built once per worker
    process and kept). A bad file is a result, not a task failure: only a worker that dies
    makes the scheduler run the task again."""
    from .embedders import get_embedder

    t0 = time.perf_counter()
    try:
        key = (settings.embedder, settings.vertex_dimension, settings.vertex_endpoint)
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = _EMBEDDERS[key] = get_embedder(settings.embedder, settings)
        prep = prepare(path, settings, embedder, name=name, sha256=sha256, hdu=hdu)
        # The writer stores the packed patches: the float32 ones (3× the bytes) stay here.
        prep.patches = prep.patches[:0]
        return prep
    except Exception as exc:
        return failure(name, exc, settings, t0)


def connect(workers: int | None = None, scheduler: str | None = None):
    """A ``distributed.Client``: to the scheduler at ``scheduler`` (``tcp://host:8786``), else
    to a new LocalCluster of ``workers`` processes with one thread each (closed with the
    client)."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s")
    cluster = LocalCluster(n_workers=max(int(workers or 1), 1), threads_per_worker=1,
                           processes=True, dashboard_address=None)
    client = Client(cluster)
    client._reaper_cluster = cluster  # closed together
    return client


def close(client) -> None:
    """Close a client from :func:`connect`, and its LocalCluster if it made one."""
    cluster = getattr(client, "_reaper_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def run_on_cluster(
    engine: Engine,
    todo: list[IngestItem],
    settings: Settings,
    client,
    on_file: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[int, int, FileResult], None] | None = None,
    hdu: int | None = None,
) -> list[FileResult]:
    """The per-file part of :func:`reaper_core.ingest.ingest_many` with the compute stages on
    ``client``'s cluster: results in the order of ``todo``; ``on_file(i, n, name)`` is called
    when file i's task is sent, ``on_result(i, n, result)`` when it is stored or failed."""
    from distributed import as_completed

    n = len(todo)
    results: list[FileResult | None] = [None] * n
    futures = {}
    started: dict[int, float] = {}
    for i, it in enumerate(todo):
        display = safe_filename(it.name or it.path.name)
        started[i] = time.perf_counter()
        try:
            sha, dup = check_new(engine, it.path, display, started[i])
        except Exception as exc:
            results[i] = failure(display, exc, settings, started[i])
            if on_result:
                on_result(i, n, results[i])
            continue
        if dup is not None:
            results[i] = dup
            if on_result:
                on_result(i, n, dup)
            continue
        if on_file:
            on_file(i, n, display)
        fut = client.submit(prepare_on_worker, str(it.path), settings, display, sha,
                            hdu, key=f"reaper-prepare-{sha}-{i}", retries=RETRIES, pure=False)
        futures[fut] = i
    for fut in as_completed(list(futures)):
        i = futures[fut]
        it = todo[i]
        display = safe_filename(it.name or it.path.name)
        try:
            prep = fut.result()
            results[i] = prep if isinstance(prep, FileResult) else store_result(
                engine, prep, settings, it.stored_path, settings.embedder, started[i])
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("distributed", "asyncio", "concurrent"):
                results[i] = FileResult(display, "error", (
                    f"{display}: the Dask cluster lost it ({type(exc).__name__}): nothing of it "
                    "was stored; run the same command again to go on"),
                    seconds=time.perf_counter() - started[i])
            else:
                results[i] = failure(display, exc, settings, started[i])
        fut.release()
        if on_result:
            on_result(i, n, results[i])
    return [r for r in results if r is not None]
