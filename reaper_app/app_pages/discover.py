"""Discover: the cutouts the model most wants judged next, labelled with one key each; every
label re-ranks the queue at once.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Discover")

import pandas as pd

from reaper_app import plots, state, widgets
from reaper_core.words import count

#: The one-key labels: (label or None to skip, button text, key).
KEYS = [("interesting", "Interesting", "I"), ("anomaly", "Anomaly", "A"),
        ("artefact", "Artefact", "F"), ("normal", "Normal", "N"), (None, "Skip", "S")]

m = state.require_model()
reaper = state.reaper()
skipped = st.session_state.setdefault("discover_skipped", [])
queue = [c for c in reaper.discover_queue(m, n=13 + len(skipped), explore=3)
         if c not in skipped][:13]
st.caption("Judge each cutout with one key: what is like an *interesting* or *anomaly* one "
           "rises in the queue, what is like a *normal* or *artefact* one sinks; far from every "
           "label the unsupervised score still rules. Three places in each page come from "
           "regions no label has reached yet, and a place that a cutout you found interesting "
           "already showed comes later.")
if not queue:
    st.info("Nothing left to judge: every object is labelled.")
    st.stop()


def judge(cid: int, label: str | None) -> None:
    """Label the cutout (its whole object) or skip it (a callback, before the rerun)."""
    if label is None:
        st.session_state["discover_skipped"].append(cid)
    else:
        state.reaper().label([cid], label, whole_object=True)
        st.session_state["discover_last"] = (cid, label)


cid = queue[0]
patch, c = reaper.cutouts([cid])[cid]
fr = reaper.file(c.file_id)
shown = reaper.rows(m, queue).set_index("cutout_id")
info = shown.loc[cid]
last = st.session_state.get("discover_last")
if last:
    st.toast(f"cutout #{last[0]} labelled {last[1]}; the queue is re-ranked")
    st.session_state["discover_last"] = None
left, right = st.columns([3, 4])
with left:
    st.plotly_chart(plots.cutout_image(patch, "zscale", "gray", reaper.pixel_scale(c.file_id)),
                    key="discover_image")
with right:
    st.subheader(f"Cutout #{cid}")
    st.write(widgets.plain(f"{fr.name} · x, y = {c.x:.1f}, {c.y:.1f} px · score "
                           f"{info['score']:.3g}"))
    why = reaper.reasons(m, [cid]).get(cid, [])
    if why:
        st.write(widgets.plain("Why it scores high: " + "; ".join(why) + "."))
    groups = state.groups(m)
    if groups.get(cid):
        g = groups[cid]
        shared = "; ".join(state.group_reasons(m).get(g, []))
        members = state.group_sizes(m)[g]
        st.write(widgets.plain(f"In group {g} of the anomalies ({count(members, 'cutout')}"
                               + (f": {shared}" if shared else "") + "); the gallery filters "
                               "by group and labels one in one action."))
    # Two rows, so that each button has room for its word and its key.
    for row in (KEYS[:2], KEYS[2:]):
        for col, (label, text, key) in zip(st.columns(len(row)), row, strict=True):
            col.button(text, key=f"judge-{label}", shortcut=key, width="stretch",
                       on_click=judge, args=(cid, label),
                       type="primary" if label in ("interesting", "anomaly") else "secondary")
    n_lab = reaper.n_labelled()
    st.caption(f"{count(n_lab, 'cutout')} labelled so far. Keys: "
               + ", ".join(f"{k} {t.lower()}" for _, t, k in KEYS) + ".")
    if fr.preview_png:
        st.plotly_chart(plots.frame_position(fr.preview_png, fr.nx, fr.ny, c.x, c.y,
                                             c.patch_size), key="discover_frame")
st.subheader("Next in the queue")
nxt = queue[1:]
widgets.cutout_grid(nxt, {i: widgets.tile_caption(i, float(shown["score"].get(i)),
                                                  shown["file"].get(i)) for i in nxt},
                    columns=6, key="queue")
if st.toggle("More like this one", key="discover_similar"):
    like = reaper.similar(cid, 12, m)
    ids = [i for i, _ in like]
    near = reaper.rows(m, ids).set_index("cutout_id")
    widgets.cutout_grid(ids, {i: widgets.tile_caption(i, float(near["score"].get(i)),
                                                      near["file"].get(i),
                                                      label=near["label"].get(i) if isinstance(
                                                          near["label"].get(i), str) else None)
                              for i in ids}, columns=6, key="like")
    st.dataframe(pd.DataFrame({"cutout": ids, "distance": [round(d, 2) for _, d in like]}),
                 hide_index=True)
