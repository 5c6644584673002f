"""A report to keep: the run's figures for a paper or a talk (seaborn and matplotlib).

Three pages: (1) the score distribution per sector/camera/CCD with the threshold, the anomaly
rate over the detector in pixel coordinates, and the run's settings; (2) the first principal
components as a pair plot coloured by flag; (3) a contact sheet of the top cutouts, captioned.
Written as one multi-page PDF, or as one PNG per page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Inliers drawn in the pair plot at most (every anomaly is drawn).
MAX_INLIERS = 4000


@dataclass
class ReportData:
    """What the report shows, gathered by the service.

    Attributes
    ----------
    table : DataFrame
        One row per cutout (``cutout_id, file, x, y, sector, camera, ccd, score``), with
        ``is_anomaly``.
    threshold : float
        Anomaly-score threshold.
    pcs : ndarray, shape (n, k)
        Principal-component coordinates of the cutouts ``pc_ids``.
    pc_ids : ndarray, shape (n,)
    top : list of (cutout id, patch (s, s), caption)
        The highest-scoring cutouts, best first.
    settings : dict
        What to print about the run (model, embedder, threshold, database masked).
    """

    table: pd.DataFrame
    threshold: float
    pcs: np.ndarray
    pc_ids: np.ndarray
    top: list[tuple[int, np.ndarray, str]]
    settings: dict[str, str]


def _group(table: pd.DataFrame) -> pd.Series:
    def one(s, c, d):
        return "no TESS pointing" if pd.isna(s) and pd.isna(c) else (
            f"sector {s if pd.notna(s) else '?'} · cam {c if pd.notna(c) else '?'} · "
            f"CCD {d if pd.notna(d) else '?'}")

    return pd.Series([one(s, c, d) for s, c, d in zip(table["sector"], table["camera"],
                                                        table["ccd"], strict=True)],
                     index=table.index)


def _page_overview(data: ReportData):
    import matplotlib.pyplot as plt
    import seaborn as sns

    t = data.table[np.isfinite(data.table["score"]) & (data.table["score"] > 0)].copy()
    t["log10 score"] = np.log10(t["score"])
    t["where"] = _group(t)
    fig = plt.figure(figsize=(11.7, 8.3))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2], hspace=0.35, wspace=0.25)
    ax = fig.add_subplot(grid[0, 0])
    sns.histplot(t, x="log10 score", hue="where", element="step", stat="density",
                 common_norm=False, bins=60, ax=ax)
    ax.axvline(np.log10(data.threshold), color="0.3", ls="--")
    ax.text(np.log10(data.threshold), ax.get_ylim()[1] * 0.95, " threshold", color="0.3",
            va="top")
    ax.set_title("Score distribution by sector, camera and CCD")
    ax = fig.add_subplot(grid[0, 1])
    bins = 16
    xe = np.linspace(0, max(float(t["x"].max()), 1.0) + 1, bins + 1)
    ye = np.linspace(0, max(float(t["y"].max()), 1.0) + 1, bins + 1)
    total, _, _ = np.histogram2d(t["y"], t["x"], [ye, xe])
    flagged, _, _ = np.histogram2d(t["y"][t["is_anomaly"]], t["x"][t["is_anomaly"]], [ye, xe])
    rate = np.where(total > 0, 100 * flagged / np.maximum(total, 1), np.nan)
    sns.heatmap(pd.DataFrame(rate[::-1], index=[f"{v:.0f}" for v in ye[-2::-1]],
                             columns=[f"{v:.0f}" for v in xe[:-1]]),
                cmap="magma", cbar_kws={"label": "anomalies, % of cutouts"}, ax=ax,
                xticklabels=4, yticklabels=4)
    ax.set_xlabel("x (column), px")
    ax.set_ylabel("y (row), px")
    ax.set_title("Anomaly rate over the detector")
    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    n, k = len(data.table), int(data.table["is_anomaly"].sum())
    lines = [f"{n:,} cutouts from {data.table['file'].nunique():,} files; {k:,} anomalies "
             f"({100 * k / max(n, 1):.2f} %)"]
    lines += [f"{key}: {value}" for key, value in data.settings.items()]
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=9)
    fig.suptitle("Anomaly Reaper — run report", fontsize=14)
    return fig


def _page_components(data: ReportData):
    import seaborn as sns

    k = min(3, data.pcs.shape[1])
    flags = pd.Series(data.table.set_index("cutout_id")["is_anomaly"]).reindex(
        data.pc_ids).fillna(False).to_numpy(bool)
    df = pd.DataFrame(data.pcs[:, :k], columns=[f"PC{i + 1}" for i in range(k)])
    df["cutout"] = np.where(flags, "anomaly", "inlier")
    rng = np.random.default_rng(0)
    inl = np.flatnonzero(~flags)
    keep = np.sort(np.r_[np.flatnonzero(flags),
                         rng.choice(inl, min(len(inl), MAX_INLIERS), replace=False)])
    grid = sns.pairplot(df.iloc[keep], hue="cutout", hue_order=["inlier", "anomaly"],
                        palette={"inlier": "#4c78a8", "anomaly": "#e4572e"},
                        plot_kws={"s": 8, "alpha": 0.6, "linewidth": 0}, corner=True,
                        height=2.6)
    grid.figure.suptitle(f"Principal components, coloured by flag (every anomaly, "
                         f"{min(len(inl), MAX_INLIERS):,} of {len(inl):,} inliers)", y=1.02)
    return grid.figure


def _page_contact_sheet(data: ReportData, columns: int = 6):
    import matplotlib.pyplot as plt
    from astropy.visualization import ImageNormalize, ZScaleInterval

    n = max(len(data.top), 1)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(11.7, 2.1 * rows + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_cid, patch, caption) in zip(axes.ravel(), data.top, strict=False):
        p = np.nan_to_num(patch, nan=float(np.nanmedian(patch)))
        ax.imshow(p, origin="lower", cmap="gray",
                  norm=ImageNormalize(p, interval=ZScaleInterval()))
        ax.set_title(caption, fontsize=7)
    fig.suptitle(f"The {len(data.top)} highest-scoring cutouts (zscale)", fontsize=13)
    fig.tight_layout()
    return fig


def write_report(data: ReportData, path: str | Path) -> list[Path]:
    """Write the report: a PDF of three pages (``.pdf``), or one PNG per page (``.png``:
    ``name-1.png`` …). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    pages = [_page_overview(data), _page_components(data), _page_contact_sheet(data)]
    try:
        if path.suffix.lower() == ".pdf":
            with PdfPages(path) as pdf:
                for fig in pages:
                    pdf.savefig(fig, bbox_inches="tight")
            return [path]
        if path.suffix.lower() != ".png":
            raise ValueError(f"a report is a .pdf or .png file, not {path.name}")
        out = []
        for i, fig in enumerate(pages, 1):
            out.append(path.with_name(f"{path.stem}-{i}.png"))
            fig.savefig(out[-1], dpi=110, bbox_inches="tight")
        return out
    finally:
        for fig in pages:
            plt.close(fig)
