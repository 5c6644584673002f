"""Ingest on a Dask cluster (``dask.distributed``): the compute stages of each file (read,
sources, cutouts, embed) run as one task on a worker. Who stores the result depends on the
database:

- SQLite (one file, one writer at a time): the client stores each result in one transaction,
  so it is the only writer;
- a database server (PostgreSQL): each worker stores its own files, each in one transaction of
  its own, so the one client does not set the pace of a large cluster.

A fit's scoring of every cutout runs here too when the workers can read the database
(:func:`score_on_cluster`): each task reads one id range of embeddings and scores it.

Files are tasks keyed by the SHA-256 of their bytes: a file already stored is never sent, a
task whose worker dies is re-run by the scheduler on another worker (a transaction cut short
by the death is rolled back by the server), and a file stored by another process meanwhile is
reported as a duplicate — nothing is stored twice or by half.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine

from .config import Settings
from .ingest import (
    FileResult,
    IngestItem,
    Prepared,
    check_new,
    failure,
    image_name,
    prepare,
    store_result,
)

if TYPE_CHECKING:
    from .detector import PCAAnomalyDetector

#: Re-runs of a file's task after its worker died, before the file is reported as failed.
RETRIES = 2
#: Per worker process: embedders by their settings, database engines by URL.
_EMBEDDERS: dict = {}
_ENGINES: dict[str, Engine] = {}


def workers_store(engine: Engine) -> bool:
    """Whether the workers store their own files in ``engine``'s database: a server database
    takes many writers; SQLite keeps the client as its one writer."""
    return engine.dialect.name != "sqlite"


def prepare_on_worker(path: str, settings: Settings, name: str, sha256: str,
                      hdu: int | None) -> Prepared | FileResult:
    """The compute stages of one file, run on a worker (the embedder is built once per worker
    process and kept). A bad file is a result, not a task failure: only a worker that dies
    makes the scheduler run the task again."""
    from .embedders import get_embedder
    from .parallel import keep_freed_memory

    keep_freed_memory()
    t0 = time.perf_counter()
    try:
        key = (settings.embedder, settings.vertex_dimension, settings.vertex_endpoint)
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = _EMBEDDERS[key] = get_embedder(settings.embedder, settings)
        prep = prepare(path, settings, embedder, name=name, sha256=sha256, hdu=hdu)
        # The writer stores the packed patches and the preview: the float32 patches (3× the
        # bytes) and the frame's pixels stay here.
        prep.patches = np.zeros((0, prep.patch_size, prep.patch_size), np.float32)
        prep.background = None
        prep.image = prep.image.without_pixels()
        return prep
    except Exception as exc:
        return failure(image_name(name, hdu), exc, settings, t0)


def _worker_engine(url: str) -> Engine:
    """This worker process's engine for ``url`` (made once, kept)."""
    from . import store

    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = store.make_engine(url)
    return engine


def reads_database(engine: Engine, client) -> bool:
    """Whether ``client``'s workers can read ``engine``'s database: a server database by its
    URL; a SQLite file only on a LocalCluster made by :func:`connect` (the same machine)."""
    return workers_store(engine) or getattr(client, "_reaper_cluster", None) is not None


def score_on_worker(settings: Settings, embedder: str, model: tuple[bytes, str], after: int,
                    upto: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the cutouts with ``after < id <= upto`` embedded by ``embedder``,
    scored on a worker by the model ``(arrays, meta)`` (:meth:`PCAAnomalyDetector.to_bytes`
    : arrays and JSON, never a pickle of the estimator)."""
    from . import store
    from .detector import PCAAnomalyDetector
    from .parallel import keep_freed_memory

    keep_freed_memory()
    ids, X = store.load_embeddings(_worker_engine(settings.engine_url()), embedder,
                                   between=(after, upto))
    if len(ids) == 0:
        return ids, np.empty(0)
    return ids, PCAAnomalyDetector.from_bytes(*model).anomaly_score(X)


def score_on_cluster(client, settings: Settings, det: PCAAnomalyDetector, embedder: str,
                     ranges: list[tuple[int, int]],
                     step: Callable[[int, str], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of every cutout in the id ``ranges``
    (:func:`reaper_core.store.embedding_ranges`), in id order, each range a task on
    ``client``'s cluster, re-run when its worker dies; the workers reach the database by
    ``settings``, as an ingest's do. ``step(m, where)`` after each range's m scores arrive."""
    import uuid

    from distributed import as_completed

    [model] = client.scatter([det.to_bytes()], broadcast=True)
    run = uuid.uuid4().hex  # task keys of this scoring alone
    futures = {client.submit(score_on_worker, settings, embedder, model, after, upto,
                             key=f"reaper-score-{run}-{after}-{upto}", retries=RETRIES,
                             pure=False): i for i, (after, upto) in enumerate(ranges)}
    parts: list = [None] * len(ranges)
    workers = len(client.scheduler_info().get("workers", {}))
    for fut in as_completed(list(futures)):
        parts[futures[fut]] = fut.result()
        fut.release()
        if step:
            step(len(parts[futures[fut]][0]), f" on {workers} Dask workers")
    ids = [p[0] for p in parts if len(p[0])]
    if not ids:
        return np.empty(0, np.int64), np.empty(0)
    return np.concatenate(ids), np.concatenate([p[1] for p in parts if len(p[0])])


def ingest_on_worker(path: str, settings: Settings, name: str, sha256: str, hdu: int | None,
                     stored_path: str | None) -> FileResult:
    """The whole of one file on a worker that writes to a server database itself: the compute
    stages (:func:`prepare_on_worker`), then one transaction (one engine per worker process).
    The result names the worker in ``stored_on``."""
    from distributed import get_worker


    t0 = time.perf_counter()
    prep = prepare_on_worker(path, settings, name, sha256, hdu)
    if isinstance(prep, FileResult):
        return prep
    try:
        engine = _worker_engine(settings.engine_url())
        result = store_result(engine, prep, settings, stored_path, settings.embedder, t0)
    except Exception as exc:
        return failure(image_name(name, hdu), exc, settings, t0)
    result.stored_on = get_worker().address
    return result


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
) -> list[FileResult]:
    """The per-file part of :func:`reaper_core.ingest.ingest_many` with the compute stages on
    ``client``'s cluster (and the storing too where :func:`workers_store`): results in the
    order of ``todo``; ``on_file(i, n, name)`` is called when file i's task is sent,
    ``on_result(i, n, result)`` when it is stored or failed."""
    from distributed import as_completed

    on_workers = workers_store(engine)
    n = len(todo)
    results: list[FileResult | None] = [None] * n
    futures = {}
    started: dict[int, float] = {}
    for i, it in enumerate(todo):
        display, name = it.display, it.name or it.path.name
        started[i] = time.perf_counter()
        try:
            sha, dup = check_new(engine, it.path, display, started[i], it.hdu)
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
        if on_workers:
            fut = client.submit(ingest_on_worker, str(it.path), settings, name, sha, it.hdu,
                                it.stored_path, key=f"reaper-ingest-{sha}-{i}",
                                retries=RETRIES, pure=False)
        else:
            fut = client.submit(prepare_on_worker, str(it.path), settings, name, sha,
                                it.hdu, key=f"reaper-prepare-{sha}-{i}", retries=RETRIES,
                                pure=False)
        futures[fut] = i
    for fut in as_completed(list(futures)):
        i = futures[fut]
        it = todo[i]
        display = it.display
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
