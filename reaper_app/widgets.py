"""Drawing helpers shared by the pages: cutout grids, the sidebar, re-fit and demo loading."""

from __future__ import annotations

import re

import streamlit as st

from reaper_app import state
from reaper_core.config import mask_url
from reaper_core.demo import DEMO_FILES
from reaper_core.words import count

_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it as typed: every ASCII punctuation
    character gets a backslash (no links, images, emphasis, HTML, ``:colour[…]`` or icons).
    Use it for every user-supplied string (file names, header values, notes, messages)."""
    return _MARKDOWN.sub(r"\\\1", str(text))


_HOVER_JS = """
<script>
const thumbs = %s;
const doc = window.parent.document;
function box() {
  let img = doc.getElementById("reaper-hover-thumb");
  if (!img) {
    img = doc.createElement("img");
    img.id = "reaper-hover-thumb";
    img.alt = "cutout under the pointer";
    Object.assign(img.style, {position: "fixed", display: "none", zIndex: 1000,
      width: "128px", height: "128px", imageRendering: "pixelated", pointerEvents: "none",
      border: "2px solid #ef553b", background: "#000"});
    doc.body.appendChild(img);
  }
  return img;
}
function attach() {
  for (const gd of doc.querySelectorAll(".js-plotly-plot")) {
    if (gd.__reaperHover || !gd.on) continue;
    gd.__reaperHover = true;
    gd.on("plotly_hover", (e) => {
      const p = e.points[0];
      const id = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      const img = box();
      if (!(id in thumbs)) { img.style.display = "none"; return; }
      img.src = "data:image/png;base64," + thumbs[id];
      img.style.left = (e.event.clientX + 24) + "px";
      img.style.top = Math.max(e.event.clientY - 150, 0) + "px";
      img.style.display = "block";
    });
    gd.on("plotly_unhover", () => { box().style.display = "none"; });
  }
}
setInterval(attach, 500);
</script>
"""


def hover_thumbnails(pngs: dict[int, bytes]) -> None:
    """Show a cutout's thumbnail beside the pointer while it hovers the cutout's point in the
    page's Plotly charts (points carry the cutout id first in ``customdata``). Plotly's hover
    labels cannot hold images, so a small script in an iframe of no content adds one (cutout
    ids and PNG bytes only: nothing a user typed)."""
    import base64
    import json

    data = {int(k): base64.b64encode(v).decode() for k, v in pngs.items()}
    st.iframe(_HOVER_JS % json.dumps(data), height="content")


def tile_caption(cid: int, score: float | None = None, file: str | None = None,
                 n_cutouts: int | None = None, label: str | None = None) -> str:
    """A tile's caption in words: "cutout #12 · score 8.1 · file.fits · one of 4 cutouts of
    its object · labelled normal" (only the parts known)."""
    parts = [f"cutout #{cid}"]
    if score is not None and score == score:
        parts.append(f"score {score:.3g}")
    if file:
        parts.append(str(file) if len(str(file)) <= 28 else str(file)[:25] + "…")
    if n_cutouts and n_cutouts > 1:
        parts.append(f"best of {n_cutouts} cutouts of its object")
    if label:
        parts.append(f"labelled {label}")
    return " · ".join(parts)


def table_height(n_rows: int, max_rows: int) -> int | str:
    """A table's height: just its rows ("auto") up to ``max_rows``, else that many rows' worth
    of pixels with a scroll bar — no blank rows under a short table."""
    return "auto" if n_rows <= max_rows else 38 + 35 * max_rows


def cutout_grid(ids: list[int], captions: dict[int, str] | None = None, columns: int = 6,
                stretch: str = "zscale", cmap: str = "gray", details: bool = True,
                label_menu: bool = False, key: str = "grid") -> None:
    """Draw cutouts in a grid, each with its caption (see :func:`tile_caption`, shown as
    text), a "details" button that opens it and, with ``label_menu``, a menu to label it."""
    from reaper_core.labels import LABELS

    pngs = state.thumbnails(ids, stretch, cmap)
    cols = st.columns(columns)
    for i, cid in enumerate(ids):
        if cid not in pngs:
            continue
        with cols[i % columns]:
            # PNG as made: "auto" re-encodes an image without alpha as JPEG on every run.
            st.image(pngs[cid], width="stretch", output_format="PNG")
            st.caption(plain((captions or {}).get(cid, f"cutout #{cid}")))
            # One above the other, each the tile's width: side by side, a tile of a six-wide
            # grid cut their words to "det…" and "la…".
            if details and st.button("details", key=f"{key}-detail-{cid}", width="stretch"):
                open_detail(cid)
            if label_menu:
                with st.popover("label", key=f"{key}-label-{cid}", width="stretch"):
                    for lab in [*LABELS, None]:
                        if st.button(lab or "remove the label", key=f"{key}-{cid}-{lab}"):
                            state.reaper().label([cid], lab)
                            st.toast(f"cutout #{cid}: " + (f"labelled {lab}" if lab
                                                            else "label removed"))
                            st.rerun()


def refit(n_components: float | None = None, embedder: str | None = None) -> None:
    """Re-fit the model on every cutout behind a progress bar, in a process of its own (the
    server never holds a fit's memory), then rerun the page."""
    with st.status("Re-fitting…", expanded=True) as status:
        bar = st.progress(0.0)
        new = state.reaper().fit(
            n_components, embedder, in_subprocess=True,
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
    """Open a cutout's detail in the gallery, with its id in the page's URL (a link to
    share); from another page, go to the gallery."""
    st.session_state["detail"] = int(cutout_id)
    if st.session_state.get("_page") != "gallery":
        from reaper_app.main import pages

        st.switch_page(pages()["gallery"], query_params={"cutout": str(int(cutout_id))})
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
            t = state.totals()
            m = r.model()
        except Exception as exc:
            if not is_failure(exc):
                raise
            st.write("The database cannot be used now.")
        else:
            st.write(f"**{count(t['files'], 'file')}** · **{count(t['cutouts'], 'cutout')}**")
            st.write(m.summary(short=True) if m else "No model yet.")
        st.caption("Database")
        st.text(mask_url(r.settings.db_url))
