"""Threshold & model: preview and save the cut, re-fit.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Threshold & model")

import numpy as np

from reaper_app import plots, state, widgets
from reaper_core import views
from reaper_core.embedders import EMBEDDERS
from reaper_core.thresholds import THRESHOLD_MODES, flags, slider_spec

m = state.require_model()
row = m.row
scores = state.scores(m)  # the score column alone, not the cutout table
mode_key = f"mode-{m.id}"

def _slider_key(mode: str) -> str:
    return f"slider-{m.id}-{mode}"

def _save(mode: str) -> None:
    state.reaper().save_threshold(mode, st.session_state[_slider_key(mode)], m)

def _reset() -> None:
    for key in [mode_key, *(_slider_key(md) for md in THRESHOLD_MODES)]:
        st.session_state.pop(key, None)

mode = st.radio("Threshold mode", THRESHOLD_MODES,
                index=THRESHOLD_MODES.index(row.threshold_mode), horizontal=True, key=mode_key,
                help="sigma: mean + k·σ of the training scores; percentile: of the training "
                     "scores; absolute: a score")
spec = slider_spec(mode, m.detector.train_anomaly_scores_)
start = row.threshold_value if mode == row.threshold_mode else (
    {"sigma": 2.0, "percentile": 99.0}.get(mode, m.threshold))
start = float(np.clip(start, spec.min, spec.max))
value = st.slider(f"Threshold — {spec.unit}", spec.min, spec.max, start, step=spec.step,
                  key=_slider_key(mode))

# A preview from the arrays in hand; the model changes only on "Save threshold".
thr = m.detector.threshold_for(mode, value)
flagged = flags(scores, thr)
unsaved = (mode, float(value)) != (row.threshold_mode, float(row.threshold_value))
b1, b2, b3 = st.columns([1, 1, 4])
b1.button("Save threshold", key="save_threshold", type="primary", disabled=not unsaved,
          on_click=_save, args=(mode,))
b2.button("Reset", key="reset_threshold", disabled=not unsaved, on_click=_reset)
b3.caption(f"Preview: not saved (saved: {m.threshold_text()})." if unsaved
           else "This is the threshold saved with the model.")

c1, c2, c3 = st.columns(3)
c1.metric("Anomalies", f"{int(flagged.sum()):,}")
c2.metric("Share flagged", f"{100 * flagged.mean():.2f} %" if len(flagged) else "—")
c3.metric("Score threshold", f"{thr:.4g}")

st.plotly_chart(plots.score_histogram(scores, thr), key="hist")
st.subheader("Flagged cutouts")
flagged_rows = state.reaper().top_scored(m, thr, 500)
st.dataframe(views.dash_missing(flagged_rows, ("sector", "camera", "ccd", "label")),
             hide_index=True, width="stretch", height=widgets.table_height(len(flagged_rows), 7),
             column_config={c: st.column_config.NumberColumn(format=f)
                            for c, f in (("x", "%.1f"), ("y", "%.1f"), ("score", "%.4g"))})

st.divider()
st.subheader("Model")
st.write(m.summary())
st.plotly_chart(plots.explained_variance(m.explained_variance), key="ev")
s = state.settings()
names = [n for n in EMBEDDERS if not n.startswith("vertex") or s.vertex_project]
how = st.radio("Components", ["number", "explained variance"], horizontal=True, key="refit_how")
with st.form("refit"):
    embedder = st.selectbox("Embedder", names,
                            index=names.index(row.embedder) if row.embedder in names else 0)
    if how == "number":
        n = st.number_input("Number of components", 1, 200, int(row.n_components))
    else:
        n = st.slider("Explained variance target", 0.5, 0.99, 0.9, 0.01)
    st.caption(f"Cutouts labelled *normal* in the gallery count {s.normal_weight}× in the fit "
               "and score 0, and objects like them rank lower: "
               f"{state.reaper().n_labelled('normal'):,} labelled now.")
    if st.form_submit_button("Re-fit on every cutout", key="refit_submit"):
        widgets.refit(float(n), embedder)
