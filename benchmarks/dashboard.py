"""Dashboard server time with 100,000 cutouts in the database.

Builds a SQLite database of 100,000 real cutouts (a simulated FFI's cutouts, embeddings and
scores, stored again under 50 different files), then drives the real pages with
streamlit.testing.v1.AppTest and times the script runs: first render of each page, a slider
move, and a gallery filter (targets ≤ 300 ms each for the slider and the filter).

    uv run python benchmarks/dashboard.py [--cutouts 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, rss_mb, table  # noqa: E402
from reaper_core import store  # noqa: E402
from reaper_core.config import Settings  # noqa: E402
from reaper_core.embedders import get_embedder  # noqa: E402
from reaper_core.ingest import prepare, store_prepared  # noqa: E402
from reaper_core.service import Reaper  # noqa: E402
from reaper_core.simulate import inject_anomalies, simulate_ffi, write_spoc  # noqa: E402


def build(url: str, n_target: int) -> int:
    reaper = Reaper(Settings(db_url=url))
    if reaper.totals()["cutouts"] >= n_target and reaper.model() is not None:
        # Built before (--db-url): reused as it was built, without an earlier run's labels.
        labelled = store.all_labels(reaper.engine)[0]
        if len(labelled):
            reaper.label(labelled.tolist(), None)
            reaper.fit()
        return reaper.totals()["cutouts"]
    with tempfile.TemporaryDirectory() as d:
        sim = simulate_ffi(seed=0)
        inject_anomalies(sim, 3, seed=1)
        path = write_spoc(sim, Path(d) / "base.fits")
        prep = prepare(path, reaper.settings, get_embedder("local"))
    n = len(prep.patches)
    copies = int(np.ceil(n_target / n))
    for i in range(copies):
        prep.sha256 = f"{i:064x}"
        prep.name = f"tess-s{40 + i % 5:04d}-{1 + i % 4}-{1 + (i // 4) % 4}-copy{i}_ffic.fits"
        prep.image.sector, prep.image.camera, prep.image.ccd = 40 + i % 5, 1 + i % 4, 1 + (
            i // 4) % 4
        store_prepared(reaper.engine, prep, reaper.settings, None)
    reaper.fit()
    return reaper.totals()["cutouts"]


def timed_run(at, fn=None, repeat: int = 1) -> list[float]:
    out = []
    for _ in range(repeat):
        if fn:
            fn(at)
        t0 = time.perf_counter()
        at.run()
        out.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cutouts", type=int, default=100_000)
    ap.add_argument("--db-url", default="",
                    help="database to build (or reuse, when it holds enough cutouts): e.g. a "
                         "PostgreSQL URL; default a new SQLite file")
    args = ap.parse_args()
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    print(f"# Dashboard benchmark — {machine()}\n")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        url = args.db_url or f"sqlite:///{d}/dash.db"
        n = build(url, args.cutouts)
        print(f"Built a database of {n:,} cutouts in {time.perf_counter() - t0:.0f} s "
              f"({url.split(':', 1)[0]}).\n")
        os.environ.update(ANOMALY_REAPER_DB_URL=url, ANOMALY_REAPER_LOAD_DEMO="0",
                          ANOMALY_REAPER_HOME=d)
        rows = []
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "reaper_app" / "main.py"), default_timeout=600)
        rows.append({"action": "Home, first render (counts aggregated by the database)",
                     "ms": 1e3 * timed_run(at)[0]})
        rows.append({"action": "Home, warm rerun", "ms": 1e3 * timed_run(at)[0]})
        at.switch_page("app_pages/threshold.py")
        rows.append({"action": "Threshold page, first render", "ms": 1e3 * timed_run(at)[0]})
        values = iter(np.linspace(2.1, 6.0, 40))
        moves = timed_run(at, lambda a: a.slider[0].set_value(float(next(values))), 20)
        rows.append({"action": "slider move (median of 20)", "ms": 1e3 * statistics.median(moves)})
        rows.append({"action": "slider move (max of 20)", "ms": 1e3 * max(moves)})
        at.switch_page("app_pages/explore.py")
        rows.append({"action": "Explore, first render (every anomaly, a stated sample of the "
                               "rest)",
                     "ms": 1e3 * timed_run(at)[0]})
        rows.append({"action": "Explore, warm rerun", "ms": 1e3 * timed_run(at)[0]})
        at.switch_page("app_pages/gallery.py")
        rows.append({"action": "Gallery, first render", "ms": 1e3 * timed_run(at)[0]})
        words = iter(["copy1", "copy2", "copy3", "s0041", "copy4", ""] * 4)
        filt = timed_run(at, lambda a: a.text_input(key="g_file").input(next(words)), 12)
        rows.append({"action": "gallery filter, file name (median of 12)",
                     "ms": 1e3 * statistics.median(filt)})
        sect = iter([[40], [41], [42], [], [43], [44]] * 2)
        filt2 = timed_run(at, lambda a: a.multiselect(key="g_sector").set_value(next(sect)), 12)
        rows.append({"action": "gallery filter, sector (median of 12)",
                     "ms": 1e3 * statistics.median(filt2)})
        print("gallery filter runs, ms:", [round(1e3 * v) for v in filt + filt2])
        rows.append({"action": "gallery filter (max of all 24)",
                     "ms": 1e3 * max(filt + filt2)})
        at.checkbox(key="g_only").uncheck()
        rows.append({"action": "gallery, every cutout (Anomalies only unticked), one per object",
                     "ms": 1e3 * timed_run(at)[0]})
        pages = iter(range(2, 40))
        turns = timed_run(at, lambda a: a.number_input(key="g_page").set_value(next(pages)), 6)
        rows.append({"action": "a gallery page (max of 6)", "ms": 1e3 * max(turns)})
        at.checkbox(key="g_only").check()
        at.number_input(key="g_page").set_value(1)
        timed_run(at)
        first = next(b.key for b in at.button if b.key and b.key.startswith("page-detail-"))
        rows.append({"action": "a detail (max of 3 opened)", "ms": 1e3 * max(timed_run(
            at, lambda a: a.button(key=first).click(), 3))})
        radio = next(r for r in at.radio if r.label == "Label")
        radio.set_value("interesting")
        rows.append({"action": "label from the detail, and the page again",
                     "ms": 1e3 * timed_run(at, lambda a: next(
                         b for b in a.button if b.label == "Save label").click())[0]})
        rows.append({"action": "(this process's memory after the runs, the pages' caches "
                               "included, MB)", "ms": rss_mb()})
        print(table(rows, f"Server time of one script run with {n:,} cutouts "
                          "(target ≤ 300 ms for a slider move and a gallery filter)"))
        # The "Re-fit now" button: a fit on every cutout, with more and more labelled normal.
        reaper = Reaper(Settings(db_url=url))
        ranked = reaper.ranked(reaper.require_model())["cutout_id"].astype(int).tolist()
        fits = []
        for k in (0, 1_000, 5_000):
            reaper.label(ranked[:k], "normal")
            t0 = time.perf_counter()
            model = reaper.fit()
            fits.append({"cutouts labelled normal": model.n_normal,
                         "re-fit and re-score, s": time.perf_counter() - t0})
        print(table(fits, f"Re-fit on every one of {n:,} cutouts"))


if __name__ == "__main__":
    main()
