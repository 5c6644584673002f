"""Plotly figures for the dashboard (no Streamlit here)."""

from __future__ import annotations

import numpy as np

# Plotly looks pandas and PIL.Image up in ``sys.modules`` without importing them
# (``should_load=False``, in its validators and its JSON encoder): while another thread (a second
# browser session, a rerun's page) is still importing one, it finds the half-made module and
# fails ("partially initialized module 'pandas'"). Importing them here waits for such an import
# to finish before any figure is built.
import pandas  # noqa: F401
import PIL.Image  # noqa: F401
import plotly.graph_objects as go

ANOMALY_COLOUR = "#e4572e"
INLIER_COLOUR = "#4c78a8"
THRESHOLD_COLOUR = "#9a9a9a"


def score_histogram(scores: np.ndarray, threshold: float, bins: int = 80) -> go.Figure:
    """Histogram of scores (log-spaced bins, counts pre-binned) with the threshold line."""
    s = np.asarray(scores, float)
    s = s[np.isfinite(s) & (s > 0)]
    fig = go.Figure()
    if s.size:
        edges = np.geomspace(s.min(), s.max() * 1.0001, bins + 1)
        counts, _ = np.histogram(s, edges)
        centres = np.sqrt(edges[:-1] * edges[1:])
        colour = np.where(centres > threshold, ANOMALY_COLOUR, INLIER_COLOUR)
        fig.add_bar(x=centres, y=counts, width=np.diff(edges), marker_color=colour,
                    name="cutouts", hovertemplate="score %{x:.3g}: %{y} cutouts<extra></extra>")
    # Mid grey reads on both the light and the dark theme. The label is added by hand: on a
    # log axis Plotly places a shape's own annotation at 10**x, far off the data.
    fig.add_vline(x=threshold, line_color=THRESHOLD_COLOUR, line_dash="dash", line_width=2)
    # The x axis spans the data and the threshold, no more.
    ends = [s.min(), s.max()] if s.size else []
    if np.isfinite(threshold) and threshold > 0:
        ends.append(threshold)
        fig.add_annotation(x=np.log10(threshold), y=1, xref="x", yref="paper",
                           text=f"threshold {threshold:.3g}", showarrow=False, xanchor="left",
                           yanchor="bottom", font_color=THRESHOLD_COLOUR)
    if ends:
        fig.update_xaxes(range=[np.log10(min(ends)) - 0.05, np.log10(max(ends)) + 0.05])
    # One label per decade: Plotly's log axes otherwise label minor ticks ("1000, 5, 2, 100").
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(dtick=1)
    fig.update_layout(xaxis_type="log", xaxis_title="score (reconstruction error)",
                      yaxis_title="cutouts", yaxis_type="log", bargap=0, showlegend=False,
                      margin=dict(l=10, r=10, t=40, b=10), height=320)
    return fig


def explained_variance(ratios: np.ndarray) -> go.Figure:
    """Per-component and cumulative explained variance."""
    r = np.asarray(ratios, float)
    k = np.arange(1, r.size + 1)
    fig = go.Figure()
    fig.add_bar(x=k, y=r, name="per component", marker_color=INLIER_COLOUR)
    fig.add_scatter(x=k, y=np.cumsum(r), name="cumulative", mode="lines+markers",
                    line_color=ANOMALY_COLOUR)
    fig.update_layout(xaxis_title="component", yaxis_title="explained variance ratio",
                      yaxis_range=[0, 1.02], height=300, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.1))
    return fig


#: Hover text of a cutout in the PCA scatter: id, score and file (the file name is text).
_HOVER = ("<b>%{meta} %{customdata[0]}</b><br>score %{customdata[1]:.4g}<br>%{customdata[2]}"
          "<br><i>click to see it below</i><extra></extra>")


def pca_scatter(pc: np.ndarray, ids: np.ndarray, scores: np.ndarray, flagged: np.ndarray,
                cx: int = 0, cy: int = 1, files: np.ndarray | None = None,
                max_points: int = 100_000) -> go.Figure:
    """WebGL scatter of two principal components, coloured by score, anomalies marked.

    Each point's ``customdata`` is (cutout id, score, file name), so a selection maps back to
    cutouts whatever the trace, and the hover says what the point is. File names are
    HTML-escaped (Plotly's hover labels read HTML). Beyond ``max_points`` inliers, they are
    drawn as a density, so a million cutouts stay smooth; anomalies are always points.
    """
    import html

    def points(mask: np.ndarray) -> np.ndarray:
        """(cutout id, score, escaped file name) of the masked points, shape (m, 3)."""
        out = np.empty((int(mask.sum()), 3), dtype=object)
        out[:, 0], out[:, 1] = ids[mask], scores[mask]
        out[:, 2] = [html.escape(str(f)) for f in files[mask]] if files is not None else ""
        return out

    fig = go.Figure()
    inl = ~flagged
    if inl.sum() > max_points:
        # Too many inliers to draw one by one: their density (a 2-D histogram); the anomalies
        # are still points. The first trace stays "inliers", with no points to select.
        fig.add_trace(go.Histogram2d(
            x=pc[inl, cx], y=pc[inl, cy], name="inliers", nbinsx=200, nbinsy=200,
            colorscale="Viridis", zmin=1, colorbar=dict(title="inliers per bin", x=1.02),
            hovertemplate="%{z} inliers<extra></extra>"))
    else:
        fig.add_trace(go.Scattergl(
            x=pc[inl, cx], y=pc[inl, cy], mode="markers", name="inliers", meta="cutout",
            customdata=points(inl), marker=dict(size=4, color=np.log10(np.clip(
                scores[inl], 1e-6, None)), colorscale="Viridis", opacity=0.6,
                colorbar=dict(title="log score", x=1.02)),
            hovertemplate=_HOVER))
    fig.add_trace(go.Scattergl(
        x=pc[flagged, cx], y=pc[flagged, cy], mode="markers", name="anomalies",
        customdata=points(flagged), meta="anomaly",
        marker=dict(size=8, color=ANOMALY_COLOUR, symbol="x", line=dict(width=1)),
        hovertemplate=_HOVER))
    fig.update_layout(xaxis_title=f"PC{cx + 1}", yaxis_title=f"PC{cy + 1}", height=560,
                      legend=dict(orientation="h", y=1.05),
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def frame_position(preview_png: bytes, nx: int, ny: int, x: float, y: float,
                   size: int) -> go.Figure:
    """The full frame (downsampled preview) with the cutout's box drawn on it."""
    import base64

    src = "data:image/png;base64," + base64.b64encode(preview_png).decode()
    fig = go.Figure()
    # The preview is stored top row first (row 0 at the top); FITS row 0 is at the bottom.
    fig.add_layout_image(dict(source=src, x=0, y=0, sizex=nx, sizey=ny, xref="x", yref="y",
                              sizing="stretch", layer="below", yanchor="bottom"))
    h = size / 2
    fig.add_shape(type="rect", x0=x - h, x1=x + h, y0=y - h, y1=y + h,
                  line=dict(color=ANOMALY_COLOUR, width=2))
    fig.add_scatter(x=[x], y=[y], mode="markers", marker=dict(color=ANOMALY_COLOUR, size=10,
                                                              symbol="circle-open"))
    # Equal pixels on both axes by shrinking the plot area ("domain"), not by widening the
    # x range beyond the frame.
    fig.update_xaxes(range=[0, nx], showgrid=False, title="x (column)", constrain="domain")
    fig.update_yaxes(range=[0, ny], showgrid=False, scaleanchor="x", title="y (row)",
                     constrain="domain")
    fig.update_layout(height=420, showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def cutout_image(patch: np.ndarray, stretch: str = "zscale", cmap: str = "gray",
                 arcsec_per_px: float | None = None, height: int = 330) -> go.Figure:
    """A cutout as a heat map with a colour bar in pixel values (ticks placed by the stretch)
    and axes in pixels from its centre; with ``arcsec_per_px``, the axes say the scale."""
    from reaper_core.cutouts import display_limits, normalize, stretch_positions

    s = patch.shape[0]
    z = normalize(patch, stretch)
    limits = display_limits(patch, stretch) or (0.0, 1.0)
    values = np.linspace(*limits, 5)
    pos = stretch_positions(values, limits, stretch)
    offsets = np.arange(s) - (s - 1) / 2
    fig = go.Figure(go.Heatmap(
        z=z, x=offsets, y=offsets, colorscale=_COLOURSCALES.get(cmap, cmap), zmin=0, zmax=1,
        customdata=np.asarray(patch, float),
        hovertemplate="Δx %{x:.1f}, Δy %{y:.1f} px: %{customdata:.5g}<extra></extra>",
        colorbar=dict(title="pixel value", tickvals=pos,
                      ticktext=[f"{v:.4g}" for v in values], thickness=12)))
    scale = (f"1 px = {arcsec_per_px:.3g}″ · {s * arcsec_per_px / 60:.3g}′ across"
             if arcsec_per_px else f"{s} × {s} px, no sky scale")
    fig.update_xaxes(title="Δx (px from the centre)", constrain="domain")
    fig.update_yaxes(title="Δy (px)", scaleanchor="x", constrain="domain")
    fig.update_layout(height=height, margin=dict(l=50, r=10, t=30, b=45),
                      title=dict(text=scale, font=dict(size=13), x=0.0, xanchor="left"))
    return fig


#: Matplotlib colour-map names offered by the pages, as Plotly colour scales.
_COLOURSCALES = {"gray": "gray", "viridis": "Viridis", "magma": "Magma", "inferno": "Inferno",
                 "cividis": "Cividis"}


def _binned(img: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """``img`` block-averaged so that no side exceeds ``max_side``; returns it and the block."""
    b = max(1, int(np.ceil(max(img.shape) / max_side)))
    if b == 1:
        return img, 1
    ny, nx = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    return np.nanmean(img[:ny, :nx].reshape(ny // b, b, nx // b, b), axis=(1, 3)), b


def stack_frame(img: np.ndarray, title: str, marks: list[dict], *, difference: bool = False,
                offset: tuple[int, int] = (0, 0), track: np.ndarray | None = None,
                max_side: int = 400, height: int = 420) -> go.Figure:
    """A frame (or its difference, on a symmetric red-blue scale) with events marked.

    ``marks``: dicts with ``x``, ``y`` (stored-array pixels), ``text``; ``offset``: (x0, y0) of
    the science region in the stored array, so that axes read stored pixels; ``track``: a
    mover's (x, y) points, shape (n, 2).
    """
    z, b = _binned(np.asarray(img, float), max_side)
    x0, y0 = offset
    xs = x0 + (np.arange(z.shape[1]) + 0.5) * b - 0.5
    ys = y0 + (np.arange(z.shape[0]) + 0.5) * b - 0.5
    finite = z[np.isfinite(z)]
    if difference:
        lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
        heat = dict(colorscale="RdBu_r", zmin=-lim, zmax=lim, zmid=0)
    else:
        lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)
        heat = dict(colorscale="gray", zmin=float(lo), zmax=float(hi))
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, colorbar=dict(title="e⁻/s", thickness=10),
                               hovertemplate="x %{x:.0f}, y %{y:.0f}: %{z:.4g} e⁻/s"
                                             "<extra></extra>", **heat))
    if track is not None and len(track):
        fig.add_trace(go.Scatter(x=track[:, 0], y=track[:, 1], mode="lines+markers",
                                 line=dict(color="#f2c14e", width=2), marker=dict(size=4),
                                 name="track", hoverinfo="skip"))
    if marks:
        fig.add_trace(go.Scatter(
            x=[m["x"] for m in marks], y=[m["y"] for m in marks], mode="markers",
            marker=dict(symbol="circle-open", size=16, line=dict(width=2),
                        color=ANOMALY_COLOUR), name="events",
            text=[m["text"] for m in marks], hovertemplate="%{text}<extra></extra>"))
    fig.update_xaxes(title="x (px)", constrain="domain")
    fig.update_yaxes(title="y (px)", scaleanchor="x", constrain="domain")
    fig.update_layout(height=height, showlegend=False, margin=dict(l=50, r=10, t=35, b=40),
                      title=dict(text=title, font=dict(size=13), x=0.0, xanchor="left"))
    return fig


def light_curve(lc: dict[str, np.ndarray], t_start: float, t_end: float,
                height: int = 320) -> go.Figure:
    """An event's difference flux with errors against time (BTJD), the event's span shaded and
    frames with quality bits drawn hollow."""
    t, f, e = lc["time"], lc["diff_flux"], lc["diff_flux_err"]
    ok = np.isfinite(f)
    flagged = lc["quality"] > 0
    fig = go.Figure()
    for sel, name, sym in ((ok & ~flagged, "difference flux", "circle"),
                           (ok & flagged, "flagged frames", "circle-open")):
        if sel.any():
            fig.add_trace(go.Scatter(
                x=t[sel], y=f[sel], mode="markers", name=name,
                marker=dict(size=5, symbol=sym, color=INLIER_COLOUR),
                error_y=dict(type="data", array=e[sel], visible=True, thickness=1, width=0),
                hovertemplate="BTJD %{x:.4f}: %{y:.4g} e⁻/s<extra></extra>"))
    fig.add_vrect(x0=t_start, x1=t_end if t_end > t_start else t_start + 1e-3,
                  fillcolor=ANOMALY_COLOUR, opacity=0.15, line_width=0)
    fig.update_xaxes(title="time (BTJD = BJD − 2457000, days)")
    fig.update_yaxes(title="difference flux (e⁻/s, 2-px aperture)")
    fig.update_layout(height=height, margin=dict(l=60, r=10, t=20, b=45),
                      legend=dict(orientation="h", y=1.08))
    return fig
