"""Thresholds: the one place where the ways of turning anomaly scores into flags are defined.

A threshold is chosen by a *mode* and a *value* and applies to anomaly scores (higher is odder):

``sigma``       mean + k·σ of the reference scores (k is the value)
``percentile``  the given percentile (0–100) of the reference scores
``absolute``    the value itself, a score

The reference scores are the model's training scores (every cutout it was fitted on). This
module needs only NumPy, so settings and the command line can check a mode without loading the
detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The threshold modes, in the order they are offered.
THRESHOLD_MODES = ("sigma", "percentile", "absolute")

#: What each mode's value means, for labels and help texts.
MODE_UNITS = {
    "sigma": "k in mean + k·σ of the training scores",
    "percentile": "percentile of the training scores",
    "absolute": "anomaly score",
}


def check_threshold(mode: str, value: float) -> None:
    """Raise ``ValueError`` with one sentence when ``mode``/``value`` cannot give a threshold."""
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, "
                         f"not {mode!r}")
    if not np.isfinite(value):
        raise ValueError(f"threshold value must be a finite number, not {value!r}")
    if mode == "percentile" and not 0 < value < 100:
        raise ValueError("a percentile threshold must lie strictly between 0 and 100")


def threshold_from_scores(scores: np.ndarray, mode: str, value: float) -> float:
    """Absolute threshold on anomaly scores for ``mode`` and ``value``.

    Parameters
    ----------
    scores : ndarray, shape (n,)
        Reference anomaly scores (higher is odder); non-finite ones are ignored.
    mode : {"sigma", "percentile", "absolute"}
    value : float
        k, the percentile, or the score itself.

    Returns
    -------
    float
        Scores strictly above it are anomalies.
    """
    check_threshold(mode, value)
    if mode == "absolute":
        return float(value)
    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no reference scores to derive a threshold from")
    if mode == "sigma":
        return float(s.mean() + value * s.std())
    return float(np.percentile(s, value))


def sigma_reach(n: int) -> float:
    """The most standard deviations above their mean that any of ``n`` scores can lie:
    (n − 1)/√n, when all but one are equal (0 for fewer than 2). A ``sigma`` threshold of k at
    or above it flags none of them, however odd one is (with 5 scores, k = 2 never flags)."""
    return (n - 1) / np.sqrt(n) if n >= 2 else 0.0


def flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean anomaly flags, shape (n,); unscored (NaN) cutouts are never flagged."""
    s = np.asarray(scores, dtype=float)
    return np.greater(s, threshold, where=np.isfinite(s), out=np.zeros(s.shape, bool))


@dataclass(frozen=True)
class SliderSpec:
    """Range, step and meaning of a threshold control for one mode."""

    min: float
    max: float
    step: float
    unit: str


def slider_spec(mode: str, train_scores: np.ndarray) -> SliderSpec:
    """The range of values worth offering for ``mode`` given the training scores, shape (n,)."""
    check_threshold(mode, 50.0 if mode == "percentile" else 0.0)
    if mode == "sigma":
        return SliderSpec(0.0, 10.0, 0.1, MODE_UNITS[mode])
    if mode == "percentile":
        return SliderSpec(50.0, 99.9, 0.1, MODE_UNITS[mode])
    s = np.asarray(train_scores, dtype=float)
    hi = float(np.nanmax(s)) if s.size else 1.0
    return SliderSpec(0.0, round(hi * 1.2, 4) or 1.0, round(hi / 200, 6) or 0.001,
                      MODE_UNITS[mode])
