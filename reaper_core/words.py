"""How the project says counts in words, one definition for the pages, the command line and
the report.

The vocabulary: a **cutout** is one fixed-size patch; an **object** is what detection found
(one star, or one big galaxy or bleed trail cut into several cutouts, sharing a segment).
"""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number, thousands separated: ``count(1, "cutout")`` is
    "1 cutout", ``count(2500, "object")`` "2,500 objects"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
