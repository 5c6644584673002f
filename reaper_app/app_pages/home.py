"""Home: totals, the current model, the files and the report.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Anomaly Reaper")

import pandas as pd

from reaper_app import state, widgets
from reaper_core import views
from reaper_core.downloads import region_file_name

st.write("Finds the odd things in TESS full-frame images: a patch around every object, an "
         "embedding per patch, PCA, and a ranking by reconstruction error. Move the cut on "
         "*Threshold & model*, look at what it flags in the *Gallery*, and label what is merely "
         "ordinary there (a big galaxy, a known star) *normal*: after a re-fit, it and objects "
         "like it rank lower.")

m = state.model()
counts = state.overview(m)  # aggregated by the database: no cutout rows are read

c1, c2, c3, c4 = st.columns(4)
c1.metric("Files", f"{counts['files']:,}")
c2.metric("Cutouts", f"{counts['cutouts']:,}")
c3.metric("Anomalies", f"{counts['anomalies']:,}")
c4.metric("Labelled", f"{counts['labelled']:,}")

left, right = st.columns([3, 2])
with left:
    st.subheader("By sector, camera and CCD")
    st.dataframe(counts["summary"], hide_index=True, width="stretch")
with right:
    st.subheader("Current model")
    if m:
        row = m.row
        st.write(f"- embedder: **{widgets.plain(row.embedder)}**\n"
                 f"- components: **{row.n_components}** "
                 f"(explained variance {100 * m.explained_variance.sum():.1f} %)\n"
                 f"- trained on **{row.n_train:,}** cutouts"
                 + (f", **{m.n_normal:,}** labelled normal" if m.n_normal else "") + "\n"
                 f"- threshold: **{m.threshold:.4g}** ({widgets.plain(row.threshold_mode)} "
                 f"{row.threshold_value:g})")
    else:
        st.info("No model yet: upload files or load the demo data.")

st.subheader("Files")
files = state.reaper().files()
if files:
    per_file = counts["per_file"]
    st.dataframe(views.dash_missing(pd.DataFrame([{
        "file": f.name, "what it is": widgets.demo_description(f.name) or "uploaded",
        "layout": f.layout, "sector": f.sector, "camera": f.camera, "ccd": f.ccd,
        "cutouts": f.n_cutouts, "anomalies": int(per_file.get(f.id, 0)),
    } for f in files]), ("sector", "camera", "ccd")), hide_index=True, width="stretch")
    if m:
        pick, get = st.columns([3, 1], vertical_alignment="bottom")
        names = {f.id: f.name for f in files}
        chosen = pick.selectbox("Anomalies of one file as DS9 regions", list(names),
                                format_func=names.get, key="reg_file")
        get.download_button("DS9 region file", lambda: state.reaper().region_file(chosen, m)[1],
                            region_file_name(names[chosen]), "text/plain",
                            key="reg_download", width="stretch",
                            help="Boxes around the file's anomalies with their id and score: "
                                 "open the FITS file in DS9, then Region > Open.")
    with st.expander("Remove files"):
        # The demo files are offered first once files of one's own are there too.
        stored = list(dict.fromkeys(f.name for f in files))
        demo = [n for n in stored if widgets.demo_description(n)]
        with st.form("remove_files", border=False):
            doomed = st.multiselect(
                "Files to remove", stored, default=demo if len(demo) < len(stored) else [],
                key="remove_names",
                help="Their cutouts, scores and labels are deleted; the files on disk stay. "
                     "The model is then fitted anew on what is left.")
            sure = st.checkbox("Yes, delete these files' cutouts, scores and labels",
                               key="remove_sure")
            go = st.form_submit_button("Remove")
        if go and not doomed:
            st.warning("Choose the files to remove first.")
        elif go and not sure:
            st.warning("Tick the box to confirm: what is removed cannot be brought back.")
        elif go:
            with st.spinner("Removing, then fitting the model anew…"):
                said = state.remove_files(doomed)
            st.session_state["removed_files"] = said
            for key in ("remove_names", "remove_sure"):  # the form starts afresh
                st.session_state.pop(key, None)
            st.rerun()
else:
    st.write("Nothing ingested yet.")
if "removed_files" in st.session_state:
    ok, said = st.session_state.pop("removed_files")
    (st.success if ok else st.error)(widgets.plain(said[:1].upper() + said[1:] + "."))

if m:
    st.subheader("A report to keep")
    st.caption("Score distributions by sector, camera and CCD, the anomaly rate over the "
               "detector, the principal components by flag and the top cutouts, as a PDF.")
    if st.button("Make the report", key="make_report"):
        with st.spinner("Drawing the report…"):
            st.session_state["report_pdf"] = widgets.report_pdf()
    if "report_pdf" in st.session_state:
        st.download_button("Download the report (PDF)", st.session_state["report_pdf"],
                           "anomaly-reaper-report.pdf", "application/pdf", key="report_download")

job = state.demo_job()
loading = job is not None and not job.state().done
if not loading and not {f.name for f in files} >= set(widgets.DEMO_FILES) and st.button(
        "Load demo data", help="Hubble Deep Field (real) and simulated TESS frames, loaded in "
                               "the background"):
    state.start_demo()
    st.session_state.pop("_demo_shown_done", None)
    st.rerun()
