"""Gallery: the ranked cutouts, filters, and a cutout's detail.

The title is drawn before anything heavy is imported, so the page paints at once.
"""

import streamlit as st

st.title("Anomaly gallery")

import json

import numpy as np
import pandas as pd

from reaper_app import plots, state, widgets
from reaper_core import views
from reaper_core.cutouts import STRETCHES, to_png
from reaper_core.downloads import cutout_file_name, region_file_name
from reaper_core.explain import group_titles, residual_map
from reaper_core.labels import LABELS
from reaper_core.words import count

m = state.model()
reaper = state.reaper()
index = state.rank_index(m)
if not len(index):
    st.info("Nothing ingested yet.")
    st.stop()
files = reaper.file_columns()


def options(col):
    return sorted(int(v) for v in np.unique(files[col][np.isfinite(files[col])]))


with st.sidebar:
    st.subheader("Filters")
    s = index.score[np.isfinite(index.score)]
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    score_rng = st.slider("Score range", lo, max(hi, lo + 1e-6), (lo, max(hi, lo + 1e-6)),
                          key="g_score")
    sectors = st.multiselect("Sector", options("sector"), key="g_sector")
    cameras = st.multiselect("Camera", options("camera"), key="g_camera")
    ccds = st.multiselect("CCD", options("ccd"), key="g_ccd")
    labels = st.multiselect("Label", [*LABELS, "unlabelled"], key="g_label")
    file_q = st.text_input("File name contains", st.session_state.pop("gallery_file", ""),
                           key="g_file")
    only = st.checkbox("Anomalies only", st.session_state.pop("gallery_anomalies", True),
                       key="g_only")
    groups = state.groups(m)
    sizes = state.group_sizes(m)
    shared = state.group_reasons(m) if sizes else {}
    titles = group_titles(shared)
    chosen_groups = st.multiselect(
        "Group of anomalies", list(range(1, max(sizes, default=0) + 1)), key="g_group",
        format_func=lambda g: f"group {g} ({sizes[g]:,})"
                              + (f": {titles[g]}" if titles.get(g) else ""),
        help="Flagged cutouts grouped by the way they are odd (HDBSCAN on the directions of "
             "their embeddings), each named by what its members share.")
    per_object = st.checkbox("One per object", True, key="g_per_object",
                             help="Show only the highest-scoring cutout of each detected "
                                  "object (a big galaxy or a bleed trail gives many).")
    st.subheader("Display")
    stretch = st.selectbox("Stretch", STRETCHES, index=STRETCHES.index("zscale"), key="g_stretch",
                           help="zscale: the display DS9 users know; asinh, sqrt and log show "
                                "faint structure next to bright stars")
    cmap = st.selectbox("Colour map", ["gray", "viridis", "magma", "inferno", "cividis"],
                        key="g_cmap")

f = views.Filters(score_min=score_rng[0], score_max=score_rng[1], sectors=tuple(sectors),
                  cameras=tuple(cameras), ccds=tuple(ccds), labels=tuple(labels),
                  file_contains=file_q, anomalies_only=only)
in_groups = [cid for cid, g in groups.items() if g in chosen_groups] if chosen_groups else None
if chosen_groups:
    for g in chosen_groups:
        words = "; ".join(shared.get(g, []))  # none for an embedder without phrases
        st.caption(widgets.plain(f"Group {g} ({count(sizes[g], 'cutout')})"
                                 + (f": {words}" if words else "")))
    with st.form("label_groups"):
        lab_col, go_col = st.columns([3, 1], vertical_alignment="bottom")
        glab = lab_col.selectbox(f"Label every cutout of {count(len(chosen_groups), 'group')} "
                                 f"({len(in_groups):,} cutouts)", LABELS, key="g_group_label")
        if go_col.form_submit_button("Label the group"):
            reaper.label(in_groups, glab)
            st.toast(f"Labelled {count(len(in_groups), 'cutout')} {glab}")
            st.rerun()
per_page = st.session_state.get("g_per_page", 24)
got = state.gallery_selection(m, index, f, in_groups, per_object)
page_rows = reaper.gallery_page(m, index, got, st.session_state.get("g_page", 1) - 1, per_page)

n_normal = reaper.n_labelled("normal")
counted = m.n_normal if m is not None else n_normal
if n_normal != counted:
    note_col, button_col = st.columns([4, 1])
    note_col.info(f"{n_normal:,} cutouts are labelled normal; the current model counted "
                  f"{counted:,}. Re-fit so that objects like them rank lower.")
    if button_col.button("Re-fit now", key="g_refit"):
        widgets.refit(m.row.n_components_requested, m.embedder)

if not got["n_match"] and got["n_any"]:
    st.info(f"None of the {count(got['n_any'], 'cutout')} that match the other filters scores "
            "above the threshold: untick “Anomalies only” to see them.")
top = st.columns([2, 1, 1])
top[0].write(f"**{got['n_match']:,}** cutouts match (of {len(index):,})"
             + (f", from **{count(got['n_shown'], 'object')}**" if per_object else "")
             + ", highest score first.")
top[1].selectbox("Per page", [12, 24, 48, 96], index=1, key="g_per_page")
last = views.n_pages(got["n_shown"], per_page)
if st.session_state.get("g_page", 1) > last:
    st.session_state["g_page"] = last
top[2].number_input("Page", 1, last, key="g_page", help="Also: the buttons below the cutouts")


def turn(step: int) -> None:
    """Go ``step`` pages on (a callback: it runs before the page input is drawn again)."""
    st.session_state["g_page"] = int(np.clip(st.session_state["g_page"] + step, 1, last))


st.download_button(f"Export these {got['n_match']:,} cutouts (CSV)",
                   lambda: reaper.rows_csv(m, got["ids"]),  # made when clicked
                   "anomaly-reaper-selection.csv", "text/csv", key="g_export")

# A shared link (?cutout=ID) opens that cutout's detail.
linked = st.query_params.get("cutout")
if linked is not None and linked.isdigit() and st.session_state.get("detail") is None:
    st.session_state["detail"] = int(linked)
detail = st.session_state.get("detail")
found = reaper.rows(m, [detail]) if detail is not None else None
if found is not None and len(found):
    with st.container(border=True):
        patch, c = reaper.cutouts([detail])[detail]
        info = found.iloc[0]
        st.subheader(f"Cutout #{detail} — {widgets.plain(info['file'])}")
        a, b, d = st.columns([3, 2, 4])
        a.plotly_chart(plots.cutout_image(patch, stretch, cmap, reaper.pixel_scale(c.file_id)),
                       key="detail_image")
        b.image(to_png(residual_map(patch), "sqrt", 8, "magma"),
                caption="where the signal sits (|pixel − sky| / σ)", width="stretch",
                output_format="PNG")
        with b:  # files made when clicked, not with every run of the page
            st.download_button("Download FITS (with WCS)",
                               lambda: reaper.cutout_fits(detail, m)[1],
                               cutout_file_name(detail, "fits"), "application/fits",
                               key="dl_fits", width="stretch")
            st.download_button("Download PNG", lambda: reaper.cutout_png(detail, stretch, cmap)[1],
                               cutout_file_name(detail, "png"), "image/png", key="dl_png",
                               width="stretch")
            if m is not None:
                st.download_button("DS9 regions", lambda: reaper.region_file(c.file_id, m)[1],
                                   region_file_name(info["file"]), "text/plain", key="dl_reg",
                                   width="stretch",
                                   help="Boxes around this file's anomalies, with id and "
                                        "score: open the FITS file in DS9, then Region > "
                                        "Open this file.")
        with d:
            ra = "—" if pd.isna(info["ra"]) else f"{info['ra']:.5f}°"
            dec = "—" if pd.isna(info["dec"]) else f"{info['dec']:.5f}°"
            st.write(f"x, y = {info['x']:.1f}, {info['y']:.1f} px · RA {ra} · Dec {dec}")
            if not (pd.isna(info["ra"]) or pd.isna(info["dec"])):
                widgets.sky_links(float(info["ra"]), float(info["dec"]))
            sc = info["score"]
            st.write(f"score **{sc:.4g}**" + (" — **anomaly**" if m and sc > m.threshold
                                              else ""))
            if info["label"] == "normal":
                st.caption("Labelled normal: a model fitted since scores it 0, and objects "
                           "like it lower.")
            if m:
                why = reaper.reasons(m, [detail]).get(detail, [])
                if why:
                    st.write("Why: " + "; ".join(why) + ".")
                if st.toggle("Show the features behind it", key="g_features"):
                    feats = reaper.explain(m, [detail], top=5).get(detail, [])
                    st.caption("Share of the reconstruction error: " + ", ".join(
                        f"{n} {100 * v:.0f}%" for n, v in feats))
                quads = reaper.error_by_quadrant(m, detail)
                if quads is not None:
                    st.write("Share of the reconstruction error in the shape of each quarter "
                             "of the patch (the rest is in its photometry):")
                    st.dataframe(pd.DataFrame(
                        (100 * quads[::-1]).round(1), index=["upper", "lower"],
                        columns=["left %", "right %"]), width="content")
            fr = reaper.file(c.file_id)
            st.caption("Header")
            st.dataframe(
                [{"card": k, "value": v} for k, v in json.loads(fr.header_json).items()],
                hide_index=True, width="stretch", height=200)
        if fr.preview_png:
            st.plotly_chart(plots.frame_position(fr.preview_png, fr.nx, fr.ny, c.x, c.y,
                                                 c.patch_size), key="frame")
        if m is not None and st.toggle("More like this", key="g_like",
                                       help="The nearest cutouts in embedding space, across "
                                            "every file"):
            like = reaper.similar(detail, 12, m)
            near = reaper.rows(m, [i for i, _ in like]).set_index("cutout_id")
            widgets.cutout_grid(
                [i for i, _ in like],
                {i: widgets.tile_caption(i, float(near["score"].get(i)), near["file"].get(i))
                 + f" · distance {d:.3g}" for i, d in like}, columns=6, stretch=stretch,
                cmap=cmap, key="like")
        others = reaper.object_members(m, detail)
        if len(others):
            st.caption(f"The same object: {len(others):,} more cutouts"
                       + (", the 12 highest-scoring:" if len(others) > 12
                          else ", highest score first:"))
            top12 = others.head(12)
            widgets.cutout_grid(
                top12["cutout_id"].astype(int).tolist(),
                {int(c): widgets.tile_caption(int(c), float(sc)) for c, sc in
                 zip(top12["cutout_id"], top12["score"], strict=True)},
                columns=12, stretch=stretch, cmap=cmap, key="same")
        with st.form(f"label-{detail}"):
            current = info["label"] if isinstance(info["label"], str) else None
            choices = ["(none)", *LABELS]
            lab = st.radio("Label", choices, horizontal=True,
                           index=choices.index(current) if current in choices else 0,
                           help="Cutouts labelled normal count more when the model is re-fitted, "
                                "so that objects like them rank lower.")
            note = st.text_input("Note", info["note"] if isinstance(info["note"], str) else "")
            whole = len(others) > 0 and st.checkbox(
                f"Label all {len(others) + 1:,} cutouts of this object", True, key="g_whole")
            if st.form_submit_button("Save label"):
                ids = [detail, *others["cutout_id"].astype(int)] if whole else [detail]
                reaper.label(ids, None if lab == "(none)" else lab, note)
                st.toast(f"Saved the label of {count(len(ids), 'cutout')}"
                         + (" — re-fit to rank objects like it lower" if lab == "normal" else ""))
                st.rerun()
        if st.button("Close detail", key="close_detail"):
            st.session_state.pop("detail", None)
            st.query_params.pop("cutout", None)
            st.rerun()

ids = page_rows["cutout_id"].astype(int).tolist()
n_of = dict(zip(ids, page_rows["n_cutouts"], strict=True)) if per_object else {}
captions = {cid: widgets.tile_caption(cid, float(sc), f, n_of.get(cid),
                                      lab if isinstance(lab, str) else None)
            for cid, sc, f, lab in zip(ids, page_rows["score"], page_rows["file"],
                                       page_rows["label"], strict=True)}
widgets.cutout_grid(ids, captions, columns=6, stretch=stretch, cmap=cmap, label_menu=True,
                    key="page")
if m is not None:  # a detail's "why it scores high" needs the estimator
    reaper.warm(m)
prev_col, where_col, next_col = st.columns([1, 2, 1])
prev_col.button("← Previous page", key="g_prev", on_click=turn, args=(-1,),
                disabled=st.session_state["g_page"] <= 1, width="stretch")
where_col.caption(f"Page {st.session_state['g_page']:,} of {last:,}")
next_col.button("Next page →", key="g_next", on_click=turn, args=(1,),
                disabled=st.session_state["g_page"] >= last, width="stretch")
if st.session_state.get("detail") is not None and st.session_state.get("detail") != detail:
    st.rerun()
