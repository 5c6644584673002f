import pandas as pd
import streamlit as st

import ui
from reaper_core import pipeline
from reaper_core.uploads import save_upload

st.title("Upload FITS files")
st.write("Drop TESS FFIs (SPOC or TICA), TESScut cubes or any FITS image: `.fits`, `.fit`, "
         "`.fts`, `.fz`, `.fits.gz`. Each file is stored, cut, embedded and scored; a bad file "
         "is reported and the others go on.")

settings = ui.settings()
done = st.session_state.setdefault("upload_done", {})
uploads = st.file_uploader("FITS files", accept_multiple_files=True, key="uploader",
                           type=["fits", "fit", "fts", "fz", "gz"])

new = [u for u in (uploads or []) if u.file_id not in done]
if new:
    report = pipeline.IngestReport()
    overall = st.progress(0.0, text=f"0 of {len(new)} files")
    for i, up in enumerate(new):
        with st.status(f"{up.name}", expanded=False) as status:
            bar = st.progress(0.0)

            def progress(stage, fraction, message, bar=bar):
                k = pipeline.STAGES.index(stage) if stage in pipeline.STAGES else 0
                bar.progress(min(1.0, (k + fraction) / len(pipeline.STAGES)),
                             text=f"{stage}: {message}")

            try:
                path = save_upload(up.name, up.getvalue(), settings.uploads_dir)
                result = pipeline.ingest_file(ui.engine(), path, settings, progress=progress,
                                              name=up.name, stored_path=str(path))
            except OSError as exc:
                result = pipeline.FileResult(up.name, "error", f"{up.name}: cannot be saved "
                                             f"({exc.strerror or exc})")
            report.results.append(result)
            state = {"added": "complete", "duplicate": "complete", "error": "error"}[result.status]
            status.update(label=f"{result.name}: {result.status}", state=state)
        overall.progress((i + 1) / len(new), text=f"{i + 1} of {len(new)} files")
    with st.spinner("Scoring…"):
        pipeline.finish_batch(ui.engine(), report, settings)
    for up, r in zip(new, report.results, strict=True):
        done[up.file_id] = r

results = list(done.values())
if results:
    st.subheader("Results")
    for r in results:
        if r.status == "added":
            st.success(f"**{r.name}**: {r.n_cutouts} objects, "
                       f"{r.n_anomalies if r.n_anomalies is not None else '?'} anomalies "
                       f"({r.seconds:.1f} s)")
        elif r.status == "duplicate":
            st.info(f"**{r.name}**: duplicate — {r.message}")
        else:
            st.error(r.message)
    ok = [r for r in results if r.status in ("added", "duplicate")]
    if ok:
        st.dataframe(pd.DataFrame([{"file": r.name, "status": r.status, "objects": r.n_cutouts,
                                    "anomalies": r.n_anomalies} for r in ok]),
                     hide_index=True, width="stretch")
        choice = st.selectbox("See the anomalies of", [r.name for r in ok], key="goto_file")
        if st.button("Open in gallery", key="open_gallery"):
            st.session_state["gallery_file"] = choice
            st.session_state["gallery_anomalies"] = True
            st.switch_page("app_pages/gallery.py")
