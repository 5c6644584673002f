"""Sources: where to cut patches.

The file's own star table is used when it has one; segmentation of the background-subtracted
image (photutils' background, photutils' segmentation rule) finds everything else — stars,
but also streaks, blobs, bleed columns and hot-pixel clusters, since a segment need not be
point-like. A grid mode tiles the frame instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .fits_reader import FitsImage

# photutils, astropy and SciPy are imported where they are used, so that naming a method (the
# settings do) costs nothing.

#: Ways of choosing where to cut (see :func:`find_sources`).
SOURCE_METHODS = ("auto", "catalog", "segment", "grid")


@dataclass
class Sources:
    """Positions to cut around.

    Attributes
    ----------
    x, y : ndarray, shape (n,)
        0-based pixel coordinates (column, row) of each centre.
    origin : ndarray of str, shape (n,)
        ``catalog``, ``segment`` or ``grid``.
    segment : ndarray of int, shape (n,)
        The detected object each position belongs to, numbered from 1 within the image: the
        cells of a big galaxy or a bleed trail share one number. 0 where no segment holds the
        position (a catalogue star nobody detected, a grid tile).
    """

    x: np.ndarray
    y: np.ndarray
    origin: np.ndarray
    segment: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.segment is None:
            self.segment = np.zeros(np.shape(self.x), np.int64)

    def __len__(self) -> int:
        return int(self.x.size)


def estimate_background(
    data: np.ndarray, box_size: int = 64, filter_size: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped 2-D background and its RMS, both shape ``data.shape``, image units; NaN
    pixels are left out (filled with the median where too few boxes would be left).

    photutils' ``Background2D`` mesh (sigma-clipped medians and standard deviations in boxes
    of ``box_size`` px; :func:`_box_meshes`), median-filtered and up-sampled by cubic splines
    as photutils does, except where a sky gradient (scattered light) would fool it:

    - a trend goes on to the frame's edges (photutils holds the background flat within half a
      box of them) and through a last, partial box (whose median photutils replaces by its
      neighbours': too low on a rising sky);
    - the RMS is the scatter about the background, not about each box's own median: a sky
      rising across a box widens that box's scatter (10σ per 100 px: × 1.6 in 32 px boxes),
      which raised the detection threshold and lost faint objects under scattered light. A
      second pass measures the boxes again about the first background: their RMS is the
      noise's, and their medians correct the first pass's, which a ramp biases (each box's
      stars skew its clipped ramp differently).
    """
    box = int(min(box_size, max(8, min(data.shape) // 4)))
    finite = np.isfinite(data)
    mask = None if finite.all() else ~finite
    dtype = np.result_type(data.dtype, np.float32)
    try:
        level, scatter = _box_meshes(data, box, mask)
    except ValueError:  # photutils: no box is at least half unmasked
        data, mask = np.where(finite, data, np.nanmedian(data)).astype(dtype), None
        level, scatter = _box_meshes(data, box, mask)
    level = _median_filter_mesh(_trend_through_partial_boxes(level, data.shape, box),
                                filter_size, extend=True)
    background = _upsample(level, box, data.shape, dtype, extend=True)
    offset, rms = _box_meshes(data - background, box, mask)
    background += _upsample(_median_filter_mesh(offset, filter_size), box, data.shape, dtype)
    # Each is the noise and something more: the first the slope within the box, the second
    # the background's misfit (beside a hole, a step, a large galaxy). The smaller is nearer.
    rms = np.minimum(rms, scatter)
    return background, _upsample(_median_filter_mesh(rms, filter_size), box, data.shape, dtype)


def _box_meshes(image: np.ndarray, box: int, mask: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """photutils' ``Background2D`` meshes of ``image`` (ny, nx): the sigma-clipped (3σ) median
    and standard deviation in each ``box`` × ``box`` box (a box more than half masked or
    outside the image filled from its neighbours), each (ceil(ny / box), ceil(nx / box)).
    Measured on every second pixel of each axis where the box is even and at least 16 px (the
    same boxes, a quarter of the pixels — 1,024 of a 64 px box: 0.05 s instead of 0.2 s for a
    2048² frame)."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    step = 2 if box % 2 == 0 and box >= 16 else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = Background2D(
            image[::step, ::step], box // step, filter_size=1,
            mask=None if mask is None else mask[::step, ::step],
            sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground(),
            exclude_percentile=50.0,
        )
    return bkg.background_mesh, bkg.background_rms_mesh


def _trend_through_partial_boxes(mesh: np.ndarray, shape: tuple[int, int], box: int
                                 ) -> np.ndarray:
    """``mesh`` (my, mx) with its last row or column of boxes, where the frame fills only part
    of them, replaced by the linear trend of the two whole boxes before it (photutils fills a
    box less than half filled from its neighbours, and the median of one more than half filled
    stands for pixels nearer the frame than the box's centre)."""
    mesh = np.array(mesh, float)
    for axis, n in enumerate(shape):
        m = np.moveaxis(mesh, axis, 0)
        if n % box and m.shape[0] >= 3:
            m[-1] = 2 * m[-2] - m[-3]
    return mesh


def _extend_linearly(mesh: np.ndarray, pad: int) -> np.ndarray:
    """``mesh`` (my, mx) with ``pad`` cells added on every side, each the point reflection
    through the edge cell of the cell as far inside (2 m[0] − m[k]): a linear trend goes on.
    An axis of one cell is repeated."""
    for axis in (0, 1):
        m = np.moveaxis(mesh, axis, 0)
        n = m.shape[0]
        k = np.minimum(np.arange(1, pad + 1), n - 1)
        lo, hi = 2 * m[0] - m[k][::-1], 2 * m[-1] - m[n - 1 - k]
        mesh = np.moveaxis(np.concatenate([lo, m, hi]), 0, axis)
    return mesh


def _median_filter_mesh(mesh: np.ndarray, size: int, extend: bool = False) -> np.ndarray:
    """A background mesh (my, mx) median-filtered in ``size`` × ``size`` windows, the NaN
    outside it and in it ignored — what photutils does (``generic_filter`` calling a NaN
    median once per mesh point, 0.2 s for a 2048² frame's two meshes) as one NaN median over
    the stacked windows (under 1 ms); the same values. ``extend``: the mesh's linear trend
    goes on beyond its edges (:func:`_extend_linearly`) instead of nothing, so that an edge
    cell of a rising sky is not pulled towards its inner neighbours."""
    if size <= 1:
        return mesh
    h = size // 2
    my, mx = mesh.shape
    mesh = np.asarray(mesh, float)
    padded = (_extend_linearly(mesh, h) if extend
              else np.pad(mesh, h, constant_values=np.nan))
    windows = np.stack([padded[dy:dy + my, dx:dx + mx]
                        for dy in range(size) for dx in range(size)])
    return np.nanmedian(windows, axis=0)


def _upsample(mesh: np.ndarray, box: np.ndarray | int, shape: tuple[int, int],
              dtype, extend: bool = False) -> np.ndarray:
    """A background mesh (my, mx) up-sampled to ``shape`` as photutils does it — cubic splines
    (``scipy.ndimage.zoom``, reflected edges, grid mode), cropped, clipped to the mesh's range —
    but as two matrix products: the spline zoom is separable, so each axis's zoom is the zoom of
    the identity. 0.03 s for a 2048² frame instead of photutils' 0.4 s (the same to 1e-7).
    ``extend``: the mesh's linear trend goes on to the frame's edges (two cells added on each
    side by :func:`_extend_linearly`, the range clipped to theirs) instead of flattening
    within half a box of them."""
    from scipy.ndimage import zoom

    mesh = np.asarray(mesh, float)
    if np.ptp(mesh) == 0:
        return np.full(shape, mesh.min(), dtype=dtype)
    by, bx = np.broadcast_to(box, 2)
    pad = 2 if extend else 0
    if pad:
        mesh = _extend_linearly(mesh, pad)
    zy = zoom(np.eye(mesh.shape[0]), (by, 1), order=3, mode="reflect", grid_mode=True)
    zx = zoom(np.eye(mesh.shape[1]), (bx, 1), order=3, mode="reflect", grid_mode=True)
    zy, zx = zy[pad * by:pad * by + shape[0]], zx[pad * bx:pad * bx + shape[1]]
    # The full-size product in the output's own precision (float32 for float32 images: half
    # the memory, and memory first touched is slow on small virtual machines).
    out = np.matmul((zy @ mesh).astype(dtype), zx.T.astype(dtype))
    return np.clip(out, np.nanmin(mesh), np.nanmax(mesh), out=out)


def detect_segments(
    data: np.ndarray,
    *,
    nsigma: float = 3.0,
    nsigma_dark: float = 6.0,
    npixels: int = 5,
    box_size: int = 64,
    max_sources: int = 200_000,
    big_area: int = 80,
    cell: int = 12,
    peak_nsigma: float = 10.0,
    sky: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect connected objects above, and below, ``nsigma`` times the local background RMS.

    Objects brighter than the sky (stars, streaks, blobs) and darker than it (dead columns,
    over-subtracted holes) are both found; a lone pixel sharper than any star beside another
    object (a hot pixel, a one-pixel cosmic ray) is an object of its own
    (:func:`_sharp_peaks`), and so is a hole of missing pixels inside the frame
    (:func:`missing_regions`).

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        Image; NaN pixels are ignored.
    nsigma : float
        Detection threshold in units of the background RMS, per pixel.
    nsigma_dark : float
        The same for objects darker than the sky.
    npixels : int
        Minimum number of connected pixels of a detection.
    box_size : int
        Background mesh size, pixels.
    max_sources : int
        Keep at most this many detections, the brightest first.
    big_area, cell : int
        Segments larger than ``big_area`` pixels are also split into ``cell``-pixel cells,
        each yielding a position.
    peak_nsigma : float
        Local peaks inside a segment brighter than this (background RMS units) and more than
        3 px from every other position get a position of their own (deblending, cheaply).
    sky : (background, rms), optional
        The background and its RMS (:func:`estimate_background`), when already measured.

    Returns
    -------
    x, y : ndarray, shape (n,)
        Flux-weighted centroids, 0-based pixels.
    segment : ndarray of int, shape (n,)
        The object (≥ 1) each position belongs to: its segment, big segments deblended into
        the objects they merge (``sep``); the cells of one object share its number.
    """
    from astropy.convolution import Gaussian2DKernel
    from scipy import ndimage

    finite = np.isfinite(data)
    filled = np.asarray(data if finite.all() else np.where(finite, data, np.nanmedian(data)),
                        np.float32)
    # The sky with missing pixels left out, as :func:`science_sky` measures it.
    background, rms = sky if sky is not None else estimate_background(
        np.asarray(data, np.float32), box_size=box_size)
    sub = np.subtract(filled, background, dtype=np.float32)
    kernel = Gaussian2DKernel(1.0, x_size=5, y_size=5)
    kernel.normalize()
    # Edges extended (astropy's boundary="extend"), in float32 like the image.
    smoothed = ndimage.correlate(sub, kernel.array.astype(np.float32), mode="nearest")
    # The smoothed image's noise is lower than the raw noise by the kernel's norm.
    noise = np.multiply(rms, np.sqrt((kernel.array**2).sum()), dtype=np.float32)
    threshold = nsigma * noise
    xs, ys, labs = [], [], []
    # Bright objects, and dark defects (dead columns, holes). A crowded TESS sky is
    # confusion-limited — faint unresolved stars lift the background median — so the gaps
    # between stars dip below it; dark detections need a stricter threshold.
    for sign, thr in ((1.0, threshold), (-1.0, threshold * nsigma_dark / nsigma)):
        # (The bright pass on the arrays themselves: no copies of two frames.)
        x, y, lab = _segment_positions(smoothed if sign > 0 else -smoothed,
                                       sub if sign > 0 else -sub, thr, npixels,
                                       max_sources, big_area, cell,
                                       np.maximum(peak_nsigma * noise, thr), deblend=sign > 0)
        # Dark segments are numbered after the bright ones.
        offset = max((int(v.max()) for v in labs if v.size), default=0)
        xs.append(x)
        ys.append(y)
        labs.append(lab + offset)
    # Each a position and an object of its own: hot pixels and one-pixel cosmic rays beside a
    # star (part of its segment), and holes in the data (missing pixels inside the frame, which
    # the detection cannot see: they were filled with the median).
    singles = [_sharp_peaks(sub, smoothed, rms, np.concatenate(xs), np.concatenate(ys))]
    if not finite.all():
        singles.append(missing_regions(finite, npixels))
    x = np.concatenate([p[0] for p in singles])
    xs.append(x)
    ys.append(np.concatenate([p[1] for p in singles]))
    first = max((int(v.max()) for v in labs if v.size), default=0) + 1
    labs.append(first + np.arange(x.size, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(labs)


def missing_regions(finite: np.ndarray, npixels: int = 5, max_fraction: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Centres (0-based pixels, shape (m,) each) of the holes in an image: connected regions
    (8-connected) of at least ``npixels`` missing pixels (``finite`` False, shape (ny, nx))
    that do not touch the image's edge — what lies off a detector or outside a mosaic does —
    and hold at most ``max_fraction`` of the image. Each centre is the finite pixel nearest
    the hole's centroid (a window centred on a missing pixel is not cut)."""
    from scipy import ndimage

    labels, n = ndimage.label(~finite, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0), np.zeros(0)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    area = np.bincount(labels.ravel(), minlength=n + 1)
    keep = (area >= npixels) & (area <= max_fraction * finite.size)
    keep[edge] = False
    keep[0] = False
    if not keep.any():
        return np.zeros(0), np.zeros(0)
    # Each missing pixel's nearest finite pixel (an exact Euclidean distance transform).
    _, (near_y, near_x) = ndimage.distance_transform_edt(~finite, return_indices=True)
    xs, ys = [], []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or not keep[k]:
            continue
        py, px = np.nonzero(labels[box] == k)
        py, px = py + box[0].start, px + box[1].start
        i = np.argmin((px - px.mean()) ** 2 + (py - py.mean()) ** 2)
        xs.append(float(near_x[py[i], px[i]]))
        ys.append(float(near_y[py[i], px[i]]))
    return np.array(xs), np.array(ys)


def _sharp_peaks(sub: np.ndarray, smoothed: np.ndarray, rms: np.ndarray, x: np.ndarray,
                 y: np.ndarray, nsigma: float = 10.0, excess: float = 0.7,
                 min_sep: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Pixels sharper than any star, farther than ``min_sep`` px from every position (x, y)
    found so far, shape (m,) each: local maxima (3 × 3) of the background-subtracted ``sub``
    above ``nsigma`` × ``rms`` that stand above ``smoothed`` (``sub`` convolved with a σ = 1 px
    Gaussian) by more than ``excess`` of their value (a PSF of 2 px FWHM by about half, a lone
    pixel by 0.84: L.A.Cosmic's idea, in one line). Chosen on the real SPOC frame with hot
    pixels injected: beside a star, 12 % of them got no cutout of their own."""
    from scipy.spatial import cKDTree

    from .patch_kernels import window_maxima

    sharp = (sub > nsigma * rms) & (sub - smoothed > excess * sub)
    py, px = window_maxima(sub, sharp, 1)
    if px.size and x.size:
        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([px, py]))
        px, py = px[dist > min_sep], py[dist > min_sep]
    return px.astype(float), py.astype(float)


def _segment_positions(smoothed, sub, threshold, npixels, max_sources, big_area, cell,
                       peak_threshold, min_sep=3.0, deblend=False):
    """Positions of the segments of ``smoothed`` above ``threshold``, and the (with ``deblend``,
    deblended) segment each belongs to (see detect_segments)."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from .patch_kernels import cell_sums, window_maxima

    # photutils' detect_sources, without its loop over every segment (0.1 s of a crowded
    # 2048² frame): 8-connected pixels above the threshold, segments of fewer than
    # ``npixels`` dropped, the rest numbered from 1 in the same order.
    labels, n = ndimage.label(smoothed > threshold, structure=np.ones((3, 3), bool))
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= npixels
    keep[0] = False
    n_labels = int(np.count_nonzero(keep))
    if n_labels == 0:
        return np.empty(0), np.empty(0), np.empty(0, np.int64)
    if n_labels < n:
        number = np.zeros(n + 1, labels.dtype)
        number[keep] = np.arange(1, n_labels + 1, dtype=labels.dtype)
        labels = number[labels]
    index = np.arange(1, n_labels + 1)
    weights = np.clip(sub, 0, None)
    # Sums over each segment's pixels (bincount over the pixels in segments: 4x faster than
    # ndimage.sum_labels here).
    on = np.flatnonzero(labels)
    lab_on = labels.ravel()[on]
    w_on = weights.ravel()[on].astype(float)
    rows, cols = np.divmod(on, labels.shape[1])

    def per_segment(values: np.ndarray | None) -> np.ndarray:
        return np.bincount(lab_on, values, minlength=index.size + 1)[1:].astype(float)

    flux = per_segment(w_on)
    with np.errstate(invalid="ignore", divide="ignore"):
        yc = per_segment(w_on * rows) / flux
        xc = per_segment(w_on * cols) / flux
    # A large segment (merged objects, a long streak) is also split into cells of ``cell`` px,
    # each giving a flux-weighted position, so every part of it gets a cutout of its own.
    area = per_segment(None)
    lab = index.astype(np.int64)
    is_big = area > big_area
    big = index[is_big]
    if big.size:
        is_big = np.concatenate([[False], is_big])
        ukey, wsum, wx, wy, npx = cell_sums(labels, is_big, weights, cell)
        cx, cy = wx / wsum, wy / wsum
        ncells = (labels.shape[1] // cell + 1) * (labels.shape[0] // cell + 1)
        keep = npx >= npixels
        xc = np.concatenate([xc, cx[keep]])
        yc = np.concatenate([yc, cy[keep]])
        flux = np.concatenate([flux, wsum[keep]])
        lab = np.concatenate([lab, (ukey // ncells)[keep]])
    ok = np.isfinite(xc) & np.isfinite(yc)
    xc, yc, flux, lab = xc[ok], yc[ok], flux[ok], lab[ok]
    # A segment holding two objects (a flare beside a galaxy, a cosmic ray in a bright star's
    # halo) has its centroid between them: every local peak of the smoothed image farther
    # than ``min_sep`` px from all positions so far gets a position of its own.
    if xc.size:
        py, px = window_maxima(smoothed, (labels > 0) & (smoothed > peak_threshold), 2)
        if px.size:
            dist, _ = cKDTree(np.column_stack([xc, yc])).query(np.column_stack([px, py]))
            new = dist > min_sep
            xc = np.concatenate([xc, px[new]])
            yc = np.concatenate([yc, py[new]])
            flux = np.concatenate([flux, weights[py[new], px[new]]])
            lab = np.concatenate([lab, labels[py[new], px[new]].astype(np.int64)])
    if deblend and big.size:
        # Big segments often merge neighbours (a galaxy group, a star beside a galaxy, a
        # crowded TESS sky): multi-threshold deblending tells them apart, so their cells do not
        # count as one object. It only groups positions; where they are cut stays as above.
        iy = np.clip(np.round(yc).astype(np.int64), 0, labels.shape[0] - 1)
        ix = np.clip(np.round(xc).astype(np.int64), 0, labels.shape[1] - 1)
        obj = _deblended_at(smoothed, labels, is_big, threshold, npixels, iy, ix)
        lab = np.where(obj > 0, obj, lab + int(obj.max(initial=0)))
    if xc.size > max_sources:
        keep = np.argsort(flux)[::-1][:max_sources]
        xc, yc, lab = xc[keep], yc[keep], lab[keep]
    return xc, yc, lab


def _deblended_at(smoothed: np.ndarray, labels: np.ndarray, big: np.ndarray,
                  threshold: np.ndarray | float, npixels: int, iy: np.ndarray,
                  ix: np.ndarray) -> np.ndarray:
    """The deblended object at each position (``iy``, ``ix``; shape (n,) each, pixels) of the
    big segments (``big[labels]``, ``labels`` numbering the segments of ``smoothed``): ≥ 1,
    one number per object, 0 where the position is in none; int64, shape (n,).

    The big segments are deblended in two sets, odd and even segment numbers, each a ``sep``
    call of its own (:func:`_deblended_objects`): sep deblends each segment on its own, and
    holds the GIL throughout, so the second set is deblended in a child process meanwhile
    (:func:`~reaper_core.parallel.begin_in_child`; a 2048² FFI at the real sky's density:
    detection 1.33–1.43 s → 0.98–1.06 s). Always two sets, wherever it runs, so that the
    objects are the same on one core and on many: sep hands a segment's faint pixels to its
    objects at random (``gatherup``, a seed set anew at each call), so the sets change which
    object some of them fall to, not how good the grouping is.
    """
    import sep  # noqa: F401 - imported here, never first in the child

    from .parallel import begin_in_child

    odd = (labels & 1).astype(bool)
    in_big = big[labels]

    def objects_at(which: np.ndarray) -> np.ndarray:
        objects = _deblended_objects(np.where(which, smoothed, 0), threshold, npixels)
        return objects[iy, ix].astype(np.int64)

    second = begin_in_child(objects_at, in_big & ~odd)
    try:
        first = objects_at(in_big & odd)
    except BaseException:
        second.cancel()
        raise
    other = second.result()
    return np.where(first > 0, first, np.where(other > 0, other + first.max(initial=0), 0))


def _deblended_objects(smoothed: np.ndarray, threshold: np.ndarray | float,
                       npixels: int) -> np.ndarray:
    """Segmentation map of the objects above ``threshold`` (per pixel), deblended with
    SExtractor's multi-threshold method (``sep``, 32 levels, contrast 0.005); shape of
    ``smoothed``, 0 for sky, objects numbered from 1.

    Chosen by measurement over photutils' ``deblend_sources``: on a simulated 2048² FFI at the
    real sky's density (4,900 merged segments) 1.1 s against 12 s, the same grouping role.
    The caller zeroes the segments too small to deblend: sep then spends its time on the
    merged ones only (1.0 s instead of 1.4 s on that frame; sep holds the GIL throughout).
    """
    import sep

    data = np.ascontiguousarray(smoothed, dtype=np.float32)
    err = np.require(np.broadcast_to(threshold, data.shape), np.float32,
                     ["C_CONTIGUOUS", "WRITEABLE"])  # a copy only when it must be
    # sep's pixel stack holds the active object pixels over the threshold, so at most every
    # pixel above it; sep touches all of the stack (sized to the frame, 250 MB of a 2048²
    # frame's memory instead of 160). Should sep count otherwise, the frame's size, as before.
    sep.set_sub_object_limit(4096)
    for stack in (max(300_000, int(np.count_nonzero(data >= err)) + 1024), data.size):
        sep.set_extract_pixstack(max(300_000, stack))
        try:
            _, segmap = sep.extract(data, 1.0, err=err, minarea=npixels, filter_kernel=None,
                                    deblend_nthresh=32, deblend_cont=0.005, clean=False,
                                    segmentation_map=True)
            return segmap
        except Exception as exc:  # sep raises a bare Exception
            if "pixel buffer" not in str(exc) or stack >= data.size:
                raise
    raise AssertionError("unreachable")


def grid_positions(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a regular tiling with ``step`` pixels between them, shape (n,) each."""
    ny, nx = shape
    ys = np.arange(step / 2 - 0.5, ny - step / 2 + 0.5, step)
    xs = np.arange(step / 2 - 0.5, nx - step / 2 + 0.5, step)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def science_sky(image: FitsImage) -> tuple[np.ndarray, np.ndarray]:
    """Background and its RMS of ``image``'s science region (:func:`estimate_background`),
    each of the region's shape, image units."""
    region = image.valid or (slice(0, image.shape[0]), slice(0, image.shape[1]))
    return estimate_background(np.asarray(image.data[region], np.float32))


def find_sources(
    image: FitsImage,
    method: str = "auto",
    *,
    patch_size: int = 32,
    nsigma: float = 3.0,
    npixels: int = 5,
    merge_radius: float = 3.0,
    sky: tuple[np.ndarray, np.ndarray] | None = None,
) -> Sources:
    """Find the positions to cut around in ``image``.

    Parameters
    ----------
    image : FitsImage
        The image and, for TICA files, its star table.
    method : {"auto", "catalog", "segment", "grid"}
        ``auto`` uses the star table when there is one and adds every segmentation detection
        farther than ``merge_radius`` pixels from a catalogue star; ``catalog`` uses only the
        table; ``segment`` only detection; ``grid`` tiles the frame every ``patch_size`` pixels.
    patch_size : int
        Grid step for ``grid``, pixels.
    nsigma, npixels : float, int
        Detection threshold (background RMS units) and minimum area (pixels).
    merge_radius : float
        Detections this close to a catalogue star are the same object, pixels.
    sky : (background, rms), optional
        The science region's :func:`science_sky`, when already measured.

    Returns
    -------
    Sources
        Positions inside the image's science region.
    """
    region = image.valid or (slice(0, image.shape[0]), slice(0, image.shape[1]))
    oy, ox = region[0].start or 0, region[1].start or 0
    science = image.data[region]
    if method == "grid":
        x, y = grid_positions(science.shape, patch_size)
        return Sources(x + ox, y + oy, np.full(x.size, "grid"))
    if method not in SOURCE_METHODS:
        raise ValueError(f"unknown source method {method!r}; choose one of "
                         f"{', '.join(SOURCE_METHODS)}")
    from scipy.spatial import cKDTree

    xs, ys, origin, segment = [], [], [], []
    cat = image.catalog if method in ("auto", "catalog") else None
    if cat is not None and len(cat):
        inside = ((cat[:, 0] >= ox) & (cat[:, 0] < ox + science.shape[1])
                  & (cat[:, 1] >= oy) & (cat[:, 1] < oy + science.shape[0]))
        cat = cat[inside]
        xs.append(cat[:, 0])
        ys.append(cat[:, 1])
        origin.append(np.full(len(cat), "catalog"))
        segment.append(np.zeros(len(cat), np.int64))
    # Detection runs unless the method is "catalog" and the file has a star table.
    if not (method == "catalog" and cat is not None):
        sky = sky if sky is not None else science_sky(image)
        sx, sy, sl = detect_segments(science, nsigma=nsigma, npixels=npixels, sky=sky)
        sx, sy = sx + ox, sy + oy
        if cat is not None and len(cat) and sx.size:
            dist, near = cKDTree(cat).query(np.column_stack([sx, sy]))
            far = dist > merge_radius
            # A catalogue star takes the segment of the detection it stands for.
            segment[0][near[~far]] = sl[~far]
            sx, sy, sl = sx[far], sy[far], sl[far]
        xs.append(sx)
        ys.append(sy)
        origin.append(np.full(sx.size, "segment"))
        segment.append(sl)
    if not xs:
        return Sources(np.empty(0), np.empty(0), np.empty(0, dtype="<U7"))
    return Sources(np.concatenate(xs), np.concatenate(ys), np.concatenate(origin),
                   np.concatenate(segment))
