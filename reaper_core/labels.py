"""Labels: the words a person gives a cutout, defined once."""

from __future__ import annotations

from .errors import LabelError

#: The labels a person can give a cutout.
LABELS = ("anomaly", "artefact", "normal", "interesting")

#: What each label says about the cutouts like it, for re-ranking: 1 "show me more like this",
#: 0 "show me fewer".
RELEVANCE = {"anomaly": 1.0, "interesting": 1.0, "normal": 0.0, "artefact": 0.0}


def sinks(label: str | None) -> bool:
    """Whether ``label`` says "show me fewer like this" (:data:`RELEVANCE` 0: normal,
    artefact); False for no label."""
    return label is not None and RELEVANCE.get(label) == 0


def lifts(label: str | None) -> bool:
    """Whether ``label`` says "show me more like this" (:data:`RELEVANCE` 1: anomaly,
    interesting); False for no label."""
    return label is not None and RELEVANCE.get(label) == 1


def check_label(label: str | None) -> None:
    """Raise :class:`LabelError` with one sentence for a label that is not in :data:`LABELS`
    (``None`` means "no label" and is fine)."""
    if label is not None and label not in LABELS:
        raise LabelError(f"label must be one of {', '.join(LABELS)} (or none to remove it), "
                          f"not {label!r}")
