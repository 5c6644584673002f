"""Scale-out, measured: ingest throughput in one process and on a Dask LocalCluster of 1 and 2
workers, on simulated full-size FFIs at the real sky's density; and the per-file time and
database size as the database grows.

    uv run python benchmarks/scale.py [--files 8] [--size 2048] [--growth 40] [--db-url URL]

Prints tables: FFIs per minute and cutouts per second by way of running (the ingest itself: the
model is fitted once afterwards, in this process, and timed on its own), and, for ``--growth``
512² frames ingested one after the other, the time of each tenth file and the bytes per cutout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import child_result, machine, real_fits_files, rss_mb, table

from reaper_core.config import Settings
from reaper_core.service import Reaper
from reaper_core.simulate import inject_anomalies, simulate_ffi, write_spoc


def frames(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` simulated SPOC FFIs of ``size``² science pixels, different skies."""
    out = []
    for i in range(n):
        sim = simulate_ffi(size=size, seed=seed + i, sector=5, camera=1 + i % 4, ccd=1 + i % 4)
        inject_anomalies(sim, n_per_kind=2, seed=seed + 1000 + i)
        out.append(write_spoc(sim, folder / f"tess-s0005-{1 + i % 4}-{1 + i % 4}_{seed + i}"
                                            "_ffic.fits"))
    return out


def throughput(files: list[Path], work: Path, workers: int | None, db_url: str = "") -> dict:
    """One ingest of ``files`` into a fresh database: a SQLite file in ``work``, or the
    server database ``db_url`` emptied first (there the workers store their own files)."""
    from reaper_core import store

    db = work / f"t{workers}.db"
    if db_url:
        engine = store.make_engine(db_url)
        store.SQLModel.metadata.drop_all(engine)
        engine.dispose()
    reaper = Reaper(Settings(db_url=db_url or f"sqlite:///{db}", load_demo=0))
    t0 = time.perf_counter()
    report = reaper.ingest(files, workers=workers, fit_if_missing=False)
    dt = time.perf_counter() - t0
    n = sum(r.n_cutouts for r in report.results if r.status == "added")
    t0 = time.perf_counter()
    reaper.fit()  # once per batch, in this process: timed on its own
    fit_s = time.perf_counter() - t0
    if db_url:
        from sqlalchemy import text

        with reaper.engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    else:
        size = os.path.getsize(db)
    reaper.engine.dispose()
    return {"run": "one process" if workers is None else f"Dask, {workers} worker"
            + ("s" if workers > 1 else ""), "files": len(files), "cutouts": n, "seconds": dt,
            "FFIs per minute": 60 * len(files) / dt, "cutouts per second": n / dt,
            "bytes per cutout": size / max(n, 1), "then fit + group s": fit_s}


def growth(work: Path, n: int) -> list[dict]:
    folder = work / "growth"
    folder.mkdir()
    db = work / "growth.db"
    reaper = Reaper(Settings(db_url=f"sqlite:///{db}", load_demo=0))
    rows = []
    total = 0
    for i, f in enumerate(frames(folder, n, 512, seed=500), 1):
        t0 = time.perf_counter()
        r = reaper.ingest([f]).results[0]
        dt = time.perf_counter() - t0
        total += r.n_cutouts
        if i == 1 or i % 10 == 0:
            rows.append({"files in the database": i, "cutouts": total, "this file s": dt,
                         "process RSS MB": rss_mb(),
                         "MB": os.path.getsize(db) / 1e6,
                         "bytes per cutout": os.path.getsize(db) / total})
    reaper.engine.dispose()
    return rows


def stored_patches(files: list[Path]) -> list[dict]:
    """The patches as the store keeps them (``store.pack_patches``) against the originals, on
    the real SPOC corner and a simulated FFI: bytes, the largest error in units of each
    patch's sky noise, and what re-embedding the stored patches changes in the ranking."""
    import numpy as np
    from scipy.stats import spearmanr

    from reaper_core import store
    from reaper_core.cutouts import ring_sky
    from reaper_core.detector import PCAAnomalyDetector
    from reaper_core.embedders import get_embedder
    from reaper_core.ingest import prepare

    settings = Settings(db_url="sqlite://")
    emb = get_embedder("local")
    spoc = [p for p in real_fits_files() if p.name.endswith("s_ffic.fits")]
    rows = []
    for label, path in [("real SPOC corner", p) for p in spoc[:1]] + [("simulated FFI",
                                                                         files[0])]:
        prep = prepare(path, settings, emb)
        blobs = store.pack_patches(prep.patches)
        back = np.stack([store.unpack_patch(b, prep.patches.shape[-1]) for b in blobs])
        sigma = ring_sky(np.nan_to_num(prep.patches))[1]
        err = np.nan_to_num(np.abs(back - prep.patches)).reshape(len(back), -1).max(1) / sigma
        det = PCAAnomalyDetector(n_components=5).fit(prep.embeddings)
        a, b = det.anomaly_score(prep.embeddings), det.anomaly_score(emb.embed(back))
        k = max(len(a) // 100, 1)
        top_a, top_b = set(np.argsort(-a)[:k]), set(np.argsort(-b)[:k])
        rows.append({"patches": label, "cutouts": len(back),
                     "bytes per patch (float32 4,096)": float(np.mean([len(x) for x in blobs])),
                     "largest error / sky σ": float(err.max()),
                     "score rank correlation (Spearman)": float(spearmanr(a, b)[0]),
                     "top 1 % shared": len(top_a & top_b) / k,
                     "flagged (mean + 2σ) changed": float(np.mean(det.predict(
                         prep.embeddings) != det.predict(emb.embed(back))))})
    return rows


def synthetic_store(db: Path, n: int, seed: int = 0, batch: int = 200_000) -> None:
    """A SQLite store of ``n`` cutouts (empty patches) whose local-embedder embeddings are
    drawn from those of a simulated FFI at the real density, jittered: the fit's input at
    scale, written straight through the store's bulk insert."""
    import numpy as np

    from reaper_core import store
    from reaper_core.embedders import get_embedder
    from reaper_core.ingest import prepare

    with tempfile.TemporaryDirectory() as d:
        sim = simulate_ffi(size=512, seed=seed)
        path = write_spoc(sim, Path(d) / "tess-s0005-1-1_ffic.fits")
        base = prepare(path, Settings(db_url="sqlite://"), get_embedder("local")).embeddings
    rng = np.random.default_rng(seed)
    engine = store.make_engine(f"sqlite:///{db}")
    with store.session_scope(engine) as s:
        f = store.FitsFile(sha256="0" * 64, name="synthetic", size_bytes=0, ny=1, nx=1,
                           n_cutouts=n, source_method="auto", patch_size=32, layout="spoc")
        s.add(f)
        s.flush()
        fid = f.id
    spread = base.std(axis=0) * 0.05
    for start in range(0, n, batch):
        m = min(batch, n - start)
        X = base[rng.integers(0, len(base), m)] + rng.normal(size=(m, base.shape[1])) * spread
        with store.session_scope(engine) as s:
            ids = list(range(start + 1, start + m + 1))
            store._insert_many(s, "cutout", ["id", "file_id", "x", "y", "patch", "patch_size",
                                            "origin"],
                               [(i, fid, 0.0, 0.0, b"", 32, "segment") for i in ids])
            store._insert_embeddings(s, ids, "local", X.astype(np.float32))
    engine.dispose()


def _fit_child(db: str, queue) -> None:
    import resource

    from reaper_core.models import fit_model
    from reaper_core.store import make_engine

    # The store holds the local embedder's embeddings (and no patches to embed again).
    settings = Settings(db_url=f"sqlite:///{db}", load_demo=0, embedder="local")
    engine = make_engine(settings.db_url)
    t0 = time.perf_counter()
    model = fit_model(engine, settings)
    queue.put({"seconds": time.perf_counter() - t0, "n_train": model.row.n_train,
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def fit_at_scale(work: Path, sizes: list[int]) -> list[dict]:
    """Fit and re-score every cutout of stores of each size, each in a fresh process: time and
    peak memory (the store's own build is not timed)."""
    import multiprocessing as mp

    rows = []
    for n in sizes:
        db = work / f"fit{n}.db"
        t0 = time.perf_counter()
        synthetic_store(db, n)
        built = time.perf_counter() - t0
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_fit_child, args=(str(db), q))
        p.start()
        r = child_result(p, q)
        rows.append({"cutouts": n, "fitted on": r["n_train"], "fit + score all s": r["seconds"],
                     "peak RSS MB": r["peak_mb"], "(store built in s)": built})
        db.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8,
                    help="FFIs per run: 8 keep the one-off start of a cluster (seconds) from "
                         "setting the ratio of two short runs")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--growth", type=int, default=40)
    ap.add_argument("--fit", default="1000000,10000000",
                    help="comma-separated store sizes to fit and re-score ('' for none)")
    ap.add_argument("--only-fit", action="store_true", help="only the fit at scale")
    ap.add_argument("--db-url", default="",
                    help="a PostgreSQL URL to ingest into (emptied before each run) instead "
                         "of SQLite files: there the Dask workers store their own files")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        sizes = [int(v) for v in args.fit.split(",") if v]
        if sizes:
            print(table(fit_at_scale(work, sizes), "Fit (sample of ≤ 250,000) and re-score "
                                                   "every cutout, fresh process"))
        if args.only_fit:
            return
        files = frames(work, args.files, args.size)
        print(table(stored_patches(files), "Patches as stored vs the originals: the same "
                                           "detector scores the re-embedded stored patches"))
        rows = [throughput(files, work, w, args.db_url) for w in (None, 1, 2)]
        one = rows[1]["seconds"]
        for r in rows:
            r["speed-up vs 1 worker"] = one / r["seconds"]
        where = "PostgreSQL" if args.db_url else "SQLite"
        print(table(rows, f"Ingest of {args.files} simulated {args.size}² FFIs at the real "
                          f"density into {where} ({machine()})"))
        if args.growth:
            print(table(growth(work, args.growth), "As the database grows (512² frames)"))


if __name__ == "__main__":
    main()
