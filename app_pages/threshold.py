import json

import numpy as np
import streamlit as st

import ui
from reaper_core import pipeline, plots, views
from reaper_core.detector import threshold_from_scores
from reaper_core.embedders import EMBEDDERS

st.title("Threshold & model")

row, det = ui.require_model()
tbl = ui.table(row.id)
scores = tbl["score"].to_numpy(dtype=float)

modes = ["sigma", "percentile", "absolute"]
mode = st.radio("Threshold mode", modes, index=modes.index(row.threshold_mode), horizontal=True,
                key=f"mode-{row.id}",
                help="sigma: mean + k·σ of the training scores; percentile: of the training "
                     "scores; absolute: a score")
spec = views.slider_spec(mode, det.train_scores_)
start = row.threshold_value if mode == row.threshold_mode else (
    {"sigma": 2.0, "percentile": 99.0}.get(mode, float(row.threshold)))
start = float(np.clip(start, spec["min"], spec["max"]))
value = st.slider(f"Threshold — {spec['unit']}", spec["min"], spec["max"], start,
                  step=spec["step"], key=f"slider-{row.id}-{mode}")

thr = threshold_from_scores(det.train_scores_, mode, value)
flagged = views.flags(scores, thr)
if (mode, float(value)) != (row.threshold_mode, float(row.threshold_value)):
    pipeline.set_threshold(ui.engine(), row.id, mode, value)  # saved with the model

c1, c2, c3 = st.columns(3)
c1.metric("Anomalies", f"{int(flagged.sum()):,}")
c2.metric("Share flagged", f"{100 * flagged.mean():.2f} %" if len(flagged) else "—")
c3.metric("Score threshold", f"{thr:.4g}")

st.plotly_chart(plots.score_histogram(scores, thr), key="hist")
st.subheader("Flagged cutouts")
flagged_rows = tbl.loc[flagged, ["cutout_id", "file", "x", "y", "sector", "camera", "ccd",
                                 "score", "label"]].sort_values("score", ascending=False)
st.dataframe(flagged_rows.head(500), hide_index=True, width="stretch", height=300)

st.divider()
st.subheader("Model")
ev = np.array(json.loads(row.explained_variance_json))
n_normal = pipeline.n_normal(row)
st.write(f"Model #{row.id}: **{row.embedder}** embedder, **{row.n_components}** components "
         f"explaining {100 * ev.sum():.1f} % of the variance, trained on {row.n_train:,} cutouts"
         + (f", {n_normal:,} of them labelled normal." if n_normal else "."))
st.plotly_chart(plots.explained_variance(ev), key="ev")
with st.form("refit"):
    s = ui.settings()
    names = [n for n in EMBEDDERS if n != "vertex" or s.vertex_project]
    embedder = st.selectbox("Embedder", names,
                            index=names.index(row.embedder) if row.embedder in names else 0)
    how = st.radio("Components", ["number", "explained variance"], horizontal=True)
    n = st.number_input("Number of components", 1, 200, int(row.n_components))
    frac = st.slider("Explained variance target", 0.5, 0.99, 0.9, 0.01)
    st.caption(f"Cutouts labelled *normal* in the gallery count {s.normal_weight}× in the fit "
               "and score 0, and objects like them rank lower: "
               f"{int((tbl['label'] == 'normal').sum()):,} labelled now.")
    if st.form_submit_button("Re-fit on every cutout"):
        s.embedder = embedder
        ui.refit(s, float(n) if how == "number" else float(frac))
