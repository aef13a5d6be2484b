"""Operator commands of the escrow jobs, as plain functions for ``jobctl`` to register
(no argument parsing here: each takes plain arguments and returns a JSON-able dict).

Commands that move money only enqueue the money actor (``resend_huntington_batch``, on
the payments queue, tracked in the ledger like any run); they never call the bank from
the operator's shell. Read-only listings and database-only fixes run directly.
"""

from __future__ import annotations

from typing import Any

from actors.escrow.huntington_ops import batches_with_unsent_items, unsent_items
from actors.escrow.reports import requeue_failed_reports
from tenancy.fanout import send_for_tenant
from tenancy.session import tenant_session


def huntington_unsent(tenant_id: int) -> dict[str, Any]:
    """``jobctl huntington-unsent TENANT``: the tenant's batches with items not sent
    (PENDING, FAILED not sent, FAILED rejected)."""
    with tenant_session(tenant_id) as session:
        return {"tenant_id": tenant_id, "batches": batches_with_unsent_items(session)}


def resend_huntington_batch(tenant_id: int, batch_id: int, *, operator: str, reason: str | None = None,
                            include_rejected: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """``jobctl huntington-resend TENANT BATCH --operator NAME [--reason TEXT]
    [--include-rejected] [--dry-run]``: re-send the batch's unsent items under their
    existing idempotency keys, through the ``resend_huntington_batch`` actor (audit record
    in the tenant database). Returns the items it will re-send and the run's message id
    (None for a dry run, or when there is nothing to re-send)."""
    if not operator.strip():
        raise ValueError("--operator is required: the re-send is audited")
    with tenant_session(tenant_id) as session:
        items = unsent_items(session, batch_id, include_rejected=include_rejected)
    out: dict[str, Any] = {"tenant_id": tenant_id, "batch_id": batch_id, "items": items, "message_id": None}
    if dry_run or not items:
        return out
    message = send_for_tenant("resend_huntington_batch", tenant_id, batch_id, operator, reason, include_rejected)
    out["message_id"] = message.message_id
    return out


def requeue_failed_report_requests(tenant_id: int, *, operator: str, request_ids: list[int] | None = None
                                   ) -> dict[str, Any]:
    """``jobctl reports-requeue TENANT --operator NAME [ID ...]``: put report requests that
    failed for good (status 4) back in the queue with fresh attempts (database only)."""
    if not operator.strip():
        raise ValueError("--operator is required")
    with tenant_session(tenant_id) as session:
        ids = requeue_failed_reports(session, operator=operator, request_ids=request_ids)
    return {"tenant_id": tenant_id, "requeued": ids}
