"""Difference imaging of a stack: an aligned reference, each frame's difference, and detection of
significant positive and negative residuals in it.

The reference is the per-pixel median of up to ``n_sample`` good frames spread through the stack,
each aligned to the middle one (phase correlation to 1/20 px on a central box, cubic-spline
shift: TESS jitters by hundredths of a pixel and jumps by tenths at momentum dumps). A frame's
difference is the aligned frame minus the reference, minus its own smooth sky (measured on the
difference, its brightest stars left out, where none biases it), minus a least-squares fit of
what a difference holds when nothing happened: the reference's throughput, gradients and
Laplacian, and the strongest patterns of the sample frames' residuals (what undersampled stars
leave at each pointing state). The noise of a difference is measured, not modelled: the
per-pixel scatter of those frames about the reference, smoothed and scaled to each frame's own
noise. Detection runs photutils ``detect_sources`` on the PSF-matched-filter signal-to-noise
map, once for each sign, so brightenings and dimmings, point-like and extended, are found
alike.

Memory holds the sample frames once, then one frame at a time: it does not grow with the
number of frames.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import StackError
from .progress import ProgressFn, noop

#: Gaussian sigma of the TESS PSF core, pixels (FWHM ≈ 2 px).
PSF_SIGMA = 0.85
#: Half-width of the matched filter's kernel, pixels.
KERNEL_HALF = 3
#: Matched-filter S/N above which a residual is a candidate detection.
DETECT_SIGMA = 4.0
#: Background mesh, pixels (scattered light varies on larger scales).
MESH = 64
#: Residual patterns learned from the reference's sample frames (see :func:`_basis`).
LEARNED_PATTERNS = 6
#: Fewest sample frames that patterns are learned from (a reference's full sample). In a
#: stack of fewer frames every frame is a sample, an event spans a fifth of them or more and is
#: learned as a pattern: fitted away, it was never found (a transient in 3 of 8 frames of a
#: real ISAAC field, 400σ; on simulated stacks of 8–16 frames, half the flares and supernovae).
MIN_PATTERN_FRAMES = 25
#: Quantile of a pixel's residual over the sample frames that sets where it is clipped.
PATTERN_QUANTILE = 0.8
#: Background mesh of a difference, pixels (it holds no stars: see
#: :func:`_residual_background`).
DIFF_MESH = 32
#: Share of the pixels, the reference's brightest, left out of a difference's background
#: (a larger share leaves too few sky pixels in the cells of crowded fields).
STAR_FRACTION = 0.2
#: Side of the central box used to measure shifts, pixels.
SHIFT_BOX = 256
#: Frames of fewer pixels (a TESScut cube) are small: more reference frames (they cost
#: nothing), no background mesh.
SMALL_FRAME = 64 * 64
#: Frames of fewer pixels (a TESScut cube of a few pixels a side) are tiny: no fitted
#: systematics or noise model, which their few pixels cannot constrain without swallowing the
#: signal. Chosen on simulated stacks 7–48 px a side and the real 5 × 5 cube: from 10 × 10 up
#: the fits find more events at every S/N, below it fewer.
TINY_FRAME = 10 * 10
#: Quantile of sharpness above which a frame's misfit is measured (:func:`_misfit_pixels`).
MISFIT_QUANTILE = 0.9
#: Pixels this close to a missing one are not searched (see :func:`difference`).
NEAR_MISSING_PX = 2
#: Smaller offsets are not worth interpolating, pixels.
MIN_SHIFT = 0.005
#: Largest pointing offset accepted between frames, pixels (jitter and momentum dumps).
MAX_SHIFT = 5.0

#: Pixels scipy pads an image by before its spline prefilter in "nearest" mode.
_SPLINE_PAD = 12

DETECTION_FIELDS = ("frame", "x", "y", "sign", "sigma", "flux", "area", "elongation")


def _psf_profile(sigma: float = PSF_SIGMA, half: int = KERNEL_HALF) -> np.ndarray:
    """The 1-D factor of :func:`psf_kernel`, shape (2 half + 1,), unit sum."""
    r = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def psf_kernel(sigma: float = PSF_SIGMA, half: int = KERNEL_HALF) -> np.ndarray:
    """Normalised Gaussian PSF kernel, shape (2 half + 1, 2 half + 1)."""
    g = _psf_profile(sigma, half)
    return np.outer(g, g)


def matched_filter(img: np.ndarray) -> np.ndarray:
    """``img`` (shape (ny, nx), unit noise) convolved with :func:`psf_kernel` and scaled to
    unit noise, zero beyond the edges, float32: the PSF-matched-filter S/N. The kernel is
    separable and symmetric: along the columns, sums of shifted rows; along the rows, one
    1-D pass (2048²: 0.03 s against the 2-D convolution's 0.14 s, equal to it to float32
    rounding)."""
    g = _psf_profile()
    h = len(g) // 2
    w = (g / (g**2).sum()).astype(np.float32)  # the 2-D kernel's root sum of squares → 1
    img = np.asarray(img, np.float32)
    ny = img.shape[0]
    padded = np.zeros((ny + 2 * h, *img.shape[1:]), np.float32)
    padded[h:ny + h] = img
    cols = w[h] * img
    tmp = np.empty_like(cols)
    for j in range(1, h + 1):
        np.add(padded[h - j:h - j + ny], padded[h + j:h + j + ny], out=tmp)
        tmp *= w[h + j]
        cols += tmp
    return ndimage.correlate1d(cols, g, axis=1, output=np.float32, mode="constant")


def _filled(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` with non-finite pixels replaced by its median, and the finite mask."""
    finite = np.isfinite(img)
    if finite.all():
        return img, finite
    med = float(np.median(img[finite])) if finite.any() else 0.0
    return np.where(finite, img, med).astype(np.float32), finite


def robust_std(a: np.ndarray, step: int = 1) -> float:
    """1.4826 × median absolute deviation of the finite values of ``a`` (every ``step``-th)."""
    v = np.ravel(a)[::step]
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def smooth_background(img: np.ndarray, mesh: int = MESH, filter_size: int = 3,
                      ignore: np.ndarray | None = None) -> np.ndarray:
    """Smooth background of ``img`` (sep's mesh background, its mesh median-filtered over
    ``filter_size`` cells; the median for small images), pixels where ``ignore`` (bool,
    shape of ``img``) is true left out of each cell's estimate."""
    import sep

    data, finite = _filled(np.ascontiguousarray(img, np.float32))
    if min(data.shape) < 2 * mesh:
        return np.full(data.shape, float(np.median(data)), np.float32)
    mask = ~finite if ignore is None else ~finite | ignore
    return sep.Background(data, mask=mask, bw=mesh, bh=mesh, fw=filter_size,
                          fh=filter_size).back().astype(np.float32)


def central_window(img: np.ndarray, box: int) -> np.ndarray:
    """The central ``box`` × ``box`` pixels of ``img`` (shape (ny, nx); at most all of it),
    missing ones filled with their median, less that median: what a phase correlation
    compares."""
    ny, nx = img.shape
    h = min(box, ny, nx) // 2
    a, _ = _filled(img[ny // 2 - h:ny // 2 + h, nx // 2 - h:nx // 2 + h])
    return a - np.median(a)


def measure_shift(anchor: np.ndarray, img: np.ndarray, box: int = SHIFT_BOX
                  ) -> tuple[float, float]:
    """(dy, dx) in pixels that moves ``img`` onto ``anchor`` (both shape (ny, nx)); (0, 0) for
    frames too small to measure (a TESScut cube of a few pixels)."""
    from skimage.registration import phase_cross_correlation

    if min(anchor.shape) < 24:
        return 0.0, 0.0
    shift, _, _ = phase_cross_correlation(central_window(anchor, box), central_window(img, box),
                                          upsample_factor=100, normalization=None)
    dy, dx = (float(s) for s in shift)
    if max(abs(dy), abs(dx)) > MAX_SHIFT:  # not a pointing jitter: refuse to move the frame
        return 0.0, 0.0
    return dy, dx


def _spline_shift(data: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``scipy.ndimage.shift(data, shift, order=3, mode="nearest")`` of a 2-D image, float32.

    One shift for every pixel makes the spline's interpolation a convolution: scipy's own
    prefilter (on the image padded as scipy pads it), then four B-spline weights along each
    axis — 2.7 × faster on a 2048² frame and equal to scipy's to float32 rounding (a test
    compares them). Shifts beyond the padding go to scipy."""
    if max(abs(shift[0]), abs(shift[1])) > _SPLINE_PAD - 3:
        return ndimage.shift(data, shift, order=3, mode="nearest").astype(np.float32)
    c = ndimage.spline_filter(np.pad(data, _SPLINE_PAD, mode="edge"), 3, output=np.float64,
                              mode="nearest")
    for axis, s in enumerate(shift):
        f = int(np.floor(-s))
        t = -s - f  # the source of pixel i is i − s = i + f + t
        w = np.array([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1,
                      t**3]) / 6.0
        full = ndimage.correlate1d(c, w, axis=axis, output=np.float64, mode="nearest")
        a = _SPLINE_PAD + f + 1  # correlate1d centres four weights on their third
        n = data.shape[axis]
        c = full[a:a + n] if axis == 0 else full[:, a:a + n]
    return c.astype(np.float32)


def align(img: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``img`` moved by ``shift`` (dy, dx) px with a cubic spline; NaN pixels stay NaN."""
    if max(abs(shift[0]), abs(shift[1])) < MIN_SHIFT:
        return img
    data, finite = _filled(img)
    out = _spline_shift(data, shift)
    if not finite.all():
        moved = ndimage.shift(finite.astype(np.float32), shift, order=1, mode="nearest")
        out[moved < 0.99] = np.nan
    return out


@dataclass
class Reference:
    """A stack's reference image and the noise of a difference against it.

    Attributes
    ----------
    image : ndarray, shape (ny, nx)
        Median of the aligned sample frames, e⁻/s.
    sigma : ndarray, shape (ny, nx)
        Noise of one frame's difference, e⁻/s per pixel (inf where pixels are missing).
    anchor : ndarray, shape (ny, nx)
        The frame every other is aligned to.
    frames : ndarray of int
        Frames the reference was made from.
    faint : ndarray of bool, shape (ny, nx)
        The fainter half of the pixels (mostly sky), where each frame's noise is measured.
    stars : ndarray of bool, shape (ny, nx)
        The brightest :data:`STAR_FRACTION` of the pixels, left out of a difference's
        background.
    basis : ndarray, shape (k, ny, nx)
        What a frame differs from the reference by when nothing happened (see
        :func:`_basis`); each difference has its best fit of them removed.
    fit_pixels : ndarray of int
        Flat indices of the brightest pixels, where that fit is made.
    sharp : ndarray, shape (ny, nx), or None
        ``|∇ref|² + (∇²ref)²``: where a misaligned or blurred frame leaves residuals.
    sharp_pixels : ndarray of int
        Flat indices of the pixels where ``sharp`` is largest, where each frame's misfit is
        measured (:func:`_misfit_pixels`, :func:`_frame_noise`).
    star_contrast : float
        How sharp its stars are (:func:`star_contrast`), what a cosmic ray must beat (NaN in
        a stack without cosmic rays: TESS's).
    """

    image: np.ndarray
    sigma: np.ndarray
    anchor: np.ndarray
    frames: np.ndarray
    faint: np.ndarray
    stars: np.ndarray
    basis: np.ndarray
    fit_pixels: np.ndarray
    sharp: np.ndarray | None
    sharp_pixels: np.ndarray
    star_contrast: float = float("nan")


def build_reference(stack, n_sample: int = 25, progress: ProgressFn = noop) -> Reference:
    """The reference of a :class:`~reaper_core.stacks.Stack` from up to ``n_sample`` good
    frames spread evenly through it (frames with severe quality bits are never used)."""
    good = np.flatnonzero(stack.good)
    if np.prod(stack.science_shape) < SMALL_FRAME:  # small frames: more samples cost nothing
        n_sample = max(n_sample, 200)
    pick = np.unique(good[np.linspace(0, len(good) - 1, min(n_sample, len(good)))
                          .round().astype(int)])
    aligned = np.empty((len(pick), *stack.science_shape), np.float32)
    for j, i in enumerate(pick):
        aligned[j] = stack.frame(int(i))
        progress("reference", (j + 1) / (2 * len(pick)), f"reading frame {j + 1}/{len(pick)}")
    # Frames without a pixel of data (a cadence a TESScut cube holds as NaN) are no sample.
    with_data = np.isfinite(aligned).any(axis=(1, 2))
    if not with_data.any():
        raise StackError(f"{stack.name}: none of its {len(stack)} frames holds any data "
                         "(every pixel is missing)")
    pick, aligned = pick[with_data], aligned[with_data]
    anchor = aligned[len(pick) // 2].copy()
    for j in range(len(pick)):
        aligned[j] = align(aligned[j], measure_shift(anchor, aligned[j]))
        aligned[j] -= smooth_background(aligned[j])
        progress("reference", 0.5 + (j + 1) / (2 * len(pick)),
                 f"reference frame {j + 1}/{len(pick)}")
    image = _nanmedian_frames(aligned)
    aligned -= image
    faint = np.isfinite(image) & (image <= np.nanmedian(image))
    stars = _star_pixels(image)
    for j in range(len(aligned)):
        aligned[j] -= _residual_background(aligned[j], stars)
    basis = _basis(image, aligned, stars)
    fit_pixels = _largest(np.nan_to_num(image, nan=0.0))
    for j in range(len(aligned)):
        aligned[j] -= _systematics(aligned[j], basis, fit_pixels)
    # (The per-pixel median warns of nothing, unlike np.nanmedian of an all-NaN pixel.)
    with np.errstate(all="ignore"):
        np.abs(aligned, out=aligned)
        k = len(pick)
        mad = 1.4826 * _nanmedian_frames(aligned) * np.sqrt(k / max(k - 1, 1))
    sigma = np.sqrt(_noise_model(image, np.nan_to_num(mad, nan=0.0) ** 2)).astype(np.float32)
    sigma[~np.isfinite(image)] = np.inf
    sharp = basis[1] ** 2 + basis[2] ** 2 + basis[3] ** 2 if len(basis) >= 4 else None
    return Reference(image=image.astype(np.float32), sigma=sigma, anchor=anchor, frames=pick,
                     faint=faint, stars=stars, basis=basis, fit_pixels=fit_pixels, sharp=sharp,
                     sharp_pixels=_misfit_pixels(sharp),
                     star_contrast=star_contrast(image) if stack.has_cosmic_rays else np.nan)


def _nanmedian_frames(frames: np.ndarray) -> np.ndarray:
    """``np.nanmedian(frames, axis=0)`` (shape (k, ny, nx) → (ny, nx); NaN where a pixel has
    no finite value), by one sort of each pixel's k values: NumPy's own goes through masked
    arrays for short axes (24 frames of 2048²: 5.8 s, this 2.3 s; equal to the bit)."""
    ordered = np.sort(frames, axis=0)  # NaN last
    n = np.count_nonzero(np.isfinite(frames), axis=0)
    low = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], 0)[0]
    high = np.take_along_axis(ordered, np.maximum(n // 2, 0)[None], 0)[0]
    del ordered
    median = low
    median += high
    median *= 0.5
    median[n == 0] = np.nan
    return median


def _star_pixels(image: np.ndarray) -> np.ndarray:
    """The brightest :data:`STAR_FRACTION` of ``image``'s pixels (bool, shape (ny, nx)): where
    a difference's residuals of stars would bias its background."""
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, bool)
    return finite & (image > np.quantile(image[finite], 1 - STAR_FRACTION))


def _misfit_pixels(sharp: np.ndarray | None) -> np.ndarray:
    """Flat indices of the pixels where a frame's misfit is measured (:func:`_frame_noise`):
    the sharpest tenth (:data:`MISFIT_QUANTILE`) of the 50,000 sharpest. Measured over all
    50,000 — most of a small frame, mostly sky — a frame's slightly higher sky noise was read
    as misfit and multiplied at every bright star (×10 in the noise there: a 16σ flare on a
    star in such a frame went unseen). None (no sharpness map): none."""
    if sharp is None:
        return np.zeros(0, int)
    top = _largest(sharp)
    values = sharp.ravel()[top]
    return top[values >= np.quantile(values, MISFIT_QUANTILE)]


def _largest(values: np.ndarray, n: int = 50_000) -> np.ndarray:
    """Flat indices of the ``n`` largest of ``values`` (all of them when fewer)."""
    flat = values.ravel()
    m = min(n, flat.size)
    return np.argpartition(flat, flat.size - m)[flat.size - m:]


def _basis(image: np.ndarray, residuals: np.ndarray, stars: np.ndarray | None = None,
           n_learned: int = LEARNED_PATTERNS) -> np.ndarray:
    """What a difference holds when nothing happened, shape (k, ny, nx): the reference, its x
    and y gradients and its Laplacian (throughput, residual shift, focus), and the
    ``n_learned`` strongest patterns of the sample frames' ``residuals`` (shape (K, ny, nx);
    what an undersampled PSF leaves after a sub-pixel shift), learned from
    :data:`MIN_PATTERN_FRAMES` or more. Empty for tiny frames (:data:`TINY_FRAME`), where a
    fit would swallow the signal."""
    if image.size < TINY_FRAME:
        return np.zeros((0, *image.shape), np.float32)
    ref = np.nan_to_num(image, nan=0.0).astype(np.float32)
    gy, gx = np.gradient(ref)
    analytic = [ref, gx, gy, ndimage.laplace(ref)]
    k = len(residuals)
    if k < MIN_PATTERN_FRAMES:
        return np.stack(analytic)
    R = np.nan_to_num(residuals.reshape(k, -1), nan=0.0)
    # An event in one sample frame is not a pattern: a pixel beyond 5 × what the frames
    # share there (the residual that PATTERN_QUANTILE of them leave: a residual that a fifth
    # of them share, a pointing state between two momentum dumps, is kept) is left out (0).
    # Clipped to that bound instead, a satellite's streak or an asteroid's trail of hundreds
    # of pixels stayed strong enough to be learned, and every other frame's fit of it left a
    # faint copy of the event, negative, that bins of frames add up.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        clip = 5 * 1.4826 * np.quantile(np.abs(R), PATTERN_QUANTILE, axis=0)
    R[np.abs(R) > clip] = 0.0
    gram = (R.astype(np.float64) @ R.T.astype(np.float64))
    w, v = np.linalg.eigh(gram)
    top = np.argsort(w)[::-1][:min(n_learned, max(k - 2, 0))]
    top = top[w[top] > 1e-9 * max(w.max(), 1e-30)]
    learned = ((v[:, top].T @ R) / np.sqrt(w[top])[:, None]).astype(np.float32)
    learned = learned.reshape(len(top), *image.shape)
    # Only their small scales: a pattern's smooth part (the sample frames' differing skies),
    # fitted at the bright pixels, would be laid over the whole frame.
    for pattern in learned:
        pattern -= _residual_background(pattern, stars)
    return np.concatenate([np.stack(analytic), learned])


def _frame_noise(diff: np.ndarray, ref: Reference) -> np.ndarray:
    """The reference's noise, raised near sharp sources by this frame's own misfit there:
    ``sigma² + c·sharp`` (:attr:`Reference.sharp`), with ``c ≥ 0`` from the excess scatter over
    the pixels where ``sharp`` is largest (:attr:`Reference.sharp_pixels`; a frame far from
    the anchor leaves larger residuals)."""
    if ref.sharp is None:
        return ref.sigma
    idx = ref.sharp_pixels
    sig = ref.sigma.ravel()[idx]
    ratio = robust_std(diff.ravel()[idx] / sig) ** 2  # 1 when the reference's noise holds
    c = max(ratio - 1.0, 0.0) * float(np.median(sig**2)) / max(
        float(np.median(ref.sharp.ravel()[idx])), 1e-12)
    if not np.isfinite(c) or c == 0:
        return ref.sigma
    return np.sqrt(ref.sigma**2 + c * ref.sharp)


def _residual_background(diff: np.ndarray, stars: np.ndarray | None = None) -> np.ndarray:
    """The smooth background of a difference (shape (ny, nx)): the sky and the scattered
    light that changed between the frame and the reference. Measured here rather than on the
    frame, whose crowded stars bias a mesh background differently as the sky level changes
    (leaving blobs tens of pixels wide); a difference holds no stars, so its mesh can be
    finer and unfiltered, and compact events are clipped out of each cell. A frame with room
    for one cell only (a TESScut cube 32–63 px a side) gets a plane fitted with 3σ clipping
    (scattered light is smooth over so few pixels); smaller ones nothing. Pixels where
    ``stars`` (bool, shape (ny, nx)) is true are left out of the mesh: the residuals of bright
    stars biased whole cells, and the difference then held a blob a cell wide."""
    if not too_small_for_mesh(diff):
        return smooth_background(diff, DIFF_MESH, filter_size=1, ignore=stars)
    if min(diff.shape) < DIFF_MESH:
        return np.zeros_like(diff)
    return _clipped_plane(diff)


def _clipped_plane(img: np.ndarray, n_iter: int = 3, clip: float = 3.0) -> np.ndarray:
    """The plane a + b·x + c·y fitted to ``img`` (shape (ny, nx); NaN ignored) by least
    squares, pixels beyond ``clip`` robust σ of the fit left out ``n_iter`` times; shape
    (ny, nx)."""
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    X = np.stack([np.ones(img.size), (xx.ravel() - nx / 2) / nx, (yy.ravel() - ny / 2) / ny], 1)
    y = img.ravel().astype(float)
    use = np.isfinite(y)
    if use.sum() < 3:
        return np.zeros_like(img)
    for _ in range(n_iter):
        coef = np.linalg.lstsq(X[use], y[use], rcond=None)[0]
        r = y - X @ coef
        use = np.isfinite(y) & (np.abs(r) <= clip * max(robust_std(r[use]), 1e-12))
    return (X @ coef).reshape(ny, nx).astype(img.dtype)


def too_small_for_mesh(img: np.ndarray) -> bool:
    """Whether ``img`` is too small for a difference's background mesh (a TESScut cube)."""
    return img.size < SMALL_FRAME or min(img.shape) < 2 * DIFF_MESH


def _systematics(diff: np.ndarray, basis: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Least-squares fit of ``basis`` (shape (k, ny, nx)) to ``diff`` over the pixels ``idx``
    (flat indices: where the reference is brightest); returns the fitted image, shape
    (ny, nx)."""
    if len(basis) == 0:
        return np.zeros_like(diff)
    y = np.nan_to_num(diff.ravel()[idx])
    X = basis.reshape(len(basis), -1)[:, idx].T.astype(np.float64)
    if not np.isfinite(X).all() or np.linalg.matrix_rank(X) < len(basis):
        return np.zeros_like(diff)
    # Robust: fit, drop the 5 % worst pixels (a flaring star, a passing asteroid), fit again.
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    r = np.abs(y - X @ coef)
    keep = r <= np.quantile(r, 0.95)
    coef = np.linalg.lstsq(X[keep], y[keep], rcond=None)[0]
    return np.tensordot(coef.astype(np.float32), basis, axes=1)


def _noise_model(image: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Variance of a difference per pixel, shape (ny, nx).

    ``measured`` (the sample frames' scatter, noisy) is replaced by a fit of
    ``a + b·ref + c·|∇ref|² + d·ref²`` (sky and read noise, photon noise of the sources, the
    residual a sub-pixel misalignment leaves, flat-field errors), except where the scatter
    smoothed over 5×5 pixels is more than twice the fit (a variable star, a bad column). Tiny
    frames (:data:`TINY_FRAME`) keep the scatter itself, smoothed over 3×3.
    """
    from scipy.optimize import nnls

    if image.size < TINY_FRAME:
        return np.maximum(ndimage.uniform_filter(measured, 3), 1e-12)
    ref = np.nan_to_num(image, nan=0.0)
    gy, gx = np.gradient(ref)
    pos = np.clip(ref, 0, None)
    predictors = np.stack([np.ones_like(ref), pos, gx**2 + gy**2, pos**2]).reshape(4, -1)
    scale = np.abs(predictors).max(axis=1)
    scale[scale == 0] = 1
    step = max(1, ref.size // 100_000)
    X = (predictors[:, ::step] / scale[:, None]).T
    y = measured.ravel()[::step]
    local = ndimage.uniform_filter(measured, 5)
    # Relative errors count alike: each pixel weighted by its neighbourhood's variance.
    w = 1.0 / np.maximum(local.ravel()[::step], 1e-12)
    use = np.isfinite(y) & np.isfinite(w)
    coef = nnls(X[use] * w[use, None], y[use] * w[use])[0]
    fit = X @ coef
    use &= y < 5 * np.maximum(fit, 1e-12)  # once more without variable pixels
    coef = nnls(X[use] * w[use, None], y[use] * w[use])[0]
    model = ((coef / scale) @ predictors).reshape(ref.shape)
    model = np.maximum(model, 0.25 * float(np.median(measured)) + 1e-12)
    return np.where(local > 2 * model, local, model)


@dataclass
class Difference:
    """One frame against the reference.

    Attributes
    ----------
    diff : ndarray, shape (ny, nx)
        Aligned frame − its smooth background − reference, e⁻/s.
    snr : ndarray, shape (ny, nx), or None
        PSF-matched-filter signal-to-noise of ``diff`` (unit noise); None when not asked for.
    sigma : ndarray, shape (ny, nx)
        Noise of ``diff`` per pixel, e⁻/s.
    shift : (dy, dx)
        Pixels the frame was moved by.
    """

    diff: np.ndarray
    snr: np.ndarray | None
    sigma: np.ndarray
    shift: tuple[float, float]


def difference(frame: np.ndarray, ref: Reference, shift: tuple[float, float] | None = None,
               matched: bool = True, cosmic: bool = False) -> Difference:
    """Align ``frame`` (shape (ny, nx), e⁻/s) to the reference and difference it; with
    ``matched`` False, without the matched-filter S/N (``snr`` None: a light curve needs only
    ``diff`` and ``sigma``). With ``cosmic``, the frame's pixels hit by cosmic rays
    (:func:`cosmic_rays`, found on its difference) are missing: the frame is differenced
    again without them (before its alignment, whose spline would spread a spike), and they
    are neither searched nor measured."""
    if frame.shape != ref.image.shape:
        raise ValueError(f"frame of shape {frame.shape} against a reference of "
                         f"{ref.image.shape}")
    shift = measure_shift(ref.anchor, frame) if shift is None else shift
    aligned = align(frame, shift)
    if too_small_for_mesh(aligned):
        aligned -= smooth_background(aligned)  # the frame's median
    # The sky is measured on the difference, where no star biases it (see
    # :func:`_residual_background`), before the systematics are fitted.
    diff = aligned - ref.image
    diff -= _residual_background(diff, ref.stars)
    diff -= _systematics(diff, ref.basis, ref.fit_pixels)
    sigma = _frame_noise(diff, ref)
    if cosmic and (hit := cosmic_rays(diff, sigma, ref.star_contrast)).any():
        # The aligned pixel (y, x) is the frame's (y − dy, x − dx), to a fraction of a pixel.
        yy, xx = np.nonzero(hit)
        ny, nx = frame.shape
        raw = frame.astype(np.float32, copy=True)
        raw[np.clip(np.round(yy - shift[0]).astype(int), 0, ny - 1),
            np.clip(np.round(xx - shift[1]).astype(int), 0, nx - 1)] = np.nan
        return difference(raw, ref, shift, matched)
    s = diff / sigma
    s[~np.isfinite(s)] = 0.0
    # Pixels a shift brought in from beyond the edge, and those whose background the mesh
    # extrapolates, are not searched; the matched filter sees up to its half-width inside.
    # The noise is scaled on the sky pixels inside them.
    edge = unsearched_edge(shift, frame.shape)
    sky = ref.faint.copy()
    if edge:
        for a in (s, sky):
            a[:edge], a[-edge:], a[:, :edge], a[:, -edge:] = 0, 0, 0, 0
    # Nor are the pixels beside missing ones (a TESScut cube's off-detector part, a masked
    # column): the alignment's spline rings there, and left false events along the border.
    missing = ~np.isfinite(aligned) | ~np.isfinite(ref.image)
    if missing.any():
        near = ndimage.binary_dilation(missing, iterations=NEAR_MISSING_PX)
        s[near] = 0.0
        sky &= ~near
    scale = sky_noise(s, sky)
    snr = None
    if matched:
        s /= scale
        snr = matched_filter(s)
        snr /= sky_noise(snr, sky)
    diff[~np.isfinite(diff)] = 0.0
    return Difference(diff=diff, snr=snr, sigma=sigma * scale, shift=shift)


def unsearched_edge(shift: tuple[float, float], shape: tuple[int, int]) -> int:
    """Width (px) of the edge a difference at ``shift`` (dy, dx, px) leaves out of the
    search: what the shift brought in from beyond the frame and what the matched filter sees
    past it — none in frames of 24 px or fewer a side (a TESScut cube), whose edges are
    all there is."""
    if min(shape) <= 24:
        return 0
    return int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 2 + psf_kernel().shape[0] // 2


def sky_noise(img: np.ndarray, sky: np.ndarray) -> float:
    """Robust σ of ``img`` (shape (ny, nx)) over its pixels where ``sky`` (bool, same shape)
    is set — every ``img.size`` // 200,000-th of them — or 1 where that is no usable scale
    (no sky pixel to measure it on: a frame with no data)."""
    v = robust_std(img[sky], max(1, img.size // 200_000))
    return v if np.isfinite(v) and v > 0 else 1.0


def detect(d: Difference, frame: int = 0, threshold: float = DETECT_SIGMA, n_pixels: int = 2
           ) -> dict[str, np.ndarray]:
    """Significant residuals of one difference, positive and negative.

    Returns columns :data:`DETECTION_FIELDS`, each shape (n,): ``x``, ``y`` the 0-based pixel of
    the peak (refined to a 3×3 centroid), ``sign`` +1 or −1, ``sigma`` the peak matched-filter
    S/N, ``flux`` the summed difference over the segment (e⁻/s, signed), ``area`` its pixels and
    ``elongation`` the ratio of its second-moment axes.
    """
    from photutils.segmentation import detect_sources

    parts = []
    for sign in (1, -1):
        img = sign * d.snr
        if img.max() < threshold:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            segm = detect_sources(img, threshold, n_pixels=n_pixels)
        if segm is None:
            continue
        # Statistics over the segments' pixels only (a few thousand of millions).
        pix = np.flatnonzero(segm.data)
        lab = np.searchsorted(segm.labels, segm.data.ravel()[pix])
        n = len(segm.labels)
        v = img.ravel()[pix]
        yy, xx = np.divmod(pix, img.shape[1])
        top = np.lexsort((-v, lab))
        first = top[np.r_[0, np.flatnonzero(np.diff(lab[top])) + 1]]
        peak = v[first]
        pos = np.column_stack([yy[first], xx[first]]).astype(float)
        area = np.bincount(lab, minlength=n).astype(float)
        w = np.clip(v, 0, None)
        m0 = np.maximum(np.bincount(lab, w, n), 1e-12)
        mx, my = np.bincount(lab, w * xx, n) / m0, np.bincount(lab, w * yy, n) / m0
        cxx = np.bincount(lab, w * xx * xx, n) / m0 - mx**2
        cyy = np.bincount(lab, w * yy * yy, n) / m0 - my**2
        cxy = np.bincount(lab, w * xx * yy, n) / m0 - mx * my
        tr, det = cxx + cyy, cxx * cyy - cxy**2
        root = np.sqrt(np.clip(tr**2 / 4 - det, 0, None))
        elong = np.sqrt(np.clip(tr / 2 + root, 1e-6, None) / np.clip(tr / 2 - root, 1e-6, None))
        flux = sign * np.bincount(lab, d.diff.ravel()[pix], n)
        y, x = _centroid(img, pos)
        idx = segm.labels
        parts.append(np.column_stack([np.full(len(idx), frame), x, y, np.full(len(idx), sign),
                                      peak, flux, area, elong]))
    table = np.concatenate(parts) if parts else np.zeros((0, len(DETECTION_FIELDS)))
    return {k: table[:, i] for i, k in enumerate(DETECTION_FIELDS)}


#: A cosmic ray's pixel is this many times brighter than the mean of its 8 neighbours less
#: the brightest of them (a hit of 2 or 3 pixels), or than its noise — and
#: :data:`COSMIC_OVER_STARS` times the field's stars' typical contrast, where that is more
#: (an undersampled PSF: TESS's stars reach about 4, Kepler's about 5 to 6).
COSMIC_CONTRAST = 6.0
#: Times the median contrast of the field's own stars (:func:`star_contrast`) that a cosmic
#: ray must also beat.
COSMIC_OVER_STARS = 1.6


def _neighbours(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the brightest of each pixel's 8 neighbours, the mean of the other 7), both shape of
    ``img`` (zero beyond its edge)."""
    ny, nx = img.shape
    pad = np.pad(img, 1)
    around = [pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    brightest = np.maximum.reduce(around)
    return brightest, (np.add.reduce(around) - brightest) / 7.0


def star_contrast(image: np.ndarray) -> float:
    """The median contrast of the stars of a sky-subtracted ``image`` (shape (ny, nx)): the
    peak of each local maximum over 20 × the image's robust σ over the mean of its 8
    neighbours less the brightest; NaN with fewer than 5 such stars."""
    img = np.nan_to_num(image, nan=0.0)
    brightest, rest = _neighbours(img)
    peak = (img >= brightest) & (img > 20 * robust_std(img, max(1, img.size // 200_000)))
    peak &= rest > 0
    if peak.sum() < 5:
        return float("nan")
    return float(np.median(img[peak] / rest[peak]))


def cosmic_rays(diff: np.ndarray, sigma: np.ndarray, stars: float = float("nan")
                ) -> np.ndarray:
    """Pixels of a difference ``diff`` (noise ``sigma`` per pixel; both shape (ny, nx)) hit by
    cosmic rays, bool, shape (ny, nx): positive and sharper than any source seen through the
    optics (:data:`COSMIC_CONTRAST`; ``stars``: the field's :func:`star_contrast`), with
    their 8 neighbours. A frame from the ground or a space telescope holds tens of them;
    TESS's FFIs are cleaned of them on board."""
    diff = np.nan_to_num(diff, nan=0.0)
    _, rest = _neighbours(diff)
    contrast = np.fmax(COSMIC_CONTRAST, COSMIC_OVER_STARS * stars)  # (NaN stars: the first)
    noise = np.nan_to_num(sigma, nan=np.inf)
    hit = diff > contrast * np.maximum(rest, noise)
    return ndimage.binary_dilation(hit, np.ones((3, 3), bool)) if hit.any() else hit


def _centroid(img: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3×3 centroids of ``img`` around integer peaks ``pos`` (rows of (y, x))."""
    ny, nx = img.shape
    py, px = pos[:, 0].astype(int), pos[:, 1].astype(int)
    sy, sx, sw = np.zeros(len(pos)), np.zeros(len(pos)), np.zeros(len(pos))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = np.clip(py + dy, 0, ny - 1), np.clip(px + dx, 0, nx - 1)
            w = np.clip(img[yy, xx], 0, None)
            sy += w * dy
            sx += w * dx
            sw += w
    sw[sw == 0] = 1
    return py + sy / sw, px + sx / sw
