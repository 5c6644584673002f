"""What the pages share, cached across reruns: the service, the current model, the ranked
cutout index and the gallery's selection, the scores and the PCA projection. Only caching
lives here; the work is done by the service."""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter

import numpy as np
import streamlit as st

from reaper_app.background import DemoLoad
from reaper_core.config import Settings, load_settings
from reaper_core.models import CurrentModel
from reaper_core.service import Reaper
from reaper_core.views import Filters, RankIndex


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


@st.cache_resource(max_entries=2, show_spinner="Ranking cutouts…")
def _rank_index(_reaper: Reaper, _m: CurrentModel | None, url: str, model_id: int | None,
                version: tuple) -> RankIndex:
    return _reaper.rank_index(_m)


def rank_index(m: CurrentModel | None) -> RankIndex:
    """Every cutout ranked under ``m`` (:meth:`Reaper.rank_index`), cached until cutouts,
    models or scores change: labels do not reload it (shared: do not mutate)."""
    r = reaper()
    return _rank_index(r, m, r.settings.db_url, m.id if m else None, r.data_version(False))


@st.cache_data(max_entries=4, show_spinner=False)
def _totals(url: str, version: tuple) -> dict[str, int]:
    return reaper().totals()


def totals() -> dict[str, int]:
    """Counts of files, cutouts and models (:meth:`Reaper.totals`), cached until cutouts or
    models change: every page's sidebar shows them, and counting a million rows is not free
    on PostgreSQL."""
    r = reaper()
    return _totals(r.settings.db_url, r.data_version(False))


@st.cache_resource(max_entries=2, show_spinner=False)
def _groups(_reaper: Reaper, _m: CurrentModel, url: str, model_id: int, threshold: float,
            version: tuple) -> dict[int, int]:
    return _reaper.groups(_m)


def groups(m: CurrentModel | None) -> dict[int, int]:
    """{cutout id: group} of the flagged cutouts under ``m`` (:meth:`Reaper.groups`; none
    without a model), cached until the data or the threshold change (do not mutate)."""
    if m is None:
        return {}
    r = reaper()
    return _groups(r, m, r.settings.db_url, m.id, m.threshold, r.data_version(False))


@st.cache_resource(max_entries=2, show_spinner=False)
def _group_sizes(_groups: dict[int, int], url: str, model_id: int, threshold: float,
                 version: tuple) -> Counter:
    return Counter(_groups.values())


def group_sizes(m: CurrentModel | None) -> Counter:
    """{group: how many flagged cutouts it holds} of :func:`groups` under ``m``, cached like
    it (do not mutate)."""
    if m is None:
        return Counter()
    r = reaper()
    return _group_sizes(groups(m), r.settings.db_url, m.id, m.threshold, r.data_version(False))


@st.cache_resource(max_entries=2, show_spinner=False)
def _group_reasons(_reaper: Reaper, _m: CurrentModel, url: str, model_id: int,
                   threshold: float, version: tuple) -> dict[int, list[str]]:
    return _reaper.group_reasons(_m)


def group_reasons(m: CurrentModel | None) -> dict[int, list[str]]:
    """{group: what its members share, in plain words} under ``m``
    (:meth:`Reaper.group_reasons`; none without a model), cached like :func:`groups`."""
    if m is None:
        return {}
    r = reaper()
    return _group_reasons(r, m, r.settings.db_url, m.id, m.threshold, r.data_version(False))


@st.cache_resource(max_entries=4, show_spinner=False)
def _selection(_reaper: Reaper, _m: CurrentModel | None, _index: RankIndex, url: str,
               model_id: int | None, threshold: float | None, version: tuple, filters: Filters,
               cutout_ids: tuple[int, ...] | None, per_object: bool) -> dict:
    return _reaper.gallery_selection(_m, _index, filters, cutout_ids=cutout_ids,
                                     per_object=per_object)


def gallery_selection(m: CurrentModel | None, index: RankIndex, filters: Filters,
                      cutout_ids: list[int] | None = None, per_object: bool = True) -> dict:
    """What the gallery shows of ``index`` under ``m`` (:meth:`Reaper.gallery_selection`),
    cached until the data, the threshold or the filters change: turning pages reads only the
    page's rows."""
    r = reaper()
    return _selection(r, m, index, r.settings.db_url, m.id if m else None,
                      m.threshold if m else None, r.data_version(), filters,
                      None if cutout_ids is None else tuple(sorted(cutout_ids)), per_object)


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


def remove_files(names: list[str]) -> tuple[bool, str]:
    """Remove stored files and fit the model anew in a fresh process
    (:meth:`Reaper.remove_files`): (done, what was done or why not, one sentence). What the
    pages remember of a cutout (the open detail, the Discover page's last label) is dropped."""
    from reaper_core.errors import ReaperError

    try:
        said = reaper().remove_files(names, in_subprocess=True)
    except ReaperError as exc:
        return False, str(exc)
    for key in ("detail", "discover_last", "discover_skipped"):
        st.session_state.pop(key, None)
    return True, said


_frozen_at = [0]


def settle_heap() -> None:
    """At the end of a script run that imported modules (the first run, a page that loads
    scikit-learn): collect garbage once and freeze what is left (:func:`gc.freeze`).

    What imports make lives as long as the process; frozen, the collector stops walking it at
    every full collection. With a million cutouts in the store such a walk took 150 ms in the
    middle of a random interaction (a detail 0.15 s → 0.36 s); after freezing, 10–45 ms.
    """
    n = len(sys.modules)
    if n - _frozen_at[0] < 20:  # nothing new imported: the next collections are cheap
        return
    _frozen_at[0] = n
    gc.collect()
    gc.freeze()
