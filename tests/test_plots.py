import numpy as np

from reaper_app import plots
from reaper_core.cutouts import extract_cutouts
from reaper_core.detector import PCAAnomalyDetector
from reaper_core.embedders import get_embedder
from reaper_core.fits_reader import read_fits
from reaper_core.sources import find_sources


def test_score_histogram_spans_the_scores_and_colours_by_threshold(spoc_file):
    img = read_fits(spoc_file)
    src = find_sources(img, "segment")
    X = get_embedder("local").embed(extract_cutouts(img.data, src.x, src.y, 32, img.valid))
    det = PCAAnomalyDetector(n_components=5).fit(X)
    scores = det.train_anomaly_scores_
    fig = plots.score_histogram(scores, det.threshold_)
    lo, hi = fig.layout.xaxis.range  # log10 units on a log axis
    assert lo <= np.log10(scores.min()) and hi >= np.log10(scores.max())
    # No wasted decades beyond the data and the threshold.
    assert hi - np.log10(max(scores.max(), det.threshold_)) < 0.1
    assert np.log10(min(scores.min(), det.threshold_)) - lo < 0.1
    # The threshold's label sits on the line (log axes take log10 positions).
    (label,) = fig.layout.annotations
    assert label.x == np.log10(det.threshold_) and label.text.startswith("threshold")
    bar = fig.data[0]
    assert sum(bar.y) == len(scores)
    above = np.asarray(bar.x) > det.threshold_
    assert above.any() and (~above).any()
    assert set(np.asarray(bar.marker.color)[above]) == {plots.ANOMALY_COLOUR}
    assert set(np.asarray(bar.marker.color)[~above]) == {plots.INLIER_COLOUR}
    # A threshold far above every score still shows on the axis.
    far = plots.score_histogram(scores, scores.max() * 100)
    assert far.layout.xaxis.range[1] >= np.log10(scores.max() * 100)


def test_frame_position_keeps_the_frame_filling_its_axes():
    import io

    from PIL import Image

    from reaper_app.plots import frame_position

    buf = io.BytesIO()
    Image.new("L", (100, 80)).save(buf, format="PNG")
    fig = frame_position(buf.getvalue(), 1000, 800, 500.0, 400.0, 32)
    assert tuple(fig.layout.xaxis.range) == (0, 1000) and tuple(fig.layout.yaxis.range) == (0, 800)
    assert fig.layout.xaxis.constrain == "domain" and fig.layout.yaxis.scaleanchor == "x"


def test_pca_scatter_draws_many_inliers_as_a_density():
    rng = np.random.default_rng(0)
    n = 5000
    pc = rng.normal(size=(n, 3))
    ids = np.arange(1, n + 1)
    scores = rng.gamma(2.0, 1.0, n)
    flagged = scores > np.quantile(scores, 0.99)
    files = np.array(["<b>a</b>.fits"] * n, dtype=object)
    few = plots.pca_scatter(pc, ids, scores, flagged, files=files)
    assert [t.type for t in few.data] == ["scattergl", "scattergl"]
    many = plots.pca_scatter(pc, ids, scores, flagged, files=files, max_points=1000)
    assert [t.type for t in many.data] == ["histogram2d", "scattergl"]
    assert len(many.data[0].x) == int((~flagged).sum())
    # Every anomaly is still a point, named by id, score and (escaped) file.
    data = np.asarray(many.data[1].customdata, dtype=object)
    assert sorted(data[:, 0].astype(int)) == sorted(ids[flagged])
    assert set(data[:, 2]) == {"&lt;b&gt;a&lt;/b&gt;.fits"}


_HALF_IMPORTED = """
import sys, threading, time
import numpy as np
import plotly.graph_objects  # Plotly does not import pandas itself
assert "pandas" not in sys.modules
importer = threading.Thread(target=__import__, args=("pandas",))
importer.start()
while "pandas" not in sys.modules:  # another thread is in the middle of importing pandas
    time.sleep(0.0002)
from reaper_app import plots
plots.score_histogram(np.geomspace(1, 100, 500), 10.0).to_json()
importer.join()
"""


def test_a_figure_made_while_another_thread_imports_pandas_waits_for_it():
    """A figure built while a second browser session's thread is half-way through importing
    pandas: Plotly looks pandas up in ``sys.modules`` and, without the dashboard's plots
    importing it first, found the half-made module ("partially initialized module 'pandas'
    has no attribute 'Series'", a CI failure of the Timeline page)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _HALF_IMPORTED], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
