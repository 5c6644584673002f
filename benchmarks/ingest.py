"""Ingest speed: embedders, one full FFI end to end, peak memory, original design, re-threshold.

    uv run python benchmarks/ingest.py            # full run (~2 minutes on 2 cores)
    uv run python benchmarks/ingest.py --quick    # smaller, for a smoke test
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import child_result, machine, real_fits_files, table
from reaper_core.config import Settings
from reaper_core.cutouts import extract_cutouts
from reaper_core.embedders import get_embedder
from reaper_core.fits_reader import read_fits
from reaper_core.service import Reaper
from reaper_core.simulate import inject_anomalies, simulate_ffi, write_spoc, write_tica
from reaper_core.sources import find_sources
from reaper_core.thresholds import flags, threshold_from_scores


def _ingest_child(path: str, db: str, queue) -> None:
    """Ingest one file into an empty database in a fresh process; report times and peak RSS."""
    # A running app has done a file already: the stages' imports and first calls happen
    # before the clock (a small frame ingested into a database of its own: read, cut,
    # embedded, stored, the first model fitted).
    warm = simulate_ffi(size=256, seed=1, n_saturated=0)
    warm_path = Path(db).with_suffix(".warm.fits")
    write_spoc(warm, warm_path)
    Reaper(Settings(db_url=f"sqlite:///{Path(db).with_suffix('.warm.db')}")).ingest([warm_path])

    reaper = Reaper(Settings(db_url=f"sqlite:///{db}"))
    reaper.totals()  # the tables exist before the clock starts
    stages: dict[str, float] = {}
    last = [time.perf_counter(), "read"]

    def progress(stage, fraction, message):
        now = time.perf_counter()
        if stage != last[1]:
            stages[last[1]] = stages.get(last[1], 0) + now - last[0]
            last[:] = [now, stage]

    t0 = time.perf_counter()
    report = reaper.ingest([path], progress=progress)
    total = time.perf_counter() - t0
    stages[last[1]] = stages.get(last[1], 0) + time.perf_counter() - last[0]
    # A file of several images (the HST file's three bands) has a result for each.
    results = report.results
    statuses = sorted({r.status for r in results})
    anomalies = [r.n_anomalies for r in results if r.n_anomalies is not None]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"status": "/".join(statuses) + (f" ({len(results)} images)"
                                               if len(results) > 1 else ""),
               "message": results[0].message, "objects": sum(r.n_cutouts for r in results),
               "anomalies": sum(anomalies) if anomalies else None, "seconds": total,
               "stages": stages, "peak_mb": peak_mb})


def ingest_in_child(path: Path) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        p = ctx.Process(target=_ingest_child, args=(str(path), f"{d}/b.db", q))
        p.start()
        return child_result(p, q)


def original_design_seconds(image: np.ndarray, xs, ys, n: int) -> float:
    """Per-object time of the original preprocessing (scikit-image), seconds."""
    from skimage.exposure import equalize_adapthist
    from skimage.restoration import denoise_bilateral
    from skimage.transform import resize

    times = []
    for x, y in list(zip(xs, ys, strict=True))[:n]:
        t0 = time.perf_counter()
        patch = extract_cutouts(image, np.array([x]), np.array([y]), 512)[0]
        p = np.nan_to_num(patch - np.nanmin(patch))
        p = np.sqrt(p / (p.max() or 1))
        p = denoise_bilateral(p, sigma_spatial=15)
        p = equalize_adapthist(p)
        resize(p, (1024, 1024), order=3)
        times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--original-n", type=int, default=2)
    args = ap.parse_args()
    size = 1024 if args.quick else 2048
    print(f"# Ingest benchmark — {machine()}\n")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sim = simulate_ffi(size=size, seed=0)
        inject_anomalies(sim, n_per_kind=3, seed=1)
        spoc = write_spoc(sim, d / "tess-sim-s0042-1-1_ffic.fits")
        tica = write_tica(sim, d / "tess-sim-s0042-1-1_tica.fits")

        # 1. Embedders on the frame's own cutouts.
        img = read_fits(spoc)
        src = find_sources(img)
        patches = extract_cutouts(img.data, src.x, src.y, 32, img.valid)
        rows = []
        for name in ("stats", "hog", "local", "local+core"):
            emb = get_embedder(name)
            emb.embed(patches[:64])
            t0 = time.perf_counter()
            X = emb.embed(patches)
            dt = time.perf_counter() - t0
            rows.append({"embedder": name, "patches": len(patches),
                         "patches/s": len(patches) / dt, "dim": X.shape[1]})
        rows.append(vertex_row(patches[:200]))
        print(table(rows, "Embedders (32×32 patches of a simulated FFI, one process, a "
                          "thread per core)"))

        # 2. Full FFI end to end (fresh process, empty database, first model fit included).
        rows = []
        files = [("simulated SPOC", spoc), ("simulated TICA", tica)]
        files += [(f"real: {p.name}", p) for p in real_fits_files()]
        ours_per_object = None
        for label, path in files:
            # The simulated frames three times (each in a fresh process): the median run's
            # row, and the range (this machine's timings vary by ±20 % from run to run).
            runs = sorted((ingest_in_child(path) for _ in range(3 if "simulated" in label
                                                                else 1)),
                          key=lambda r: r["seconds"])
            r = runs[len(runs) // 2]
            st = r["stages"]
            rows.append({"file": label, "status": r["status"], "objects": r["objects"],
                         "anomalies": r["anomalies"], "seconds": r["seconds"],
                         "range s": (f"{runs[0]['seconds']:.2f}–{runs[-1]['seconds']:.2f}"
                                     if len(runs) > 1 else ""),
                         "cutouts/s": r["objects"] / r["seconds"] if r["seconds"] else 0,
                         "read+sources s": st.get("read", 0) + st.get("sources", 0),
                         "star fit s": st.get("stars", 0),
                         "cut+pack+embed s": st.get("cutouts", 0) + st.get("embed", 0),
                         "store s": st.get("store", 0),
                         "fit+score s": st.get("fit", 0) + st.get("score", 0),
                         "peak RSS MB": r["peak_mb"]})
            if ours_per_object is None and r["objects"]:
                ours_per_object = r["seconds"] / r["objects"]
        print(table(rows, f"One {size}×{size} FFI end to end, first model fit included "
                          "(target at the real density: ≤ 5 s, ≥ 5,000 cutouts/s; a simulated "
                          "frame's row is the median of three runs; star fit: "
                          "what is left of it once sources are found; patches are cut, packed "
                          "for the store and embedded a chunk at a time)"))

        # 3. The original design's per-object preprocessing on the same file.
        orig = original_design_seconds(img.data, src.x, src.y, args.original_n)
        print(table([{
            "method": "original: 512² cutout → sqrt → bilateral σ=15 → CLAHE → 1024² bicubic",
            "s/object": orig, "objects/s": 1 / orig},
            {"method": "anomaly-reaper ingest (everything, per object)",
             "s/object": ours_per_object, "objects/s": 1 / ours_per_object},
        ], "Original design on the same file (target ≥ 100× throughput)"))
        print(f"Throughput ratio: **{orig / ours_per_object:,.0f}×** "
              f"(original preprocessing alone vs our whole ingest)\n")

    # 4. Re-thresholding 100,000 scored patches.
    rng = np.random.default_rng(0)
    scores = rng.lognormal(-2, 0.5, 100_000)
    train = scores[:20_000]
    t = []
    for k in np.linspace(1, 5, 41):
        t0 = time.perf_counter()
        thr = threshold_from_scores(train, "sigma", float(k))
        flagged = flags(scores, thr)
        int(flagged.sum())
        t.append(time.perf_counter() - t0)
    print(table([{"cutouts": 100_000, "median ms": 1e3 * float(np.median(t)),
                  "max ms": 1e3 * float(np.max(t))}],
                "Re-threshold 100,000 scores (target ≤ 50 ms)"))


def vertex_row(patches: np.ndarray) -> dict:
    """Vertex backend against the loopback fake (client overhead only, not the service)."""
    from google.auth.credentials import AnonymousCredentials

    from reaper_core.embedders.vertex import VertexEmbedder
    from tests.fake_vertex import FakeVertex

    with FakeVertex() as fake, tempfile.TemporaryDirectory() as d:
        emb = VertexEmbedder("bench", api_endpoint=fake.url, credentials=AnonymousCredentials(),
                             dimension=1408, requests_per_minute=0, concurrency=4, cache_dir=d)
        emb.embed(patches[:4])
        t0 = time.perf_counter()
        emb.embed(patches[4:])
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        emb.embed(patches[4:])
        cached = time.perf_counter() - t1
    return {"embedder": f"vertex (loopback fake; cached {(len(patches) - 4) / cached:,.0f}/s)",
            "patches": len(patches) - 4, "patches/s": (len(patches) - 4) / dt, "dim": 1408}


if __name__ == "__main__":
    main()
