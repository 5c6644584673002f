import json

import pandas as pd
import streamlit as st
from sqlmodel import Session, select

import ui
from reaper_core import pipeline, store, views

st.title("Anomaly Reaper")
st.write("Finds the odd things in TESS full-frame images: a patch around every object, an "
         "embedding per patch, PCA, and a ranking by reconstruction error. Move the cut on "
         "*Threshold & model*, look at what it flags in the *Gallery*, and label what is merely "
         "ordinary there (a big galaxy, a known star) *normal*: after a re-fit, it and objects "
         "like it rank lower.")

m = ui.model()
row = m[0] if m else None
tbl = ui.table(row.id if row else None)
flagged = ui.flagged_for(tbl, row.threshold if row else None)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Files", f"{tbl['file_id'].nunique():,}")
c2.metric("Cutouts", f"{len(tbl):,}")
c3.metric("Anomalies", f"{int(flagged.sum()):,}")
c4.metric("Labelled", f"{int(tbl['label'].notna().sum()):,}")

left, right = st.columns([3, 2])
with left:
    st.subheader("By sector, camera and CCD")
    st.dataframe(views.summary(tbl, flagged), hide_index=True, width="stretch")
with right:
    st.subheader("Current model")
    if row:
        ev = json.loads(row.explained_variance_json)
        n_normal = pipeline.n_normal(row)
        st.write(f"- embedder: **{row.embedder}**\n"
                 f"- components: **{row.n_components}** "
                 f"(explained variance {100 * sum(ev):.1f} %)\n"
                 f"- trained on **{row.n_train:,}** cutouts"
                 + (f", **{n_normal:,}** labelled normal" if n_normal else "") + "\n"
                 f"- threshold: **{row.threshold:.4g}** ({row.threshold_mode} "
                 f"{row.threshold_value:g})")
    else:
        st.info("No model yet: upload files or load the demo data.")

st.subheader("Files")
with Session(ui.engine()) as s:
    files = s.exec(select(store.FitsFile).order_by(store.FitsFile.id)).all()
if files:
    per_file = pd.Series(flagged, index=tbl.index).groupby(tbl["file_id"]).sum()
    st.dataframe(pd.DataFrame([{
        "file": f.name, "what it is": ui.demo_description(f.name) or "uploaded",
        "layout": f.layout, "sector": f.sector, "camera": f.camera, "ccd": f.ccd,
        "cutouts": f.n_cutouts, "anomalies": int(per_file.get(f.id, 0)),
    } for f in files]), hide_index=True, width="stretch")
else:
    st.write("Nothing ingested yet.")

if st.button("Load demo data", help="Hubble Deep Field (real) and simulated TESS frames"):
    ui.load_demo()
    st.rerun()
