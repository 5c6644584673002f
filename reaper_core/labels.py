"""Labels: the words a person gives a cutout, defined once."""

from __future__ import annotations

from .errors import LabelError

#: The labels a person can give a cutout.
LABELS = ("anomaly", "artefact", "normal", "interesting")


def check_label(label: str | None) -> None:
    """Raise :class:`LabelError` with one sentence for a label that is not in :data:`LABELS`
    (``None`` means "no label" and is fine)."""
    if label is not None and label not in LABELS:
        raise LabelError(f"label must be one of {', '.join(LABELS)} (or none to remove it), "
                          f"not {label!r}")
