"""Streamlit glue shared by the pages: cached engine, model and cutout table, thumbnails.

Only caching and drawing helpers live here; every computation is in ``reaper_core``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from sqlmodel import select

from reaper_core import pipeline, store, views
from reaper_core.config import Settings, load_settings
from reaper_core.cutouts import to_png
from reaper_core.demo import DEMO_FILES, write_demo_files


def settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner=False)
def _engine(url: str):
    return store.make_engine(url)


def engine():
    return _engine(settings().db_url)


@st.cache_resource(max_entries=4, show_spinner=False)
def _detector(url: str, model_id: int):
    with store.Session(_engine(url)) as s:
        row = s.get(store.DetectorModel, model_id)
    return pipeline.load_detector(row)


def model():
    """(model row, detector) of the current model, or None. The row is re-read every run."""
    with store.Session(engine()) as s:
        row = store.current_model(s)
    if row is None:
        return None
    return row, _detector(settings().db_url, row.id)


def require_model():
    """(model row, detector), or a hint and a stop when there is no model yet."""
    m = model()
    if m is None:
        st.info("No model yet: upload files or load the demo data on the home page.")
        st.stop()
    return m


@st.cache_resource(max_entries=3, show_spinner="Loading cutouts…")
def _table(url: str, model_id: int | None, version: tuple) -> pd.DataFrame:
    return store.cutout_table(_engine(url), model_id)


def table(model_id: int | None) -> pd.DataFrame:
    """The cutout table for a model; cached until the data change (shared, do not mutate)."""
    eng = engine()
    return _table(settings().db_url, model_id, views.data_version(eng))


@st.cache_resource(max_entries=2, show_spinner="Projecting embeddings…")
def _pca(url: str, model_id: int, version: tuple):
    with store.Session(_engine(url)) as s:
        row = s.get(store.DetectorModel, model_id)
    return views.pca_coordinates(_engine(url), row, _detector(url, model_id))


def pca(model_id: int):
    return _pca(settings().db_url, model_id, views.data_version(engine()))


def refit(s: Settings, n_components: float | None = None) -> None:
    """Re-fit the model on every cutout behind a progress bar, then rerun the page."""
    with st.status("Re-fitting…", expanded=True) as status:
        bar = st.progress(0.0)
        new = pipeline.fit_model(
            engine(), s, n_components=n_components,
            progress=lambda stage, f, msg: bar.progress(min(f, 1.0), text=f"{stage}: {msg}"))
        status.update(label=f"Model #{new.id} fitted: {new.n_components} components",
                      state="complete")
    st.rerun()


def thumbnails(ids: list[int], stretch: str = "asinh", cmap: str = "gray",
               upscale: int = 3) -> dict[int, bytes]:
    """PNG bytes per cutout id."""
    return {cid: to_png(p, stretch, upscale, cmap) for cid, (p, _) in
            store.get_cutouts(engine(), ids).items()}


def cutout_grid(ids: list[int], scores: dict[int, float] | None = None, columns: int = 6,
                stretch: str = "asinh", cmap: str = "gray", details: bool = False,
                notes: dict[int, str] | None = None) -> None:
    """Draw cutouts in a grid, captioned with id, score and ``notes``; optional 'details'
    buttons."""
    pngs = thumbnails(ids, stretch, cmap)
    cols = st.columns(columns)
    for i, cid in enumerate(ids):
        with cols[i % columns]:
            if cid in pngs:
                cap = f"#{cid}" + (f" · {scores[cid]:.3g}" if scores and cid in scores else "")
                cap += f" · {notes[cid]}" if notes and cid in notes else ""
                st.image(pngs[cid], caption=cap, width="stretch")
                if details and st.button("details", key=f"detail-{cid}"):
                    st.session_state["detail"] = cid


def ensure_demo() -> None:
    """Load the demo data the first time the app starts on an empty database.

    Safe to interrupt (a closed browser tab stops the script): the next start finds the demo
    files it already has by their SHA-256, adds the rest and fits the model.
    """
    s = settings()
    if not s.load_demo or st.session_state.get("_demo_checked"):
        return
    eng = engine()
    with store.Session(eng) as sess:
        names = set(sess.exec(select(store.FitsFile.name)).all())
    has_model = model() is not None
    if (not names or names <= set(DEMO_FILES)) and not (names >= set(DEMO_FILES) and has_model):
        load_demo(status_label="First start: loading the demo data set…")
    st.session_state["_demo_checked"] = True


def load_demo(status_label: str = "Loading the demo data set…") -> pipeline.IngestReport:
    s = settings()
    with st.status(status_label, expanded=True) as status:
        st.write("Writing demo files (Hubble Deep Field, simulated TESS frames)…")
        files = write_demo_files(Path(s.uploads_dir) / "demo")
        bar = st.progress(0.0)
        report = pipeline.ingest_paths(
            engine(), files, s,
            on_file=lambda i, n, name: bar.progress(i / n, text=f"ingesting {name}"))
        bar.progress(1.0, text="done")
        status.update(label=f"Demo data loaded: {report.count('added')} files", state="complete")
    return report


def demo_description(name: str) -> str | None:
    return DEMO_FILES.get(name)


def sidebar(slot) -> None:
    """Totals, the current model and the database, drawn into ``slot`` (a sidebar placeholder)."""
    s = settings()
    with slot.container():
        st.caption("Anomaly Reaper")
        t = store.totals(engine())
        st.write(f"**{t['files']}** files · **{t['cutouts']:,}** cutouts")
        m = model()
        if m:
            row = m[0]
            st.write(f"Model #{row.id}: {row.embedder}, {row.n_components} components, "
                     f"threshold {row.threshold:.3g} ({row.threshold_mode} "
                     f"{row.threshold_value:g})")
        else:
            st.write("No model yet.")
        db = s.db_url.split("@")[-1] if "@" in s.db_url else s.db_url
        st.caption(f"Database: {db}")


def flagged_for(tbl: pd.DataFrame, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return np.zeros(len(tbl), bool)
    return views.flags(tbl["score"].to_numpy(dtype=float), threshold)
