"""Loops over patches compiled with Numba: the sums behind the local embedder's statistics,
the median absolute deviation of sorted rows, the star fit's stamps added into an image
and read out of it, the simulator's pixel-integrated stars, detection's sums over the
cells of big segments and its local maxima, a stack's per-pixel sums of its frames' S/N,
and the stored patches' byte-shuffled integer codes.

The statistics (:func:`reaper_core.embedders.local.stats_features`) are moments, counts and
flux-weighted sums of a patch's pixels; NumPy computed each as a pass of its own over
(n, s, s) arrays with float64 temporaries (25 ms per 512 patches of 32², 4.5 CPU-s of a 2048²
frame's ingest). Numba compiles them into one loop per patch (6 ms), which runs without the
GIL, so the patch threads run side by side. Compiled once and cached on disk.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Columns of :func:`patch_sums`, in order.
SUMS = (
    "aperture", "total", "m2", "m3", "m4", "area3", "area10", "abs_total", "asymmetry",
    "w", "wx", "wy", "wxx", "wyy", "wxy", "n_peaks", "gini", "bright_w", "bright_wx",
    "bright_wy", "bright_wrr", "n_r20", "n_r80", "flat_top",
)


def patch_sums(z: np.ndarray, srt: np.ndarray, radius_index: np.ndarray, n_radii: int,
               aperture: np.ndarray) -> np.ndarray:
    """:data:`SUMS` of each patch.

    Parameters
    ----------
    z : ndarray, shape (n, s, s), float32
        Patches in units of their sky σ, sky subtracted.
    srt : ndarray, shape (n, s²), float32
        Each patch's pixels sorted ascending.
    radius_index : ndarray of int, shape (s, s)
        Each pixel's distinct distance from the patch centre, as an index into the ascending
        distances (``n_radii`` of them).
    aperture : ndarray of bool, shape (s, s)
        The central aperture.

    Returns
    -------
    ndarray, shape (n, len(SUMS)), float64. Moments are central moments of the pixel
    values (``m2``–``m4``); ``w…`` are sums of the positive pixels (w) weighted by x, y
    (column and row, pixels), x², y², xy; ``bright_…`` the same of the brightest pixels
    holding 20 % of that flux (``bright_wrr``: w (x² + y²)); ``n_r20`` / ``n_r80``: how many
    distances from the centre enclose less than 20 % / 80 % of it; ``gini``: Σ w_k (2k −
    s² − 1) over the sorted pixels (k from 1); ``n_peaks``: local maxima (3 × 3) above 5σ;
    ``flat_top``: pixels within 1 % of a peak above 10σ.
    """
    out = np.empty((len(z), len(SUMS)), np.float64)
    if len(z):
        _sums(np.ascontiguousarray(z, np.float32), np.ascontiguousarray(srt, np.float32),
              np.ascontiguousarray(radius_index, np.int64), int(n_radii),
              np.ascontiguousarray(aperture, np.bool_), out)
    return out


#: Sums may be re-associated (added in another order: SIMD lanes), nothing else: with the
#: branch-free first pass, the kernel takes 18–21 ms instead of 27–33 for 2,048 patches of 32²
#: (``stats_features`` 47 ms instead of 63), and gave the same float32 features, bit for bit,
#: on 4,096 patches of a simulated frame.
_REASSOCIATE = {"reassoc"}


@numba.njit(nogil=True, cache=True, fastmath=_REASSOCIATE)
def _sums(z, srt, radius_index, n_radii, aperture, out):  # pragma: no cover - compiled
    n, s, _ = z.shape
    npx = s * s
    ring = np.zeros(n_radii)
    for i in range(n):
        zi = z[i]
        total = 0.0
        ap = 0.0
        a3 = 0
        a10 = 0
        absz = 0.0
        asym = 0.0
        w = 0.0
        wx = 0.0
        wy = 0.0
        wxx = 0.0
        wyy = 0.0
        wxy = 0.0
        peaks = 0
        ring[:] = 0.0
        # Branch-free sums first (they vectorise), a row at a time for the weighted ones.
        for y in range(s):
            ry = s - 1 - y
            rw = 0.0
            rwx = 0.0
            rwxx = 0.0
            for x in range(s):
                v = zi[y, x]
                f = np.float64(v)
                total += f
                ap += f if aperture[y, x] else 0.0
                a3 += v > 3
                a10 += v > 10
                absz += abs(f)
                asym += abs(np.float64(v - zi[ry, s - 1 - x]))
                fp = max(f, 0.0)
                rw += fp
                rwx += fp * x
                rwxx += fp * x * x
            w += rw
            wx += rwx
            wy += rw * y
            wxx += rwxx
            wyy += rw * y * y
            wxy += rwx * y
        for y in range(s):
            for x in range(s):
                v = zi[y, x]
                if v > 0:
                    ring[radius_index[y, x]] += np.float64(v)
                if v > 5:
                    top = True
                    for yy in range(max(y - 1, 0), min(y + 2, s)):
                        for xx in range(max(x - 1, 0), min(x + 2, s)):
                            if zi[yy, xx] > v:
                                top = False
                    if top:
                        peaks += 1
        mean = total / npx
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for y in range(s):
            for x in range(s):
                d = np.float64(zi[y, x]) - mean
                d2 = d * d
                m2 += d2
                m3 += d2 * d
                m4 += d2 * d2
        # Gini numerator over the sorted positive values; the brightest pixels holding 20 %
        # of the positive flux, brightest first.
        si = srt[i]
        gini = 0.0
        for k in range(npx):
            gini += max(np.float64(si[k]), 0.0) * (2 * (k + 1) - npx - 1)
        acc = 0.0
        n_bright = 0
        for k in range(npx - 1, -1, -1):
            if si[k] > 0:
                acc += np.float64(si[k])
            if acc <= 0.2 * w:
                n_bright += 1
            else:
                break
        cut = np.inf
        if n_bright > 0:
            cut = max(np.float64(si[npx - n_bright]), 0.0)
        bw = 0.0
        bwx = 0.0
        bwy = 0.0
        bwrr = 0.0
        peak = np.float64(si[npx - 1])
        flat = 0
        for y in range(s):
            for x in range(s):
                f = np.float64(zi[y, x])
                if f > 0 and f >= cut:
                    bw += f
                    bwx += f * x
                    bwy += f * y
                    bwrr += f * (x * x + y * y)
                if peak > 10 and f >= peak - 0.01 * abs(peak):
                    flat += 1
        safe = w if w > 0 else 1.0
        acc = 0.0
        n20 = 0
        n80 = 0
        for r in range(n_radii):
            acc += ring[r]
            if acc / safe < 0.2:
                n20 += 1
            if acc / safe < 0.8:
                n80 += 1
        o = out[i]
        o[0] = ap
        o[1] = total
        o[2] = m2 / npx
        o[3] = m3 / npx
        o[4] = m4 / npx
        o[5] = a3
        o[6] = a10
        o[7] = absz
        o[8] = asym
        o[9] = w
        o[10] = wx
        o[11] = wy
        o[12] = wxx
        o[13] = wyy
        o[14] = wxy
        o[15] = peaks
        o[16] = gini
        o[17] = bw
        o[18] = bwx
        o[19] = bwy
        o[20] = bwrr
        o[21] = n20
        o[22] = n80
        o[23] = flat


def median_deviation_of_sorted(srt: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Median of |v − med| of each row of ``srt``, shape (n, m) sorted ascending, about its
    median ``med`` (n,), as ``median_along`` would give it after a second sort (the mean of
    the two middle values for even m), in ``srt``'s precision; shape (n,).

    The deviations are two sorted runs going out from the median, merged until the middle:
    O(m) a row, without sorting again.
    """
    srt = np.ascontiguousarray(srt)
    out = np.empty(len(srt), srt.dtype)
    if len(srt) and srt.shape[1]:
        _median_deviation(srt, np.ascontiguousarray(med, srt.dtype), out)
    elif len(srt):
        out[:] = np.nan
    return out


@numba.njit(nogil=True, cache=True)
def _median_deviation(srt, med, out):  # pragma: no cover - compiled
    n, m = srt.shape
    lo_rank = (m - 1) // 2
    for i in range(n):
        c = med[i]
        # Left run: c - srt[j] for j going down from the last value below or at c; right run:
        # srt[j] - c going up. Both ascending.
        right = 0
        while right < m and srt[i, right] < c:
            right += 1
        left = right - 1
        a = c
        b = c
        for rank in range(m // 2 + 1):
            if left >= 0 and (right >= m or c - srt[i, left] <= srt[i, right] - c):
                v = c - srt[i, left]
                left -= 1
            else:
                v = srt[i, right] - c
                right += 1
            if rank == lo_rank:
                a = v
            if rank == m // 2:
                b = v
        out[i] = (a + b) / 2 if m % 2 == 0 else a


def orientation_histograms(angle: np.ndarray, magnitude: np.ndarray, cell: int,
                           orientations: int) -> np.ndarray:
    """Gradient magnitude summed by cell and orientation bin, as scikit-image's HOG bins it.

    Parameters
    ----------
    angle : ndarray, shape (n, h, w), float32
        Gradient direction, radians in (−π, π] (``arctan2(g_row, g_col)``); orientation is
        the direction modulo π, in ``orientations`` equal bins.
    magnitude : ndarray, shape (n, h, w), float32
    cell : int
        Cell side, pixels (h and w are multiples of it).

    Returns
    -------
    ndarray, shape (n, h // cell, w // cell, orientations), float64.
    """
    n, h, w = angle.shape
    out = np.zeros((n, h // cell, w // cell, orientations))
    if n:
        _orientation_histograms(np.ascontiguousarray(angle, np.float32),
                                np.ascontiguousarray(magnitude, np.float32), cell,
                                orientations, np.float32(np.pi),
                                np.float32(orientations / np.pi), out)
    return out


@numba.njit(nogil=True, cache=True)
def _orientation_histograms(angle, magnitude, cell, orientations, pi, scale,
                            out):  # pragma: no cover - compiled
    n, h, w = angle.shape
    for i in range(n):
        for y in range(h):
            cy = y // cell
            for x in range(w):
                a = angle[i, y, x]
                if a < 0:
                    a = a + pi
                b = int(a * scale)
                if b >= orientations:  # exactly π: orientation 0, as 180° mod 180
                    b = 0
                out[i, cy, x // cell, b] += np.float64(magnitude[i, y, x])


def add_stamps(shape: tuple[int, int], ix0: np.ndarray, iy0: np.ndarray,
               values: np.ndarray) -> np.ndarray:
    """The sum of stamps ``values`` (n, k, k) whose first pixel is (``ix0``, ``iy0``) (shape
    (n,) each) on an image of ``shape``, float64; pixels off the image are dropped. The stamps
    are added in order, pixel by pixel, as ``np.bincount`` over their flat indices adds them,
    without those indices (n·k² of them) being made."""
    out = np.zeros(shape, np.float64)
    if len(values):
        _add_stamps(out, np.ascontiguousarray(ix0, np.int64), np.ascontiguousarray(iy0, np.int64),
                    np.ascontiguousarray(values, np.float64))
    return out


@numba.njit(nogil=True, cache=True)
def _add_stamps(out, ix0, iy0, values):  # pragma: no cover - compiled
    n, k, _ = values.shape
    ny, nx = out.shape
    for i in range(n):
        for a in range(k):
            y = iy0[i] + a
            if y < 0 or y >= ny:
                continue
            for b in range(k):
                x = ix0[i] + b
                if x >= 0 and x < nx:
                    out[y, x] += values[i, a, b]


def add_integrated_gaussians(shape: tuple[int, int], x: np.ndarray, y: np.ndarray,
                             weights: np.ndarray, sigmas: np.ndarray, half: int) -> np.ndarray:
    """Sources at 0-based positions ``x``, ``y`` (shape (n,)), each a sum of elliptical
    Gaussians (component j: total ``weights[:, j]``, widths ``sigmas[j]`` = (σx, σy) in px;
    ``weights`` shape (n, m), ``sigmas`` shape (m, 2)) integrated over the pixels of a
    (2 ``half`` + 1)² box about the nearest pixel; an image of ``shape``, float64, pixels off
    it dropped."""
    out = np.zeros(shape, np.float64)
    if len(x):
        _add_integrated_gaussians(out, np.ascontiguousarray(x, np.float64),
                                  np.ascontiguousarray(y, np.float64),
                                  np.ascontiguousarray(weights, np.float64),
                                  np.ascontiguousarray(sigmas, np.float64), int(half))
    return out


@numba.njit(nogil=True, cache=True)
def _add_integrated_gaussians(out, x, y, weights, sigmas, half):  # pragma: no cover - compiled
    n, m = weights.shape
    ny, nx = out.shape
    w = 2 * half + 1
    px = np.empty((m, w))
    py = np.empty((m, w))
    for i in range(n):
        ix, iy = int(np.round(x[i])), int(np.round(y[i]))
        for j in range(m):
            kx = 1.0 / (np.sqrt(2.0) * sigmas[j, 0])
            ky = 1.0 / (np.sqrt(2.0) * sigmas[j, 1])
            # The cumulative profile at the pixels' edges, each edge once.
            ex = math.erf((ix - half - 0.5 - x[i]) * kx)
            ey = math.erf((iy - half - 0.5 - y[i]) * ky)
            for a in range(w):
                nx_ = math.erf((ix - half + a + 0.5 - x[i]) * kx)
                ny_ = math.erf((iy - half + a + 0.5 - y[i]) * ky)
                px[j, a] = 0.5 * (nx_ - ex)
                py[j, a] = 0.5 * (ny_ - ey)
                ex, ey = nx_, ny_
        for a in range(w):
            yy = iy - half + a
            if yy < 0 or yy >= ny:
                continue
            for b in range(w):
                xx = ix - half + b
                if xx < 0 or xx >= nx:
                    continue
                v = 0.0
                for j in range(m):
                    v += weights[i, j] * py[j, a] * px[j, b]
                out[yy, xx] += v


def read_stamps(img: np.ndarray, ix0: np.ndarray, iy0: np.ndarray, k: int,
                fill: float = 0.0) -> np.ndarray:
    """The ``k`` × ``k`` stamps of ``img`` (ny, nx) whose first pixel is (``ix0``, ``iy0``)
    (shape (n,) each), ``fill`` where a stamp reaches beyond the image; shape (n, k, k), in
    ``img``'s dtype."""
    out = np.empty((len(ix0), k, k), img.dtype)
    if len(ix0):
        _read_stamps(np.ascontiguousarray(img), np.ascontiguousarray(ix0, np.int64),
                     np.ascontiguousarray(iy0, np.int64), img.dtype.type(fill), out)
    return out


@numba.njit(nogil=True, cache=True)
def _read_stamps(img, ix0, iy0, fill, out):  # pragma: no cover - compiled
    n, k, _ = out.shape
    ny, nx = img.shape
    for i in range(n):
        for a in range(k):
            y = iy0[i] + a
            for b in range(k):
                x = ix0[i] + b
                if y >= 0 and y < ny and x >= 0 and x < nx:
                    out[i, a, b] = img[y, x]
                else:
                    out[i, a, b] = fill


def cell_sums(labels: np.ndarray, big: np.ndarray, weights: np.ndarray, cell: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sums over the pixels of the big segments, cut into ``cell``-pixel cells.

    Parameters
    ----------
    labels : ndarray of int, shape (ny, nx)
        Segmentation map, 0 for sky.
    big : ndarray of bool, shape (n_labels + 1,)
        Which labels to cut into cells (``big[0]`` False).
    weights : ndarray, shape (ny, nx), float32
        Each pixel's weight (its flux above the sky, ≥ 0); 10⁻⁶ is added to each.
    cell : int
        Cell side, pixels.

    Returns
    -------
    key : ndarray of int64, shape (m,)
        Each (segment, cell) present, ascending: label · n_cells + cell row · n_cell_columns
        + cell column, where n_cell_columns = nx // cell + 1 and n_cells = n_cell_columns ·
        (ny // cell + 1).
    w, wx, wy : ndarray of float64, shape (m,)
        Σ w, Σ w · column, Σ w · row over the segment's pixels in the cell.
    n : ndarray of int64, shape (m,)
        Their count.

    Bit for bit the sums of ``np.unique`` over the pixels' keys and ``np.bincount`` over
    the pixels in row-major order (they are added in that order), without arrays the size
    of the segments' pixels: 0.25 s less of a crowded 2048² frame's detection.
    """
    label_of = np.flatnonzero(big).astype(np.int64)
    rank = np.full(len(big), -1, np.int64)
    rank[label_of] = np.arange(label_of.size)
    key, sums, n = _cell_sums(np.ascontiguousarray(labels), rank, label_of,
                              np.ascontiguousarray(weights, np.float32), int(cell))
    order = np.argsort(key)
    return key[order], sums[order, 0], sums[order, 1], sums[order, 2], n[order]


@numba.njit(nogil=True, cache=True)
def _cell_sums(labels, rank, label_of, weights, cell):  # pragma: no cover - compiled
    ny, nx = labels.shape
    ncx = nx // cell + 1
    ncells = ncx * (ny // cell + 1)
    nbig = label_of.size
    acc = np.zeros((nbig * ncx, 3), np.float64)  # the cells of one row of cells at a time
    cnt = np.zeros(nbig * ncx, np.int64)
    touched = np.empty(nbig * ncx, np.int64)
    size = 1024
    key = np.empty(size, np.int64)
    sums = np.empty((size, 3), np.float64)
    n = np.empty(size, np.int64)
    m = 0
    eps = np.float32(1e-6)
    for y0 in range(0, ny, cell):
        nt = 0
        for y in range(y0, min(y0 + cell, ny)):
            for x in range(nx):
                r = rank[labels[y, x]]
                if r < 0:
                    continue
                k = r * ncx + x // cell
                if cnt[k] == 0:
                    touched[nt] = k
                    nt += 1
                w = np.float64(weights[y, x] + eps)
                acc[k, 0] += w
                acc[k, 1] += w * np.float64(x)
                acc[k, 2] += w * np.float64(y)
                cnt[k] += 1
        if m + nt > size:
            while m + nt > size:
                size *= 2
            key2 = np.empty(size, np.int64)
            sums2 = np.empty((size, 3), np.float64)
            n2 = np.empty(size, np.int64)
            key2[:m] = key[:m]
            sums2[:m] = sums[:m]
            n2[:m] = n[:m]
            key, sums, n = key2, sums2, n2
        for t in range(nt):
            k = touched[t]
            key[m] = label_of[k // ncx] * ncells + (y0 // cell) * ncx + k % ncx
            sums[m, 0] = acc[k, 0]
            sums[m, 1] = acc[k, 1]
            sums[m, 2] = acc[k, 2]
            n[m] = cnt[k]
            acc[k, 0] = 0.0
            acc[k, 1] = 0.0
            acc[k, 2] = 0.0
            cnt[k] = 0
            m += 1
    return key[:m], sums[:m], n[:m]


def window_maxima(img: np.ndarray, where: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (row-major order, shape (m,) each) of the pixels of ``where`` (bool,
    shape of ``img``) that are the maximum of their (2 ``half`` + 1)² window of ``img``, ties
    included; a window is clipped at the image's edge (what ``scipy.ndimage.maximum_filter``'s
    reflected edge gives too: a reflected neighbour is one inside the window)."""
    rows, cols, m = _window_maxima(np.ascontiguousarray(img), np.ascontiguousarray(where, np.bool_),
                                   int(half))
    return rows[:m], cols[:m]


@numba.njit(nogil=True, cache=True)
def _window_maxima(img, where, half):  # pragma: no cover - compiled
    ny, nx = img.shape
    m = 0
    for y in range(ny):
        for x in range(nx):
            m += where[y, x]
    rows = np.empty(m, np.int64)
    cols = np.empty(m, np.int64)
    m = 0
    for y in range(ny):
        for x in range(nx):
            if not where[y, x]:
                continue
            v = img[y, x]
            top = True
            for yy in range(max(y - half, 0), min(y + half + 1, ny)):
                for xx in range(max(x - half, 0), min(x + half + 1, nx)):
                    if img[yy, xx] > v:
                        top = False
                        break
                if not top:
                    break
            if top:
                rows[m] = y
                cols[m] = x
                m += 1
    return rows, cols, m


def add_to_coherence(snr: np.ndarray, prev: np.ndarray | None, s1: np.ndarray, s2: np.ndarray,
                     d2: np.ndarray, peak: np.ndarray, peak_frame: np.ndarray,
                     frame: int) -> None:
    """One frame's S/N map ``snr`` (float32, shape (ny, nx)) added in place, in one pass, to a
    stack's per-pixel sums (:class:`reaper_core.events.Coherence`): ``s1`` += snr, ``s2`` +=
    snr², ``d2`` += (snr − ``prev``)² (none without a previous frame), and where |snr| beats
    |``peak``|, ``peak`` = snr and ``peak_frame`` = ``frame``. Arrays float32 but
    ``peak_frame`` int32, all of one shape and C-contiguous."""
    _add_to_coherence(snr, snr if prev is None else prev, prev is not None, s1, s2, d2, peak,
                      peak_frame, int(frame))


@numba.njit(nogil=True, cache=True)
def _add_to_coherence(snr, prev, has_prev, s1, s2, d2, peak, peak_frame,
                      frame):  # pragma: no cover - compiled
    ny, nx = snr.shape
    for y in range(ny):
        for x in range(nx):
            v = snr[y, x]
            s1[y, x] += v
            s2[y, x] += v * v
            if has_prev:
                step = v - prev[y, x]
                d2[y, x] += step * step
            if abs(v) > abs(peak[y, x]):
                peak[y, x] = v
                peak_frame[y, x] = frame


def shuffled_codes(flat: np.ndarray, lo: np.ndarray, step: np.ndarray, bad: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Patches as stored (:func:`reaper_core.store.pack_patches`): integer codes
    rint((v − ``lo``) / ``step``) − 32,767 of each row of ``flat`` (n, m), float32, with each
    row's bytes grouped by significance (its low bytes, then the next, …).

    A row spanning at most 65,533 steps (computed in float32) is stored in 16 bits, NaN
    (``bad``, shape (n, m)) as −32,768; a wider one (a bright star: a third of a crowded
    frame's patches) in 32 bits, computed in float64, clipped to ±(2³¹ − 1), NaN −2³¹.

    Returns the rows one after the other (uint8, shape (total,)) and each row's byte offset
    and length (int64, shape (n, 2)). One pass without the GIL instead of NumPy's passes over
    (n, m) temporaries, twice for the wide rows, and a copy a row.
    """
    flat = np.ascontiguousarray(flat, np.float32)
    n, m = flat.shape
    out = np.empty(4 * n * m, np.uint8)
    segments = np.zeros((n, 2), np.int64)
    if flat.size:
        total = _shuffled_codes(flat, np.ascontiguousarray(lo, np.float32),
                                np.ascontiguousarray(step, np.float32),
                                np.ascontiguousarray(bad, np.bool_), out, segments)
        out = out[:total]
    return out, segments


@numba.njit(nogil=True, cache=True)
def _shuffled_codes(flat, lo, step, bad, out, segments):  # pragma: no cover - compiled
    n, m = flat.shape
    at = 0
    for i in range(n):
        top = np.float32(-np.inf)
        for j in range(m):
            scaled = (flat[i, j] - lo[i]) / step[i]
            if scaled > top:
                top = scaled
        if top <= 65533:
            for j in range(m):
                if bad[i, j]:
                    code = -32768
                else:
                    code = np.int64(np.rint((flat[i, j] - lo[i]) / step[i])) - 32767
                u = code & 0xFFFF
                out[at + j] = u & 0xFF
                out[at + m + j] = u >> 8
            width = 2
        else:
            lo64 = np.float64(lo[i])
            step64 = np.float64(step[i])
            for j in range(m):
                if bad[i, j]:
                    code = -2147483648
                else:
                    c = np.rint((np.float64(flat[i, j]) - lo64) / step64) - 32767
                    c = min(max(c, -2147483647.0), 2147483647.0)
                    code = np.int64(c)
                u = code & 0xFFFFFFFF
                for b in range(4):
                    out[at + b * m + j] = (u >> (8 * b)) & 0xFF
            width = 4
        segments[i, 0] = at
        segments[i, 1] = width * m
        at += width * m
    return at
