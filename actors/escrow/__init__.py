"""Escrow-platform jobs (seed 002): disbursement approval, reminders, balance checks,
reports, status checks, Huntington bank batches."""

from actors.escrow import jobs

__all__ = ["jobs"]
