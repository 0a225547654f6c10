"""Semantic checks (placeholder; filled in below)."""

from __future__ import annotations

from ._check import SemanticCheck


def checks() -> list[SemanticCheck]:
    """The checks of this module."""
    return []
