"""Upload: drop FITS files, watch each one ingested.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Upload FITS files")

import pandas as pd

from reaper_app import state, widgets
from reaper_core.progress import overall_fraction

st.write("Drop TESS FFIs (SPOC or TICA), TESScut cubes or any FITS image: `.fits`, `.fit`, "
         "`.fts`, `.fz`, `.fits.gz`, `.fits.bz2`. Each file is stored, cut, embedded and "
         "scored; a bad file is reported and the others go on.")

done = st.session_state.setdefault("upload_done", {})
choice = st.selectbox("Image HDU", ["automatic", *range(10)], key="upload_hdu",
                      format_func=lambda v: "automatic: a TESScut cube's pixels, else the "
                                            "largest 2-D image" if v == "automatic"
                      else f"HDU {v}",
                      help="Which HDU of each file holds the image (0 is the primary HDU). "
                           "Automatic: a TESScut cube's pixels, else the largest 2-D image "
                           "(each of them, stored as FILE[N], when a file holds several of "
                           "the sky: a mosaic's CCDs, a field's bands), else a 3-D image's "
                           "planes (their per-pixel median).")
uploads = st.file_uploader("FITS files", accept_multiple_files=True, key="uploader",
                           type=["fits", "fit", "fts", "fz", "gz", "bz2"])

new = [u for u in (uploads or []) if u.file_id not in done]
if new:
    overall = st.progress(0.0, text=f"0 of {len(new)} files")
    box: dict = {}

    def on_file(i: int, n: int, name: str) -> None:
        # Expander label as plain text: a file name is never rendered as Markdown.
        box["status"] = st.status(widgets.plain(name), expanded=False)
        box["bar"] = box["status"].progress(0.0)

    def progress(stage: str, fraction: float, message: str) -> None:
        done_ = overall_fraction(stage, fraction)
        if "bar" in box and done_ is not None:
            box["bar"].progress(done_, text=f"{stage}: {message}")

    def on_result(i: int, n: int, result) -> None:
        state_ = {"added": "complete", "duplicate": "complete", "error": "error"}[result.status]
        if "status" in box:
            box["status"].update(label=f"{widgets.plain(result.name)}: {result.status}",
                                 state=state_)
        overall.progress((i + 1) / n, text=f"{i + 1} of {n} done")

    with st.spinner("Ingesting…"):
        report = state.reaper().ingest_uploads([(u.name, u.getvalue()) for u in new],
                                               progress=progress, on_file=on_file,
                                               on_result=on_result,
                                               hdu=None if choice == "automatic" else choice)
    for k, r in zip(report.inputs, report.results, strict=True):
        done.setdefault(new[k].file_id, []).append(r)
    if report.fitted:  # said until the next upload
        st.session_state["upload_fitted"] = report.refit_note
    else:
        st.session_state.pop("upload_fitted", None)

results = [r for each in done.values() for r in each]
if results:
    st.subheader("Results")
    for r in results:
        if r.status == "added":
            st.success(f"**{widgets.plain(r.name)}**: {widgets.plain(r.message)}, "
                       f"{r.n_anomalies if r.n_anomalies is not None else '?'} anomalies "
                       f"({r.seconds:.1f} s)")
        elif r.status == "duplicate":
            st.info(f"**{widgets.plain(r.name)}**: duplicate — {widgets.plain(r.message)}")
        else:
            st.error(widgets.plain(r.message))
        for note in r.notes:
            st.caption(widgets.plain(note))
    if "upload_fitted" in st.session_state:
        why = st.session_state["upload_fitted"]
        st.info(f"The model was fitted anew ({widgets.plain(why)}): every cutout is scored by "
                "it." if why else "A model was fitted on the cutouts stored: every cutout is "
                "scored by it.")
    ok = [r for r in results if r.status in ("added", "duplicate")]
    if any(r.status == "added" for r in ok) and any(
            widgets.demo_description(f.name) for f in state.reaper().files()):
        st.info("These files were scored by a model that also learned from the demo's files (a "
                "deep field and simulated frames), so what is ordinary in those sets the bar "
                "for yours. To judge your files on their own, remove the demo files on the "
                "*Home* page (Remove files): the model is then fitted anew on yours.")
    if ok:
        st.dataframe(pd.DataFrame([{"file": r.name, "status": r.status, "cutouts": r.n_cutouts,
                                    "anomalies": r.n_anomalies} for r in ok]),
                     hide_index=True, width="stretch")
        choice = st.selectbox("See the anomalies of", [r.name for r in ok], key="goto_file")
        if st.button("Open in gallery", key="open_gallery"):
            st.session_state["gallery_file"] = choice
            st.session_state["gallery_anomalies"] = True
            st.switch_page("app_pages/gallery.py")
