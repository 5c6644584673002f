"""What the pages share, cached across reruns: the service, the current model, the cutout table
and the PCA projection. Only caching lives here; the work is done by the service."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st

from reaper_app.background import DemoLoad
from reaper_core.config import Settings, load_settings
from reaper_core.models import CurrentModel
from reaper_core.service import Reaper


def settings() -> Settings:
    """The settings, read anew each run (config file and environment)."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def _reaper(key: tuple) -> Reaper:
    return Reaper(Settings(**dict(key)))


def reaper() -> Reaper:
    """The service for the current settings (one per settings, shared by every session)."""
    return _reaper(tuple(sorted(settings().to_dict().items())))


def model() -> CurrentModel | None:
    """The current model, or None; its row (and threshold) is read anew every run."""
    return reaper().model()


def require_model() -> CurrentModel:
    """The current model, or a hint and a stop when there is none yet."""
    m = model()
    if m is None:
        st.info("No model yet: upload files or load the demo data on the home page.")
        st.stop()
    return m


@st.cache_resource(max_entries=3, show_spinner="Loading cutouts…")
def _table(_reaper: Reaper, _m: CurrentModel | None, url: str, model_id: int | None,
           version: tuple) -> pd.DataFrame:
    return _reaper.cutout_table(_m)


def table(m: CurrentModel | None) -> pd.DataFrame:
    """The cutout table under ``m``; cached until the data change (shared: do not mutate)."""
    r = reaper()
    return _table(r, m, r.settings.db_url, m.id if m else None, r.data_version())


@st.cache_data(max_entries=4, show_spinner=False)
def _overview(url: str, model_id: int | None, threshold: float | None,
              version: tuple) -> dict:
    return reaper().overview(model())


def overview(m: CurrentModel | None) -> dict:
    """The home page's counts under ``m`` (:meth:`Reaper.overview`), cached until the data or
    the threshold change."""
    r = reaper()
    return _overview(r.settings.db_url, m.id if m else None, m.threshold if m else None,
                     r.data_version())


@st.cache_resource(max_entries=2, show_spinner="Loading scores…")
def _scores(_reaper: Reaper, _m: CurrentModel, url: str, model_id: int,
            version: tuple) -> np.ndarray:
    return _reaper.scores(_m)


def scores(m: CurrentModel) -> np.ndarray:
    """Every score under ``m`` (shape (n,)); cached until the data change (do not mutate)."""
    r = reaper()
    return _scores(r, m, r.settings.db_url, m.id, r.data_version())


@st.cache_resource(max_entries=2, show_spinner="Projecting embeddings…")
def _explore(_reaper: Reaper, _m: CurrentModel, url: str, model_id: int, threshold: float,
             version: tuple) -> dict:
    return _reaper.explore_points(_m)


def explore_points(m: CurrentModel) -> dict:
    """The Explore scatter's points under ``m`` (:meth:`Reaper.explore_points`); cached until
    the data or the threshold change (shared: do not mutate)."""
    r = reaper()
    return _explore(r, m, r.settings.db_url, m.id, m.threshold, r.data_version())


@st.cache_resource(max_entries=8, show_spinner=False)
def _thumbnails(_reaper: Reaper, url: str, ids: tuple[int, ...], stretch: str, cmap: str,
                upscale: int) -> dict[int, bytes]:
    from reaper_core.cutouts import to_png

    return {cid: to_png(p, stretch, upscale, cmap)
            for cid, (p, _) in _reaper.cutouts(list(ids)).items()}


def thumbnails(ids: list[int], stretch: str = "zscale", cmap: str = "gray",
               upscale: int = 3) -> dict[int, bytes]:
    """PNG bytes per cutout id (each pixel ``upscale``² screen pixels), kept for the next
    run with the same ids and display."""
    r = reaper()
    return _thumbnails(r, r.settings.db_url, tuple(int(i) for i in ids), stretch, cmap,
                       upscale)


def flagged(tbl: pd.DataFrame, m: CurrentModel | None) -> np.ndarray:
    """Anomaly flags of the table's rows under ``m`` (none without a model)."""
    return m.flags(tbl["score"].to_numpy(float)) if m else np.zeros(len(tbl), bool)


_JOBS_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False)
def _jobs(url: str) -> dict[str, DemoLoad]:
    return {}


def demo_job() -> DemoLoad | None:
    """The demo load of this database (running or finished), or None when none was started
    since the server started."""
    return _jobs(reaper().settings.db_url).get("demo")


def start_demo() -> DemoLoad:
    """Start loading the demo data in the background, unless a load is already running."""
    with _JOBS_LOCK:
        jobs = _jobs(reaper().settings.db_url)
        job = jobs.get("demo")
        if job is None or job.state().done:
            job = jobs["demo"] = DemoLoad(reaper()).start()
        return job
