"""Timeline: a stack of frames through time, its difference images and its events.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Timeline")

import json

import numpy as np

from reaper_app import plots, state, widgets
from reaper_core.events import EVENT_KINDS
from reaper_core.labels import LABELS, sinks
from reaper_core.thresholds import sigma_reach, slider_spec
from reaper_core.words import count

r = state.reaper()
stacks = r.stacks()
if not stacks:
    st.info("No stacks yet. A TESScut cube is a stack by itself; single frames of one sector, "
            "camera and CCD form one once three of them are ingested (Upload page), as do "
            "three frames of one field (the same OBJECT in their headers) with times; or run "
            "`anomaly-reaper events FILES`.")
    st.stop()

by_id = {s["id"]: s for s in stacks}
sid = st.selectbox("Stack", list(by_id), key="timeline-stack",
                   format_func=lambda i: f"{i}: {by_id[i]['stack']}")
info = by_id[sid]
st.caption(widgets.plain(
    f"{count(info['frames'], 'frame')} over {info['days']:.2f} days "
    f"(BTJD {info['t_start']:.3f}–{info['t_end']:.3f}), a frame every "
    f"{info['cadence_min']:.1f} min, {count(info['gaps'], 'gap')}, "
    f"{count(info['flagged'], 'frame')} flagged by quality bits, "
    f"{count(info['events'], 'event')}"))

model = r.event_model()
if model is not None:
    ranked = np.array([v for v in r.events()["score"] if v is not None], float)
    spec = slider_spec("sigma", ranked)  # the events' ranking scores, as the threshold's
    start = model.threshold_value if model.threshold_mode == "sigma" else 2.0
    k = st.slider("Event threshold (σ above the mean event score)", spec.min, spec.max,
                  float(np.clip(start, spec.min, spec.max)), spec.step, key="event-threshold")
    reach = sigma_reach(len(ranked))
    if len(ranked) and k >= reach:
        st.caption(f"With {count(len(ranked), 'event')}, no event's score can stand {k:.2f}σ "
                   f"above their mean (at most {reach:.2f}σ): none is flagged; lower the "
                   "threshold to flag the strongest.")
    if st.button("Save event threshold", key="save-event-threshold"):
        model = r.save_event_threshold("sigma", k)
        st.toast("Event threshold saved.")

kind = st.segmented_control("Kind", EVENT_KINDS, key="timeline-kind")
cols = r.events(stack=sid, kind=kind)
scores = np.array([np.nan if v is None else float(v) for v in cols["score"]])
thr = model.threshold if model is not None else np.inf
flag = scores > thr

frame = st.slider("Frame", 0, info["frames"] - 1, 0, key=f"frame-{sid}")
img, diff, t = r.stack_view(sid, frame)
offset = r.stack_offset(sid)
now = (cols["t_start"].astype(float) <= t + 1e-6) & (cols["t_end"].astype(float) >= t - 1e-6)
marks = [{"x": float(cols["x"][i]), "y": float(cols["y"][i]),
          "text": f"event {cols['id'][i]} · {cols['kind'][i]}"} for i in np.flatnonzero(now)]
left, right = st.columns(2)
left.plotly_chart(plots.stack_frame(img, f"frame {frame} · BTJD {t:.4f}", marks,
                                    offset=offset), key="frame-plot")
right.plotly_chart(plots.stack_frame(diff, "difference from the reference", marks,
                                     difference=True, offset=offset), key="diff-plot")

st.subheader("Events")
if len(cols["id"]) == 0:
    st.info("No events in this stack" + (" of that kind." if kind else "."))
    st.stop()
table = {
    "id": cols["id"].astype(int), "kind": cols["kind"].astype(str),
    "x": cols["x"].astype(float).round(1), "y": cols["y"].astype(float).round(1),
    "peak (BTJD)": cols["t_peak"].astype(float).round(4),
    "S/N": cols["peak_sigma"].astype(float).round(1), "score": scores.round(3),
    "anomaly": flag, "label": ["—" if v is None else str(v) for v in cols["label"]],
}
st.dataframe(table, hide_index=True, height=widgets.table_height(len(cols["id"]), 6))
ids = [int(i) for i in cols["id"]]
eid = st.selectbox("Open event", ids, key=f"event-{sid}",
                   format_func=lambda i: f"event {i} · {cols['kind'][ids.index(i)]} · score "
                                         f"{scores[ids.index(i)]:.3g}")
ev = r.event(eid)
j = ids.index(eid)
st.caption(widgets.plain(
    f"event {eid}: {ev.kind}, peak S/N {ev.peak_sigma:.1f} at BTJD {ev.t_peak:.4f} "
    f"(x {ev.x:.1f}, y {ev.y:.1f}), from {ev.t_start:.4f} to {ev.t_end:.4f}, "
    + (f"{count(ev.n_detections, 'detection')}" if (ev.binned or 1) == 1 else
       f"found in {count(ev.n_detections, 'bin')} of {ev.binned} frames summed (its S/N "
       "the bin's)")
    + (f", moving {ev.rate:.2f} px/day to (x {ev.x_end:.1f}, y {ev.y_end:.1f})"
       if ev.kind == "mover" and ev.rate is not None else "")))
strip = r.event_strip_pngs(eid)
frames = json.loads(ev.strip_frames_json)
st.image(strip, caption=[f"frame {f}" for f in frames], width=90, output_format="PNG")
lc = r.event_lightcurve(eid)
st.plotly_chart(plots.light_curve(lc, ev.t_start, ev.t_end), key="lightcurve")
if ev.kind == "mover":
    track = np.array(json.loads(ev.track_json))[:, 1:]
    st.plotly_chart(plots.stack_frame(img, "the mover's track on this frame", [],
                                      offset=offset, track=track), key="track-plot")
c1, c2 = st.columns(2)
c1.download_button("Animation (GIF)", data=lambda: r.event_gif(eid),
                   file_name=f"event_{eid}.gif", mime="image/gif", key=f"gif-{eid}")
c2.download_button("Light curve (CSV)", data=lambda: r.lightcurve_csv(eid),
                   file_name=f"event_{eid}_lightcurve.csv", mime="text/csv", key=f"lc-{eid}")
if ev.ra is not None and ev.dec is not None:
    widgets.sky_links(ev.ra, ev.dec)
with st.form(f"label-event-{eid}"):
    options = ["(none)", *LABELS]
    label = st.selectbox("Label", options,
                         index=options.index(ev.label) if ev.label in LABELS else 0)
    note = st.text_input("Note", ev.note or "")
    if st.form_submit_button("Save label"):
        r.label_event(eid, None if label == "(none)" else label, note)
        st.toast(widgets.plain(f"event {eid} labelled {label}")
                 + (" — events like it now rank lower" if sinks(label) else ""))
        st.rerun()  # the list above, re-ranked
