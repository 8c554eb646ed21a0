"""Wording shared by printed reports and error messages."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``: a count with its noun, plural unless the count is 1.

    ``noun`` is the singular, pluralised by an ``s`` on its last word (``"torch thread"``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
