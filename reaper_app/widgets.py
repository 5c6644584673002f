"""Drawing helpers shared by the pages: cutout grids, the sidebar, re-fit and demo loading."""

from __future__ import annotations

import re

import streamlit as st

from reaper_app import state
from reaper_core.config import mask_url
from reaper_core.cutouts import to_png
from reaper_core.demo import DEMO_FILES

_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it as typed: every ASCII punctuation
    character gets a backslash (no links, images, emphasis, HTML, ``:colour[…]`` or icons).
    Use it for every user-supplied string (file names, header values, notes, messages)."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def thumbnails(ids: list[int], stretch: str = "zscale", cmap: str = "gray",
               upscale: int = 3) -> dict[int, bytes]:
    """PNG bytes per cutout id."""
    return {cid: to_png(p, stretch, upscale, cmap)
            for cid, (p, _) in state.reaper().cutouts(ids).items()}


def cutout_grid(ids: list[int], scores: dict[int, float] | None = None, columns: int = 6,
                stretch: str = "zscale", cmap: str = "gray", details: bool = False,
                notes: dict[int, str] | None = None) -> None:
    """Draw cutouts in a grid, captioned with id, score and ``notes``; optional 'details'
    buttons."""
    pngs = thumbnails(ids, stretch, cmap)
    cols = st.columns(columns)
    for i, cid in enumerate(ids):
        with cols[i % columns]:
            if cid in pngs:
                cap = f"#{cid}" + (f" · score {scores[cid]:.3g}" if scores and cid in scores
                                   else "")
                cap += f" · {notes[cid]}" if notes and cid in notes else ""
                st.image(pngs[cid], caption=cap, width="stretch")
                if details and st.button("details", key=f"detail-{cid}"):
                    open_detail(cid)


def refit(n_components: float | None = None, embedder: str | None = None) -> None:
    """Re-fit the model on every cutout behind a progress bar, then rerun the page."""
    with st.status("Re-fitting…", expanded=True) as status:
        bar = st.progress(0.0)
        new = state.reaper().fit(
            n_components, embedder,
            progress=lambda stage, f, msg: bar.progress(min(f, 1.0), text=f"{stage}: {msg}"))
        status.update(label=f"Model #{new.id} fitted: {new.row.n_components} components",
                      state="complete")
    st.rerun()


def ensure_demo() -> None:
    """On a first start (an empty database), load the demo data in the background; while it
    loads, show its progress above the page, which stays usable.

    Safe to interrupt (a stopped server): the next start finds the demo files it already has by
    their SHA-256, adds the rest and fits the model.
    """
    if not st.session_state.get("_demo_checked"):
        st.session_state["_demo_checked"] = True
        try:
            pending = state.reaper().demo_pending()
        except Exception as exc:  # the page has said so in one sentence already
            if not is_failure(exc):
                raise
            pending = False
        if pending:
            state.start_demo()
    job = state.demo_job()
    if job is not None and not st.session_state.get("_demo_shown_done"):
        _demo_progress(job)


@st.fragment(run_every=1.0)
def _demo_progress(job) -> None:
    s = job.state()
    if not s.done:
        st.progress(s.fraction, text=plain(f"Loading the demo data in the background: {s.text}. "
                                           "The pages work meanwhile."))
        return
    st.session_state["_demo_shown_done"] = True
    if s.error:
        st.error(plain(f"The demo data could not be loaded: {s.error}"))
    else:
        st.toast(plain(f"Demo data loaded: {s.summary}"))
    st.rerun(scope="app")


def report_pdf() -> bytes:
    """The run's report as PDF bytes (drawn into a temporary file by the service)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = state.reaper().report(Path(d) / "report.pdf")[0]
        return path.read_bytes()


def demo_description(name: str) -> str | None:
    """What a demo file is, or None for any other file."""
    return DEMO_FILES.get(name)


#: Sky atlases, with URLs for a position (RA, Dec in degrees, ICRS).
SKY_ATLASES = {
    "Aladin": "https://aladin.cds.unistra.fr/AladinLite/?target={ra:.6f}%20{dec:+.6f}&fov=0.3"
              "&survey=CDS%2FP%2FDSS2%2Fcolor",
    "ESASky": "https://sky.esa.int/esasky/?target={ra:.6f}%20{dec:+.6f}&hips=DSS2+color&fov=0.3",
    "SIMBAD": "https://simbad.cds.unistra.fr/simbad/sim-coo?Coord={ra:.6f}%20{dec:+.6f}"
              "&CooFrame=ICRS&Radius=2&Radius.unit=arcmin",
}


def sky_links(ra: float, dec: float) -> None:
    """Buttons that open the position in sky atlases (nothing is fetched until one is
    clicked)."""
    cols = st.columns(len(SKY_ATLASES))
    for col, (name, url) in zip(cols, SKY_ATLASES.items(), strict=True):
        col.link_button(f"{name} ↗", url.format(ra=ra, dec=dec), width="stretch")


def open_detail(cutout_id: int) -> None:
    """Open a cutout's detail, and put its id in the page's URL (a link to share)."""
    st.session_state["detail"] = int(cutout_id)
    st.query_params["cutout"] = str(int(cutout_id))


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the database or the disk (shown as one sentence)."""
    from sqlalchemy.exc import SQLAlchemyError

    from reaper_core.errors import ReaperError

    return isinstance(exc, SQLAlchemyError | OSError | ReaperError)


def failure_text(exc: BaseException) -> str:
    """The one sentence a person sees for a failure of the database or the disk."""
    from reaper_core.errors import describe_failure

    return describe_failure(exc, mask_url(state.settings().db_url)).capitalize()


def sidebar(slot) -> None:
    """Totals, the current model and the database, drawn into ``slot`` (a sidebar placeholder)."""
    r = state.reaper()
    with slot.container():
        st.caption("Anomaly Reaper")
        try:
            t = r.totals()
            m = r.model()
        except Exception as exc:
            if not is_failure(exc):
                raise
            st.write("The database cannot be used now.")
        else:
            st.write(f"**{t['files']}** files · **{t['cutouts']:,}** cutouts")
            st.write(m.summary(short=True) if m else "No model yet.")
        st.caption("Database")
        st.text(mask_url(r.settings.db_url))
