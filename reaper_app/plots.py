"""Plotly figures for the dashboard (no Streamlit here)."""

from __future__ import annotations

import numpy as np
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
