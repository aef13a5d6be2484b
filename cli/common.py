"""What every jobctl command shares: the platform, and reading the ledger current."""

from __future__ import annotations

from typing import Any

from cli.output import error
from jobcore.errors import PlatformError


def platform() -> Any:
    """The platform of this process (built on first use: importing it declares the actors)."""
    import jobplatform

    return jobplatform.platform


def current(*, quiet: bool = False) -> None:
    """Bring the ledger up to date before reading it: events drain within ~50 ms, and a
    command run right after a send should still see it."""
    try:
        platform().ledger.sync(5.0)
    except PlatformError as exc:
        if not quiet:
            error(f"the ledger may be behind: {exc}")
