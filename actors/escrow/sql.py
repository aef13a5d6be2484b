"""Small SQL helpers shared by the escrow jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Result


def rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE/DELETE (``Session.execute`` is typed as a plain Result)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
