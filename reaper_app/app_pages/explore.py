"""Explore: the PCA projection, hover and select cutouts.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Explore the PCA projection")

import numpy as np

from reaper_app import plots, state, widgets

#: How many anomalies, the highest-scoring, show their thumbnail on hover (≈ 1.3 KB each in
#: the page: 32 × 32 PNGs, enlarged by the browser). Each costs ≈ 0.8 ms to draw on the first
#: render (its zscale), so 2,000 took 1.7 s of a million-cutout Explore's first render.
HOVER_THUMBNAILS = 500

m = state.require_model()
pts = state.explore_points(m)  # read for the points drawn alone, not the cutout table
ids, pcs, scores = pts["cutout_id"], pts["pcs"], pts["score"]
flagged = m.flags(scores)
score_of = dict(zip(ids.tolist(), scores.tolist(), strict=True))
where = {c: i for i, c in enumerate(ids.tolist())}

k = pcs.shape[1]
c1, c2, c3 = st.columns([1, 1, 2])
cx = c1.selectbox("x axis", range(k), format_func=lambda i: f"PC{i + 1}", index=0)
cy = c2.selectbox("y axis", range(k), format_func=lambda i: f"PC{i + 1}", index=min(1, k - 1))
drawn = (f"{pts['total']:,} cutouts" if pts["every"] == 1 else
         f"{pts['total']:,} cutouts (drawn: every anomaly and the inliers whose id is a "
         f"multiple of {pts['every']}, {len(ids):,} points)")
c3.write(f"{drawn}, **{int(flagged.sum()):,}** anomalies (red ×). Hover a point "
         "for its score and file; click it, or box or lasso select in the toolbar, to see the "
         "cutouts below and open any of them.")

fig = plots.pca_scatter(pcs, ids, scores, flagged, cx, cy, files=pts["file"])
event = st.plotly_chart(fig, key="pca", on_select="rerun",
                        selection_mode=("points", "box", "lasso"))
# Thumbnails on hover for the highest-scoring anomalies.
top = ids[flagged][np.argsort(-scores[flagged], kind="stable")][:HOVER_THUMBNAILS]
widgets.hover_thumbnails(state.thumbnails(top.astype(int).tolist(), upscale=1))
points = event.selection.points if event and event.selection else []
chosen = [int(p["customdata"][0] if isinstance(p["customdata"], list) else p["customdata"])
          for p in points if p.get("customdata") is not None]
if chosen:
    chosen = sorted(set(chosen), key=lambda c: (-np.nan_to_num(score_of.get(c, 0)), c))
    st.subheader(f"{len(chosen)} selected cutout{'s' if len(chosen) != 1 else ''}")
    shown = chosen[:48]
    widgets.cutout_grid(
        shown, {c: widgets.tile_caption(c, float(score_of.get(c, np.nan)),
                                        pts["file"][where[c]], label=pts["label"][where[c]])
                for c in shown if c in where}, columns=8, label_menu=True, key="explore")
    if len(chosen) > 48:
        st.caption(f"showing the 48 highest-scoring of {len(chosen)}")
else:
    st.caption("No selection yet.")
