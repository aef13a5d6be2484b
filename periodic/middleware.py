"""Placeholder owned by the scheduling work (issue 3): the periodiq replacement middleware.

It declares the ``periodic`` actor option so periodiq-style actors can be declared; the
scheduling work replaces this class with one that never silently skips a late tick.
"""

from __future__ import annotations

from dramatiq import Middleware


class PeriodicMiddleware(Middleware):
    """Declares the ``periodic`` actor option (periodiq's)."""

    @property
    def actor_options(self) -> set[str]:
        return {"periodic"}
